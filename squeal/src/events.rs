//! Pure decoders for what mysql_common does not decode: MariaDB's GTID (162), GTID_LIST (163) and
//! ANNOTATE_ROWS (160) event bodies, `/* squeal:invalidate ... */` comments, and the DDL statements
//! squeal must react to (TRUNCATE, DROP, ALTER, RENAME, CREATE OR REPLACE).
//!
//! Every function takes bytes or text and returns a value or a [`DecodeError`]; none does I/O.
//! Inputs are event *bodies*: the bytes after the 19-byte common header and before the checksum.

use invalidation::Gtid;

/// MariaDB ANNOTATE_ROWS_EVENT: the statement text of the following row events.
pub const MARIADB_ANNOTATE_ROWS_EVENT: u8 = 160;
/// MariaDB BINLOG_CHECKPOINT_EVENT (ignored by squeal).
pub const MARIADB_BINLOG_CHECKPOINT_EVENT: u8 = 161;
/// MariaDB GTID_EVENT: starts an event group (replaces BEGIN).
pub const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID_LIST_EVENT: the GTID state at the start of a binlog file.
pub const MARIADB_GTID_LIST_EVENT: u8 = 163;
/// MariaDB START_ENCRYPTION_EVENT (binlog encryption; the server decrypts what it sends).
pub const MARIADB_START_ENCRYPTION_EVENT: u8 = 164;
/// MariaDB QUERY_COMPRESSED_EVENT (`log_bin_compress=ON`): a QUERY event whose statement text is
/// compressed.
pub const MARIADB_QUERY_COMPRESSED_EVENT: u8 = 165;
/// MariaDB WRITE_ROWS_COMPRESSED_EVENT_V1 (166), UPDATE_… (167), DELETE_… (168): v1 row events
/// whose row data is compressed; 169–171 are the same for v2 row events.
pub const MARIADB_ROWS_COMPRESSED_FIRST: u8 = 166;
/// The last MariaDB compressed rows event type (DELETE_ROWS_COMPRESSED_EVENT, v2).
pub const MARIADB_ROWS_COMPRESSED_LAST: u8 = 171;

/// A body too short or malformed for its event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {event} event body: {reason}")]
pub struct DecodeError {
    /// Event name.
    pub event: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// A decoded MariaDB GTID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtidEvent {
    /// The GTID (server id comes from the event header).
    pub gtid: Gtid,
    /// `flags2`: FL_STANDALONE (0x01) means no BEGIN/COMMIT: the group is a single statement.
    pub flags: u8,
}

impl MariaGtidEvent {
    /// The group is a single statement (DDL) without a terminating COMMIT/XID.
    pub fn is_standalone(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes a MariaDB GTID_EVENT body: `seq_no: u64, domain_id: u32, flags2: u8, ...`.
pub fn decode_mariadb_gtid(body: &[u8], server_id: u32) -> Result<MariaGtidEvent, DecodeError> {
    if body.len() < 13 {
        return Err(DecodeError {
            event: "MariaDB GTID",
            reason: format!("{} bytes, need at least 13", body.len()),
        });
    }
    Ok(MariaGtidEvent {
        gtid: Gtid::MariaDb {
            domain: le_u32(&body[8..12]),
            server: server_id,
            seq: le_u64(&body[0..8]),
        },
        flags: body[12],
    })
}

/// Decodes a MariaDB GTID_LIST_EVENT body: `count: u32 (low 28 bits), count × (domain u32, server u32, seq u64)`.
pub fn decode_mariadb_gtid_list(body: &[u8]) -> Result<Vec<Gtid>, DecodeError> {
    let bad = |reason: String| DecodeError {
        event: "MariaDB GTID_LIST",
        reason,
    };
    if body.len() < 4 {
        return Err(bad(format!("{} bytes, need at least 4", body.len())));
    }
    let count = (le_u32(&body[0..4]) & 0x0FFF_FFFF) as usize;
    let need = 4 + count * 16;
    if body.len() < need {
        return Err(bad(format!(
            "{count} entries need {need} bytes, have {}",
            body.len()
        )));
    }
    Ok((0..count)
        .map(|i| {
            let e = &body[4 + i * 16..4 + (i + 1) * 16];
            Gtid::MariaDb {
                domain: le_u32(&e[0..4]),
                server: le_u32(&e[4..8]),
                seq: le_u64(&e[8..16]),
            }
        })
        .collect())
}

/// Uncompresses what MariaDB's `binlog_buf_compress` wrote (`log_bin_compress=ON`): one header
/// byte (bit 7 set; bits 4–6 the algorithm, 0 = zlib, the only one defined; bits 0–2 the number
/// of bytes of the uncompressed length, 1–4), that length **big-endian** (as MariaDB's
/// `binlog_get_uncompress_len` reads it), then a zlib stream. The result must have exactly that
/// length; anything else is an error, never a guess.
pub fn mariadb_uncompress(buf: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let bad = |reason: String| DecodeError {
        event: "MariaDB compressed",
        reason,
    };
    let Some(&head) = buf.first() else {
        return Err(bad("no compression header".into()));
    };
    if head & 0x80 == 0 {
        return Err(bad(format!(
            "header byte {head:#04x} lacks the compressed bit"
        )));
    }
    let algorithm = (head >> 4) & 0x07;
    if algorithm != 0 {
        return Err(bad(format!(
            "compression algorithm {algorithm} (only 0, zlib, is defined)"
        )));
    }
    let lenlen = usize::from(head & 0x07);
    if !(1..=4).contains(&lenlen) || buf.len() < 1 + lenlen {
        return Err(bad(format!(
            "length field of {lenlen} bytes in {} bytes",
            buf.len()
        )));
    }
    let len = buf[1..1 + lenlen]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if len == 0 {
        return Err(bad("uncompressed length 0".into()));
    }
    let mut out = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(&buf[1 + lenlen..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("zlib: {e}")))?;
    if out.len() != len {
        return Err(bad(format!(
            "uncompressed {} bytes, the header says {len}",
            out.len()
        )));
    }
    Ok(out)
}

fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    Some(match first {
        0..=0xfa => (u64::from(first), 1),
        0xfc => (u64::from(u16::from_le_bytes([*b.get(1)?, *b.get(2)?])), 3),
        0xfd => (
            u64::from(u32::from_le_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, 0])),
            4,
        ),
        0xfe => (le_u64(b.get(1..9)?), 9),
        _ => return None,
    })
}

