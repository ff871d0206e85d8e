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
    /// TRUNCATE: the tables' rows are gone without row events.
    Truncate(Vec<TableName>),
    /// DROP TABLE / CREATE OR REPLACE TABLE: the tables' rows are gone.
    Drop(Vec<TableName>),
    /// DROP DATABASE/SCHEMA.
    DropDatabase(String),
    /// ALTER TABLE, RENAME TABLE, CREATE TABLE: the layout of these tables may have changed.
    SchemaChange(Vec<TableName>),
    /// A data change logged as a statement (binlog_format STATEMENT/MIXED): squeal cannot map it.
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
    Punct(char),
}

fn tokenize(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
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
            out.push(Token::Quoted(String::from_utf8_lossy(&s).into_owned()));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Token::Word(sql[start..i].to_owned()));
        } else {
            out.push(Token::Punct(c as char));
            i += 1;
        }
    }
    out
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn keyword(&mut self, kw: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }
    fn punct(&mut self, p: char) -> bool {
        if self.tokens.get(self.at) == Some(&Token::Punct(p)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Option<String> {
        match self.tokens.get(self.at)? {
            Token::Word(w) | Token::Quoted(w) => {
                let w = w.clone();
                self.at += 1;
                Some(w)
            }
            Token::Punct(_) => None,
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

/// Classifies a QUERY event's statement text.
pub fn classify_statement(sql: &str) -> Statement {
    if let Some(xa) = classify_xa(sql) {
        return xa;
    }
    let mut p = Parser {
        tokens: tokenize(sql),
        at: 0,
    };
    if p.keyword("BEGIN") || (p.keyword("START") && p.keyword("TRANSACTION")) {
        return Statement::Begin;
    }
    p.at = 0;
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
        if p.keyword("TABLE") {
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
            return Statement::SchemaChange(p.table_name().into_iter().collect());
        }
        return Statement::Other;
    }
    for kw in ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"] {
        if p.keyword(kw) {
            return Statement::Dml;
        }
    }
    if p.keyword("RENAME") && p.keyword("TABLE") {
        let mut tables = Vec::new();
        while let Some(from) = p.table_name() {
            tables.push(from);
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
        // A table renamed away is gone under its old name: its keys may all be stale.
        return Statement::SchemaChange(tables);
    }
    Statement::Other
}

#[cfg(test)]
mod tests {
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
            Statement::SchemaChange(vec![
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