/// Uncompresses the body of a MariaDB compressed rows event (types 166–171) into the body of
/// the plain rows event it stands for; returns that event type and body.
///
/// As MariaDB's `row_log_event_uncompress`: the post-header (6-byte table id, 2 flag bytes, and
/// for v2 the variable header), the column count and the column bitmaps (two for UPDATE) are in
/// the clear; only the row data after them is compressed.
pub fn mariadb_uncompress_rows(event_type: u8, body: &[u8]) -> Result<(u8, Vec<u8>), DecodeError> {
    let bad = |reason: String| DecodeError {
        event: "MariaDB compressed rows",
        reason,
    };
    let (plain, v2) = match event_type {
        166..=168 => (event_type - 166 + 23, false), // WRITE/UPDATE/DELETE_ROWS_EVENT_V1
        169..=171 => (event_type - 169 + 30, true),  // WRITE/UPDATE/DELETE_ROWS_EVENT (v2)
        other => {
            return Err(bad(format!(
                "event type {other} is not a compressed rows event"
            )))
        }
    };
    let short = || bad(format!("{} bytes end inside the clear part", body.len()));
    let mut at = 8; // ROWS_HEADER_LEN_V1: table id (6) + flags (2)
    if v2 {
        let var = body.get(8..10).ok_or_else(short)?;
        let var_len = usize::from(u16::from_le_bytes([var[0], var[1]]));
        if var_len < 2 {
            return Err(bad(format!("variable header length {var_len}")));
        }
        at += var_len;
    }
    let (width, n) = lenenc(body.get(at..).ok_or_else(short)?).ok_or_else(short)?;
    at += n;
    let bitmap = usize::try_from(width.div_ceil(8)).map_err(|_| short())?;
    at += bitmap;
    if plain == 24 || plain == 31 {
        at += bitmap; // UPDATE: the after-image bitmap too
    }
    if at >= body.len() {
        return Err(short());
    }
    let rows = mariadb_uncompress(&body[at..])?;
    let mut out = Vec::with_capacity(at + rows.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(&rows);
    Ok((plain, out))
}

/// Decodes a MariaDB QUERY_COMPRESSED_EVENT body into the default schema and the statement text.
/// `post_header_len` is the format description's for type 165 (13, as for QUERY). As MariaDB's
/// `query_event_uncompress`: post-header, status variables and schema (NUL-terminated) are in
/// the clear; the statement text after them is compressed.
pub fn decode_mariadb_query_compressed(
    body: &[u8],
    post_header_len: usize,
) -> Result<(String, String), DecodeError> {
    let bad = |reason: String| DecodeError {
        event: "MariaDB QUERY_COMPRESSED",
        reason,
    };
    if post_header_len < 13 || body.len() < post_header_len {
        return Err(bad(format!(
            "{} bytes, post-header {post_header_len}",
            body.len()
        )));
    }
    let db_len = usize::from(body[8]);
    let status_len = usize::from(u16::from_le_bytes([body[11], body[12]]));
    let schema_at = post_header_len + status_len;
    let query_at = schema_at + db_len + 1;
    if query_at >= body.len() {
        return Err(bad(format!(
            "{} bytes end before the statement (status {status_len}, schema {db_len})",
            body.len()
        )));
    }
    let schema = String::from_utf8_lossy(&body[schema_at..schema_at + db_len]).into_owned();
    let sql = mariadb_uncompress(&body[query_at..])?;
    Ok((schema, String::from_utf8_lossy(&sql).into_owned()))
}

/// Decodes a MariaDB ANNOTATE_ROWS_EVENT body: the statement text, as is.
pub fn decode_mariadb_annotate(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Keys named by `/* squeal:invalidate k1,k2 */` comments in a statement, made key-safe.
///
/// Several comments may appear; keys are separated by commas, surrounding whitespace is ignored.
pub fn embedded_keys(statement: &str) -> Vec<String> {
    const MARKER: &str = "squeal:invalidate";
    let mut keys = Vec::new();
    let mut rest = statement;
    while let Some(start) = rest.find("/*") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("*/") else { break };
        let body = after[..end].trim();
        if let Some(list) = body.strip_prefix(MARKER) {
            if list.is_empty() || list.starts_with(char::is_whitespace) {
                for k in list.split(',') {
                    let k = k.trim();
                    if !k.is_empty() {
                        keys.push(crate::render::key_safe(k));
                    }
                }
            }
        }
        rest = &after[end + 2..];
    }
    keys
}

/// A table named in a statement; `db` is `None` when unqualified (use the statement's schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// Qualifying database, if written.
    pub db: Option<String>,
    /// Table name.
    pub name: String,
}

/// What a statement means to squeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` (non-transactional tables, or MySQL without XID).
    Commit,
    /// `ROLLBACK` (written only when non-transactional changes cannot be undone).
    Rollback,
    /// TRUNCATE, or the server's ``DELETE FROM `db`.`t` `` for a MEMORY table after a restart: the
    /// tables' rows are gone without row events.
    Truncate(Vec<TableName>),
    /// DROP TABLE / CREATE OR REPLACE TABLE: the tables' rows are gone.
    Drop(Vec<TableName>),
    /// DROP DATABASE/SCHEMA.
    DropDatabase(String),
    /// ALTER TABLE, CREATE TABLE: the layout of these tables may have changed (their rows did not).
    SchemaChange(Vec<TableName>),
    /// Rows of these tables changed, vanished or were swapped in without row events: partition
    /// maintenance (`TRUNCATE`/`DROP`/`EXCHANGE`/`CONVERT PARTITION`), `DISCARD`/`IMPORT
    /// TABLESPACE`, and renames (`RENAME TABLE a TO b`, `ALTER TABLE a RENAME TO b`: both names,
    /// since a swap puts other rows under the old name). Their layout may have changed too.
    RowsReplaced(Vec<TableName>),
    /// A data change logged as a statement (binlog_format STATEMENT/MIXED): squeal cannot map it.
    /// Besides INSERT/UPDATE/DELETE/REPLACE/LOAD this is any statement that only appears in a
    /// binlog because it wrote something: `SELECT f()` (a function that modifies data), `WITH …`,
    /// `CALL`, `DO`, MariaDB's `ANALYZE <dml>` and `BEGIN NOT ATOMIC` blocks.
    Dml,
    /// `XA START xid`: MySQL's first event of an XA transaction (MariaDB puts it in the GTID event).
    XaStart,
    /// `XA COMMIT xid` of a prepared XA transaction: its own event group, after XA PREPARE.
    /// (`ONE PHASE` commits are written as ordinary transactions, or as a one-phase XA_PREPARE.)
    XaCommit(Xid),
    /// `XA ROLLBACK xid` of a prepared XA transaction.
    XaRollback(Xid),
    /// Anything else (SAVEPOINT, GRANT, ...).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    /// A `'string literal'` (its content never reads as keywords).
    Literal,
    Punct(char),
}

/// Tokens with the byte offset each starts at.
fn tokenize(sql: &str) -> Vec<(usize, Token)> {
    let mut out = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Comments vanish, except MySQL's executable `/*! ... */`, whose content counts.
            if b.get(i + 2) == Some(&b'!') {
                i += 3;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                match sql[i + 2..].find("*/") {
                    Some(e) => i += 2 + e + 2,
                    None => break,
                }
            }
        } else if c == b'*' && b.get(i + 1) == Some(&b'/') {
            i += 2;
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'`' || c == b'"' {
            let mut s = Vec::new();
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        s.push(c);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push((
                start,
                Token::Quoted(String::from_utf8_lossy(&s).into_owned()),
            ));
        } else if c == b'\'' {
            // '...' with '' and backslash escapes.
            i += 1;
            while i < b.len() {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push((start, Token::Literal));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push((start, Token::Word(sql[start..i].to_owned())));
        } else {
            out.push((start, Token::Punct(c as char)));
            i += 1;
        }
    }
    out
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
}

impl Parser {
    fn token(&self, at: usize) -> Option<&Token> {
        self.tokens.get(at).map(|(_, t)| t)
    }
    /// The token at `at` is the keyword `kw`.
    fn is_keyword(&self, at: usize, kw: &str) -> bool {
        matches!(self.token(at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn keyword(&mut self, kw: &str) -> bool {
        match self.token(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }
    fn punct(&mut self, p: char) -> bool {
        if self.token(self.at) == Some(&Token::Punct(p)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Option<String> {
        match self.token(self.at)? {
            Token::Word(w) | Token::Quoted(w) => {
                let w = w.clone();
                self.at += 1;
                Some(w)
            }
            Token::Punct(_) | Token::Literal => None,
        }
    }
    fn table_name(&mut self) -> Option<TableName> {
        let first = self.ident()?;
        if self.punct('.') {
            let name = self.ident()?;
            Some(TableName {
                db: Some(first),
                name,
            })
        } else {
            Some(TableName {
                db: None,
                name: first,
            })
        }
    }
    fn table_list(&mut self) -> Vec<TableName> {
        let mut tables = Vec::new();
        while let Some(t) = self.table_name() {
            tables.push(t);
            if !self.punct(',') {
                break;
            }
        }
        tables
    }
}

/// An XA transaction id: format id, global transaction id and branch qualifier.
///
/// The binlog writes it as `X'<gtrid hex>',X'<bqual hex>',<format id>` in XA statements and as
/// bytes in XA_PREPARE_LOG events; [`Xid`] is the one form both compare in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xid {
    /// `formatID`.
    pub format_id: i64,
    /// `gtrid` bytes.
    pub gtrid: Vec<u8>,
    /// `bqual` bytes.
    pub bqual: Vec<u8>,
}

impl std::fmt::Display for Xid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format_id
        )
    }
}

/// Parses an xid as XA statements write it: `gtrid[,bqual[,formatID]]`, each string either
/// `X'hex'` (how the server logs it) or `'text'`. Returns the xid and the unparsed rest.
pub fn parse_xid(text: &str) -> Option<(Xid, &str)> {
    fn string(s: &str) -> Option<(Vec<u8>, &str)> {
        let s = s.trim_start();
        let (hex, body) = match s.as_bytes().first()? {
            b'X' | b'x' if s.as_bytes().get(1) == Some(&b'\'') => (true, &s[2..]),
            b'\'' => (false, &s[1..]),
            _ => return None,
        };
        let end = body.find('\'')?;
        let raw = &body[..end];
        let bytes = if hex {
            if raw.len() % 2 != 0 {
                return None;
            }
            raw.as_bytes()
                .chunks(2)
                .map(|pair| {
                    let hex = std::str::from_utf8(pair).ok()?;
                    u8::from_str_radix(hex, 16).ok()
                })
                .collect::<Option<Vec<u8>>>()?
        } else {
            raw.as_bytes().to_vec()
        };
        Some((bytes, &body[end + 1..]))
    }
    let (gtrid, mut rest) = string(text)?;
    let mut xid = Xid {
        format_id: 1,
        gtrid,
        bqual: Vec::new(),
    };
    if let Some(r) = rest.trim_start().strip_prefix(',') {
        let (bqual, r) = string(r)?;
        xid.bqual = bqual;
        rest = r;
        if let Some(r) = rest.trim_start().strip_prefix(',') {
            let r = r.trim_start();
            let digits = r
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(r.len());
            xid.format_id = r[..digits].parse().ok()?;
            rest = &r[digits..];
        }
    }
    Some((xid, rest))
}

/// Classifies `XA ...` statements; `None` for any other statement.
fn classify_xa(sql: &str) -> Option<Statement> {
    let s = sql.trim_start();
    let word = |s: &str, w: &str| -> Option<usize> {
        let b = s.as_bytes();
        (b.len() > w.len()
            && b[..w.len()].eq_ignore_ascii_case(w.as_bytes())
            && b[w.len()].is_ascii_whitespace())
        .then_some(w.len())
    };
    let rest = &s[word(s, "XA")?..];
    let rest = rest.trim_start();
    if word(rest, "START")
        .or_else(|| word(rest, "BEGIN"))
        .is_some()
    {
        return Some(Statement::XaStart);
    }
    if let Some(n) = word(rest, "COMMIT") {
        let (xid, tail) = parse_xid(&rest[n..])?;
        if tail.to_ascii_uppercase().contains("ONE") {
            return Some(Statement::Commit); // ONE PHASE: the rows precede it in this group
        }
        return Some(Statement::XaCommit(xid));
    }
    if let Some(n) = word(rest, "ROLLBACK") {
        return Some(Statement::XaRollback(parse_xid(&rest[n..])?.0));
    }
    Some(Statement::Other) // XA END, XA PREPARE (logged as an event), XA RECOVER
}

/// Decodes an XA_PREPARE_LOG event body: `one_phase: u8, formatID: i32, gtrid_length: u32,
/// bqual_length: u32, gtrid ++ bqual` (MySQL and MariaDB alike). Returns the xid and `one_phase`.
pub fn decode_xa_prepare(body: &[u8]) -> Result<(Xid, bool), DecodeError> {
    let bad = |reason: String| DecodeError {
        event: "XA_PREPARE_LOG",
        reason,
    };
    if body.len() < 13 {
        return Err(bad(format!("{} bytes, need at least 13", body.len())));
    }
    let gtrid_len = le_u32(&body[5..9]) as usize;
    let bqual_len = le_u32(&body[9..13]) as usize;
    if gtrid_len > 64 || bqual_len > 64 || body.len() < 13 + gtrid_len + bqual_len {
        return Err(bad(format!(
            "gtrid {gtrid_len} + bqual {bqual_len} bytes do not fit in {}",
            body.len()
        )));
    }
    Ok((
        Xid {
            format_id: i64::from(le_u32(&body[1..5]) as i32),
            gtrid: body[13..13 + gtrid_len].to_vec(),
            bqual: body[13 + gtrid_len..13 + gtrid_len + bqual_len].to_vec(),
        },
        body[0] != 0,
    ))
}

/// The statement a server writes when it empties a MEMORY table after a restart, for `table`:
/// both names backquoted (backquotes in them doubled), the database always written.
fn server_emptying_statement(table: &TableName) -> String {
    let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
    match &table.db {
        Some(db) => format!("DELETE FROM {}.{}", quote(db), quote(&table.name)),
        // Never written by the server: a string no statement equals.
        None => String::new(),
    }
}

/// Classifies a QUERY event's statement text.
pub fn classify_statement(sql: &str) -> Statement {
    // The server writes ``DELETE FROM `db`.`t` ``, even with binlog_format=ROW, when it first opens
    // a MEMORY table after a restart (MySQL 8.0.0-8.0.21, MariaDB before MDEV-25607; MariaDB 10.11
    // and MySQL 8.0.22+ write `TRUNCATE TABLE`). Treated as an unmappable write, it would stop
    // squeal for good at every restart. It empties the table as TRUNCATE does, so it maps to the
    // same flush. Only that exact text: a client's statement-logged DELETE in any other spelling
    // stays a write squeal cannot map, as every other statement-logged write does (it may name a
    // view over a ruled table, or fire triggers that write to one).
    let mut p = Parser {
        tokens: tokenize(sql),
        at: 0,
    };
    if p.keyword("DELETE") && p.keyword("FROM") {
        if let Some(table) = p.table_name() {
            if p.at == p.tokens.len() && sql == server_emptying_statement(&table) {
                return Statement::Truncate(vec![table]);
            }
        }
    }
    classify_written_statement(sql)
}

/// [`classify_statement`] for every statement but the server's MEMORY-table `DELETE`.
fn classify_written_statement(sql: &str) -> Statement {
    if let Some(xa) = classify_xa(sql) {
        return xa;
    }
    let mut p = Parser {
        tokens: tokenize(sql),
        at: 0,
    };
    // `(SELECT f())`: a parenthesised statement.
    while p.punct('(') {}
    let first = p.at;
    if p.keyword("SET") && p.keyword("STATEMENT") {
        // MariaDB's `SET STATEMENT var=value[, ...] FOR <statement>`: the statement decides.
        while p.at < p.tokens.len() {
            if p.is_keyword(p.at, "FOR") {
                if let Some(&(offset, _)) = p.tokens.get(p.at + 1) {
                    return classify_written_statement(&sql[offset..]);
                }
                break;
            }
            p.at += 1;
        }
        return Statement::Other;
    }
    p.at = first;
    if p.keyword("BEGIN") {
        // MariaDB's compound statement `BEGIN NOT ATOMIC ... END` runs statements, unlike
        // `BEGIN [WORK]`.
        return if p.is_keyword(p.at, "NOT") {
            Statement::Dml
        } else {
            Statement::Begin
        };
    }
    if p.keyword("START") && p.keyword("TRANSACTION") {
        return Statement::Begin;
    }
    p.at = first;
    if p.keyword("COMMIT") {
        return Statement::Commit;
    }
    if p.keyword("ROLLBACK") {
        return if p.keyword("TO") {
            Statement::Other
        } else {
            Statement::Rollback
        };
    }
    if p.keyword("TRUNCATE") {
        p.keyword("TABLE");
        return Statement::Truncate(p.table_list());
    }
    if p.keyword("DROP") {
        p.keyword("TEMPORARY");
        if p.keyword("DATABASE") || p.keyword("SCHEMA") {
            if p.keyword("IF") {
                p.keyword("EXISTS");
            }
            return p.ident().map_or(Statement::Other, Statement::DropDatabase);
        }
        if p.keyword("TABLE") || p.keyword("TABLES") {
            if p.keyword("IF") {
                p.keyword("EXISTS");
            }
            return Statement::Drop(p.table_list());
        }
        return Statement::Other;
    }
    if p.keyword("CREATE") {
        let replace = p.keyword("OR") && p.keyword("REPLACE");
        p.keyword("TEMPORARY");
        if p.keyword("TABLE") {
            if p.keyword("IF") {
                p.keyword("NOT");
                p.keyword("EXISTS");
            }
            let tables: Vec<_> = p.table_name().into_iter().collect();
            return if replace {
                Statement::Drop(tables)
            } else {
                Statement::SchemaChange(tables)
            };
        }
        return Statement::Other;
    }
    if p.keyword("ALTER") {
        p.keyword("ONLINE");
        p.keyword("IGNORE");
        if p.keyword("TABLE") {
            if p.keyword("IF") {
                p.keyword("EXISTS");
            }
            return classify_alter_table(&mut p);
        }
        return Statement::Other;
    }
    // Statements that reach a ROW-format binlog only as statement-logged writes.
    for kw in [
        "INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD", "SELECT", "WITH", "CALL", "DO",
    ] {
        if p.keyword(kw) {
            return Statement::Dml;
        }
    }
    if p.keyword("ANALYZE") {
        // MariaDB's `ANALYZE UPDATE ...` runs the statement; `ANALYZE TABLE` only reads.
        for kw in ["INSERT", "UPDATE", "DELETE", "REPLACE", "SELECT"] {
            if p.is_keyword(p.at, kw) {
                return Statement::Dml;
            }
        }
        return Statement::Other;
    }
    if p.keyword("RENAME") && (p.keyword("TABLE") || p.keyword("TABLES")) {
        if p.keyword("IF") {
            p.keyword("EXISTS");
        }
        let mut tables = Vec::new();
        while let Some(from) = p.table_name() {
            tables.push(from);
            // MariaDB: `RENAME TABLE t WAIT n TO u` / `NOWAIT`.
            if p.keyword("WAIT") {
                p.ident();
            }
            p.keyword("NOWAIT");
            if !p.keyword("TO") {
                break;
            }
            if let Some(to) = p.table_name() {
                tables.push(to);
            }
            if !p.punct(',') {
                break;
            }
        }
        // A table renamed away is gone under its old name, and a table renamed in brings other
        // rows under its new one (a swap): both names' keys may all be stale.
        return Statement::RowsReplaced(tables);
    }
    Statement::Other
}

/// `ALTER TABLE <name> ...` after the name's start: the operations that change rows without
/// row events make it [`Statement::RowsReplaced`] (with any second table they name); anything
/// else is a [`Statement::SchemaChange`] of the table.
fn classify_alter_table(p: &mut Parser) -> Statement {
    let Some(table) = p.table_name() else {
        return Statement::SchemaChange(Vec::new());
    };
    let mut tables = vec![table];
    let mut replaced = false;
    // A table name following the keywords `first second` at or after `from`.
    let table_after = |p: &mut Parser, from: usize, first: &str, second: &str| {
        let mut i = from;
        while i + 1 < p.tokens.len() {
            if p.is_keyword(i, first) && p.is_keyword(i + 1, second) {
                p.at = i + 2;
                return p.table_name();
            }
            i += 1;
        }
        None
    };
    let mut i = p.at;
    while i < p.tokens.len() {
        let next_is = |kw: &str| p.is_keyword(i + 1, kw);
        if (p.is_keyword(i, "TRUNCATE") || p.is_keyword(i, "DROP")) && next_is("PARTITION") {
            // The partitions' rows are deleted.
            replaced = true;
        } else if p.is_keyword(i, "EXCHANGE") && next_is("PARTITION") {
            // `EXCHANGE PARTITION p WITH TABLE t2`: both tables' rows change.
            replaced = true;
            tables.extend(table_after(p, i + 2, "WITH", "TABLE"));
        } else if p.is_keyword(i, "CONVERT") && next_is("PARTITION") {
            // MariaDB: `CONVERT PARTITION p TO TABLE t2` moves the rows out into t2.
            replaced = true;
            tables.extend(table_after(p, i + 2, "TO", "TABLE"));
        } else if p.is_keyword(i, "CONVERT") && next_is("TABLE") {
            // MariaDB: `CONVERT TABLE t2 TO PARTITION p ...` moves t2's rows in.
            replaced = true;
            p.at = i + 2;
            tables.extend(p.table_name());
        } else if (p.is_keyword(i, "DISCARD") || p.is_keyword(i, "IMPORT"))
            && (next_is("TABLESPACE") || next_is("PARTITION"))
        {
            // The table's (or partitions') data files are removed or replaced wholesale.
            replaced = true;
        } else if p.is_keyword(i, "RENAME")
            && !(next_is("COLUMN") || next_is("INDEX") || next_is("KEY"))
        {
            // `RENAME [TO|AS] new_name`.
            p.at = i + 1;
            if !p.keyword("TO") {
                p.keyword("AS");
            }
            if let Some(to) = p.table_name() {
                replaced = true;
                tables.push(to);
            }
        }
        i += 1;
    }
    if replaced {
        Statement::RowsReplaced(tables)
    } else {
        Statement::SchemaChange(tables)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn xa_statements_and_prepare_events_name_the_same_xid() {
        let x1 = Xid {
            format_id: 1,
            gtrid: b"x1".to_vec(),
            bqual: Vec::new(),
        };
        // As MariaDB 10.11 and MySQL 8 log them.
        assert_eq!(
            classify_statement("XA COMMIT X'7831',X'',1"),
            Statement::XaCommit(x1.clone())
        );
        assert_eq!(
            classify_statement("xa rollback X'7831',X'',1"),
            Statement::XaRollback(x1.clone())
        );
        assert_eq!(
            classify_statement("XA START X'7831',X'',1"),
            Statement::XaStart
        );
        assert_eq!(classify_statement("XA END X'7831',X'',1"), Statement::Other);
        assert_eq!(
            classify_statement("XA COMMIT 'x1' ONE PHASE"),
            Statement::Commit
        );
        assert_eq!(
            parse_xid("'g','b',7").unwrap().0,
            Xid {
                format_id: 7,
                gtrid: b"g".to_vec(),
                bqual: b"b".to_vec()
            }
        );
        assert_eq!(x1.to_string(), "X'7831',X'',1");
        // XA_PREPARE_LOG body of `XA PREPARE 'y1'` from mariadb-binlog --hexdump.
        let body = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'y', b'1'];
        let (xid, one_phase) = decode_xa_prepare(&body).unwrap();
        assert_eq!(xid.gtrid, b"y1");
        assert_eq!(xid.format_id, 1);
        assert!(!one_phase);
        assert!(decode_xa_prepare(&body[..14]).is_err());
        assert!(decode_xa_prepare(&[1, 0, 0]).is_err());
        // Malformed or non-ASCII text never panics (the property test in tests/ found a slice
        // across a UTF-8 boundary here).
        for odd in [
            "Xé",
            "XA STé",
            "XA COMMIT X'aéa'",
            "XAé",
            "XA COMMIT X'7é'",
            "XA ROLLBACK 'é",
            "XA COMMIT X'7831',X'',",
            "XA",
        ] {
            let _ = classify_statement(odd);
        }
        // Not XA: unchanged.
        assert_eq!(classify_statement("XACT_ABORT"), Statement::Other);
        assert_eq!(classify_statement("BEGIN"), Statement::Begin);
    }

    fn t(db: Option<&str>, name: &str) -> TableName {
        TableName {
            db: db.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn mariadb_gtid_event_bytes() {
        // seq 0x2a, domain 3, flags2 = FL_STANDALONE|FL_TRANSACTIONAL, then commit-id-less tail.
        let body = [0x2a, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x05];
        let ev = decode_mariadb_gtid(&body, 9).unwrap();
        assert_eq!(ev.gtid.to_string(), "3-9-42");
        assert!(ev.is_standalone());
        let group = [
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 7, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(!decode_mariadb_gtid(&group, 1).unwrap().is_standalone());
        assert!(decode_mariadb_gtid(&body[..12], 1).is_err());
    }

    #[test]
    fn mariadb_gtid_list_bytes() {
        let mut body = vec![2, 0, 0, 0x10]; // count 2 with a flag in the top bits
        for (d, s, q) in [(0u32, 1u32, 100u64), (5, 2, 7)] {
            body.extend(d.to_le_bytes());
            body.extend(s.to_le_bytes());
            body.extend(q.to_le_bytes());
        }
        let list = decode_mariadb_gtid_list(&body).unwrap();
        let text: Vec<_> = list.iter().map(|g| g.to_string()).collect();
        assert_eq!(text, ["0-1-100", "5-2-7"]);
        assert!(decode_mariadb_gtid_list(&body[..20]).is_err());
        assert_eq!(decode_mariadb_gtid_list(&[0, 0, 0, 0]).unwrap(), vec![]);
    }

    #[test]
    fn annotate_text_and_embedded_keys() {
        let sql = decode_mariadb_annotate(
            b"UPDATE t SET a=1 /* squeal:invalidate user:42, feed:7 */ WHERE id=1 /* other */ /*squeal:invalidate x y*/",
        );
        assert_eq!(embedded_keys(&sql), ["user:42", "feed:7", "x%20y"]);
        assert!(embedded_keys("/* squeal:invalidatex a */ /* squeal:invalidate").is_empty());
        assert!(embedded_keys("SELECT 1").is_empty());
    }

    /// `data` as MariaDB's `binlog_buf_compress` writes it: `0x80 | lenlen`, the length
    /// big-endian in as few bytes as hold it, then zlib.
    pub(crate) fn mariadb_compress(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let be = (data.len() as u32).to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count().min(3);
        let mut out = vec![0x80 | (4 - skip) as u8];
        out.extend_from_slice(&be[skip..]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        out.extend(z.finish().unwrap());
        out
    }

    #[test]
    fn mariadb_compressed_rows_keep_the_clear_part() {
        let rows: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let packed = mariadb_compress(&rows);
        assert_eq!(
            packed[..4],
            [0x83, 0x01, 0x11, 0x70],
            "70000, big-endian in 3 bytes"
        );
        assert_eq!(mariadb_uncompress(&packed).unwrap(), rows);
        // UPDATE v1 (167), 9 columns: two 2-byte bitmaps in the clear.
        let mut body = vec![7, 0, 0, 0, 0, 0, 1, 0, 9, 0xff, 0x01, 0xff, 0x01];
        body.extend(&packed);
        let (ty, plain) = mariadb_uncompress_rows(167, &body).unwrap();
        assert_eq!(ty, 24);
        assert_eq!(plain[..13], body[..13]);
        assert_eq!(plain[13..], rows[..]);
        // DELETE v2 (171): a 4-byte variable header (its own length and 2 more bytes), 1 bitmap.
        let mut body = vec![7, 0, 0, 0, 0, 0, 1, 0, 4, 0, 9, 9, 3, 0b111];
        body.extend(mariadb_compress(&rows[..300]));
        let (ty, plain) = mariadb_uncompress_rows(171, &body).unwrap();
        assert_eq!(ty, 32);
        assert_eq!(plain[14..], rows[..300]);
        // Malformed: not a compressed type, clear part cut short, no compressed bit, no data,
        // a length with no stream behind it.
        assert!(mariadb_uncompress_rows(23, &body).is_err());
        assert!(mariadb_uncompress_rows(171, &body[..12]).is_err());
        assert!(mariadb_uncompress(&[0x01, 5, 0]).is_err());
        assert!(mariadb_uncompress(&[]).is_err());
        assert!(mariadb_uncompress(&[0x85, 1]).is_err());
        assert!(mariadb_uncompress(&[0x81, 9]).is_err());
    }

    #[test]
    fn statements_that_change_rows_without_row_events() {
        use Statement::*;
        let replaced = |names: &[(Option<&str>, &str)]| {
            RowsReplaced(names.iter().map(|(d, n)| t(*d, n)).collect())
        };
        for (sql, want) in [
            (
                "ALTER TABLE p TRUNCATE PARTITION p0",
                replaced(&[(None, "p")]),
            ),
            (
                "ALTER TABLE `at`.`p` DROP PARTITION IF EXISTS p1, p2",
                replaced(&[(Some("at"), "p")]),
            ),
            (
                "alter table at.p exchange partition p0 with table at.q without validation",
                replaced(&[(Some("at"), "p"), (Some("at"), "q")]),
            ),
            (
                "ALTER TABLE p CONVERT PARTITION p0 TO TABLE p0_archive",
                replaced(&[(None, "p"), (None, "p0_archive")]),
            ),
            (
                "ALTER TABLE p CONVERT TABLE staged TO PARTITION p9 VALUES LESS THAN (900)",
                replaced(&[(None, "p"), (None, "staged")]),
            ),
            (
                "ALTER TABLE t IMPORT TABLESPACE",
                replaced(&[(None, "t")]),
            ),
            (
                "ALTER TABLE t DISCARD PARTITION p0 TABLESPACE",
                replaced(&[(None, "t")]),
            ),
            (
                "ALTER TABLE users RENAME TO users_old",
                replaced(&[(None, "users"), (None, "users_old")]),
            ),
            (
                "ALTER TABLE users ADD COLUMN z INT, RENAME AS shop.people",
                replaced(&[(None, "users"), (Some("shop"), "people")]),
            ),
            (
                "RENAME TABLE at.users TO at.users_old, at.users_new TO at.users",
                replaced(&[
                    (Some("at"), "users"),
                    (Some("at"), "users_old"),
                    (Some("at"), "users_new"),
                    (Some("at"), "users"),
                ]),
            ),
            (
                "RENAME TABLE IF EXISTS a WAIT 5 TO b",
                replaced(&[(None, "a"), (None, "b")]),
            ),
            (
                "SET STATEMENT max_statement_time=60 FOR TRUNCATE TABLE users",
                Truncate(vec![t(None, "users")]),
            ),
            // Layout only: rows and their keys are unchanged.
            (
                "ALTER TABLE users RENAME COLUMN a TO b, RENAME INDEX i TO j",
                SchemaChange(vec![t(None, "users")]),
            ),
            (
                "ALTER TABLE p REORGANIZE PARTITION p0 INTO (PARTITION a VALUES LESS THAN (5), PARTITION b VALUES LESS THAN (100))",
                SchemaChange(vec![t(None, "p")]),
            ),
            (
                "ALTER TABLE p COALESCE PARTITION 2",
                SchemaChange(vec![t(None, "p")]),
            ),
            (
                "ALTER TABLE p REBUILD PARTITION p0",
                SchemaChange(vec![t(None, "p")]),
            ),
            (
                "ALTER TABLE p REMOVE PARTITIONING",
                SchemaChange(vec![t(None, "p")]),
            ),
            (
                "ALTER TABLE p COMMENT 'drop partition p0, rename to x'",
                SchemaChange(vec![t(None, "p")]),
            ),
        ] {
            assert_eq!(classify_statement(sql), want, "{sql}");
        }
    }

    #[test]
    fn statement_logged_writes_are_dml_and_harmless_statements_are_not() {
        for sql in [
            "SELECT `at`.`f`()",
            "select f() from dual",
            "(SELECT f())",
            "WITH c AS (SELECT 1) UPDATE t JOIN c SET t.a = 1",
            "WITH RECURSIVE c AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM c)",
            "CALL p(1)",
            "DO f()",
            "/* app */ INSERT INTO t VALUES (1)",
            "REPLACE INTO t VALUES (1)",
            "LOAD DATA INFILE '/tmp/x' INTO TABLE t",
            "ANALYZE UPDATE t SET a = 1",
            "BEGIN NOT ATOMIC UPDATE t SET a = 1; END",
            "SET STATEMENT sql_mode='' FOR UPDATE t SET a = 1",
        ] {
            assert_eq!(classify_statement(sql), Statement::Dml, "{sql}");
        }
        // What a ROW-format binlog legitimately carries as statements.
        for sql in [
            "BEGIN",
            "BEGIN WORK",
            "START TRANSACTION",
            "SAVEPOINT `a`",
            "ROLLBACK TO `a`",
            "XA END X'7831',X'',1",
            "GRANT SELECT ON shop.* TO 'u'@'%'",
            "CREATE USER 'u'@'%' IDENTIFIED BY 'x'",
            "DROP USER 'u'@'%'",
            "SET PASSWORD FOR 'u'@'%' = PASSWORD('x')",
            "CREATE DEFINER=`root`@`localhost` FUNCTION `f`() RETURNS int(11) BEGIN UPDATE t SET a=1; RETURN 1; END",
            "CREATE DEFINER=`root`@`localhost` PROCEDURE `p`() SELECT 1",
            "CREATE OR REPLACE VIEW v AS SELECT * FROM t",
            "CREATE INDEX i ON t (a)",
            "DROP INDEX i ON t",
            "ANALYZE TABLE t",
            "OPTIMIZE TABLE t",
            "FLUSH PRIVILEGES",
            "CREATE DATABASE d",
        ] {
            assert!(
                !matches!(classify_statement(sql), Statement::Dml),
                "{sql}: {:?}",
                classify_statement(sql)
            );
        }
    }

    #[test]
    fn the_servers_memory_table_delete_is_a_truncate_and_any_other_delete_a_write() {
        // What MySQL 8.0.0-8.0.21 and MariaDB before MDEV-25607 write, even in a ROW binlog, the
        // first time they open a MEMORY table after a restart.
        assert_eq!(
            classify_statement("DELETE FROM `shop`.`sessions`"),
            Statement::Truncate(vec![t(Some("shop"), "sessions")])
        );
        assert_eq!(
            classify_statement("DELETE FROM `we``ird`.`t``1`"),
            Statement::Truncate(vec![t(Some("we`ird"), "t`1")])
        );
        // A client's own spelling of a bare delete: a statement-logged write squeal cannot map
        // (the name may be a view over a ruled table, or the table may have triggers).
        for sql in [
            "delete from sessions",
            "DELETE FROM sessions",
            "DELETE FROM shop.sessions",
            "DELETE FROM `shop`.`sessions`;",
            "DELETE FROM `sessions`",
            "/* app */ DELETE FROM `shop`.`sessions`",
            "SET STATEMENT max_statement_time=1 FOR DELETE FROM `shop`.`sessions`",
        ] {
            assert_eq!(classify_statement(sql), Statement::Dml, "{sql}");
        }
        // Rows squeal cannot name: still a write it cannot map.
        for sql in [
            "DELETE FROM t WHERE id = 1",
            "DELETE FROM t LIMIT 10",
            "DELETE FROM t ORDER BY id LIMIT 1",
            "DELETE FROM t1 USING t1 JOIN t2 ON t1.id = t2.id",
            "DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id",
            "DELETE t1, t2 FROM t1, t2",
            "DELETE FROM t1, t2 USING t1, t2",
            "DELETE FROM t PARTITION (p0)",
            "DELETE FROM t AS a",
            "DELETE FROM t RETURNING id",
            "DELETE IGNORE FROM t",
            "DELETE FROM",
            "DELETE FROM t; DELETE FROM u WHERE id = 1",
        ] {
            assert_eq!(classify_statement(sql), Statement::Dml, "{sql}");
        }
    }

    #[test]
    fn statements_are_classified() {
        assert_eq!(classify_statement("BEGIN"), Statement::Begin);
        assert_eq!(classify_statement("COMMIT"), Statement::Commit);
        assert_eq!(classify_statement("ROLLBACK"), Statement::Rollback);
        assert_eq!(
            classify_statement("ROLLBACK TO SAVEPOINT a"),
            Statement::Other
        );
        assert_eq!(
            classify_statement("TRUNCATE TABLE `shop`.`users`"),
            Statement::Truncate(vec![t(Some("shop"), "users")])
        );
        assert_eq!(
            classify_statement("truncate posts"),
            Statement::Truncate(vec![t(None, "posts")])
        );
        assert_eq!(
            classify_statement("DROP TABLE IF EXISTS `a`,b.`c``d` /* generated by server */"),
            Statement::Drop(vec![t(None, "a"), t(Some("b"), "c`d")])
        );
        assert_eq!(
            classify_statement("CREATE OR REPLACE TABLE x.y (id int)"),
            Statement::Drop(vec![t(Some("x"), "y")])
        );
        assert_eq!(
            classify_statement("/* c */ ALTER TABLE users ADD COLUMN z int"),
            Statement::SchemaChange(vec![t(None, "users")])
        );
        assert_eq!(
            classify_statement("RENAME TABLE a TO b, d.c TO d.e"),
            Statement::RowsReplaced(vec![
                t(None, "a"),
                t(None, "b"),
                t(Some("d"), "c"),
                t(Some("d"), "e")
            ])
        );
        assert_eq!(
            classify_statement("DROP DATABASE IF EXISTS shop"),
            Statement::DropDatabase("shop".into())
        );
        assert_eq!(
            classify_statement("GRANT ALL ON *.* TO x"),
            Statement::Other
        );
        assert_eq!(
            classify_statement("insert into t values (1)"),
            Statement::Dml
        );
        assert_eq!(
            classify_statement("/* x */ UPDATE t SET a=1"),
            Statement::Dml
        );
    }
}
