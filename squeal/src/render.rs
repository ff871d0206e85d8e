//! Canonical rendering of binlog column values into cache-key text.
//!
//! One rendering per column type, documented in the README ("Rendering"), so that applications can
//! build the same keys when they fill the cache:
//!
//! | type | rendering |
//! | --- | --- |
//! | TINYINT..BIGINT | decimal, `-` for negatives; UNSIGNED columns never negative (`18446744073709551615`) |
//! | DECIMAL | fixed point with exactly the column's scale: `DECIMAL(10,2)` 1.5 → `1.50` |
//! | FLOAT, DOUBLE | shortest text that reads back to the same value (a FLOAT as a FLOAT), no exponent: `0.1`, `1e20` → `100000000000000000000` |
//! | CHAR, VARCHAR, TEXT (any non-binary charset) | the text as UTF-8, converted exactly as the server converts it for a utf8mb4 client ([`Charset`]); CHAR without trailing spaces (the server logs and shows it so) |
//! | BINARY, VARBINARY, BLOB, GEOMETRY | lowercase hex, no prefix; BINARY(n) all n bytes, zero padding included |
//! | DATE | `YYYY-MM-DD` |
//! | DATETIME | `YYYY-MM-DDTHH:MM:SS`, then `.` and exactly fsp digits when the column has fractional seconds |
//! | TIMESTAMP | seconds since the Unix epoch (time-zone free), then `.` and fsp digits if any; zero is `0` |
//! | TIME | `[-]HH:MM:SS` (hours may exceed 24), fraction as DATETIME |
//! | YEAR | four digits; the zero year `0000` |
//! | BIT | the unsigned integer value in decimal |
//! | ENUM | the member's name (its 1-based index when the server did not log names) |
//! | SET | member names in definition order joined with `,` (the bitmask as a decimal integer without names) |
//! | JSON (MySQL binary JSON) | compact JSON, object keys sorted; MariaDB's JSON is text and rendered as text |
//! | NULL | no value: the template yields no key |
//!
//! Every rendered value is then made key-safe: the bytes 0x00–0x20 (controls and space), 0x7F and
//! `%` are written `%XX` (uppercase hex), so a key never contains whitespace or control characters.
//!
//! A text value that cannot be converted as the server would (a character set squeal has no table
//! for, an unknown collation id, bytes the server would not send as UTF-8) is a [`CannotRender`]
//! error, never a value and never taken for NULL: a key that differs from the application's would
//! be published in vain, and skipping the key would leave the application's entry stale. The
//! source publishes `flush_table` for the table instead. [`ColumnShape::charset_problem`] names
//! columns whose every value is such up front, so the source treats a template over one as unbound.
//! This module does no I/O.

use std::fmt::Write as _;

use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_async::Value;

/// What the binlog says about one column, as needed for rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnShape {
    /// Column name when the table map carries it (binlog_row_metadata=FULL), lower-cased.
    pub name: Option<String>,
    /// The real column type.
    pub ty: ColumnType,
    /// Type metadata bytes (fsp for temporal types, precision/scale for DECIMAL...).
    pub meta: Vec<u8>,
    /// UNSIGNED numeric column.
    pub unsigned: bool,
    /// Collation id (which names the character set) of a character, ENUM or SET column, when
    /// logged (binlog_row_metadata=MINIMAL or FULL).
    pub charset: Option<u16>,
    /// ENUM member names, when logged.
    pub enum_values: Option<Vec<String>>,
    /// SET member names, when logged.
    pub set_values: Option<Vec<String>>,
}

/// The layout of a table as a TABLE_MAP event describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    /// Database name.
    pub db: String,
    /// Table name.
    pub table: String,
    /// Columns in table order.
    pub columns: Vec<ColumnShape>,
}

const BINARY_CHARSET: u16 = 63;

/// Which server wrote the binlog, where the two write the same event differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql,
    MariaDb,
}

impl Flavor {
    /// Whether a GEOMETRY column takes a place among the character columns of the table map's
    /// DEFAULT_CHARSET/COLUMN_CHARSET metadata. MariaDB counts every column whose binlog type info
    /// has a character set (`is_character_field` in sql/log_event_server.cc; GEOMETRY's is binary);
    /// MySQL counts only the real types STRING, VAR_STRING, VARCHAR and BLOB (`is_character_type`
    /// in sql/log_event.cc), as mysql_common does.
    fn geometry_has_a_charset(self) -> bool {
        self == Flavor::MariaDb
    }
}

impl TableShape {
    /// Reads the layout from a table map event, including optional metadata where present,
    /// as the server `flavor` writes it.
    pub fn from_table_map(tme: &TableMapEvent<'_>, flavor: Flavor) -> std::io::Result<TableShape> {
        let count = tme.columns_count() as usize;
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut enum_set_charsets = extractor.iter_enum_and_set_charset();
        let mut names = extractor.iter_column_name();
        // Member names are logged in the column's character set: kept raw until it is known.
        let mut enum_names: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut set_names: Vec<Vec<Vec<u8>>> = Vec::new();
        for field in tme.iter_optional_meta() {
            match field? {
                OptionalMetadataField::EnumStrValue(values) => {
                    for v in values.iter_values() {
                        let v = v?;
                        enum_names
                            .push(v.values().iter().map(|x| x.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for v in values.iter_values() {
                        let v = v?;
                        set_names.push(v.values().iter().map(|x| x.value_raw().to_vec()).collect());
                    }
                }
                _ => {}
            }
        }
        let mut enum_names = enum_names.into_iter();
        let mut set_names = set_names.into_iter();
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "no column type")
                })?;
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            let unsigned = ty.is_numeric_type() && signedness.next().unwrap_or(false);
            let charset = if ty.is_character_type() {
                charsets.next().transpose()?
            } else if ty.is_geometry_type() && flavor.geometry_has_a_charset() {
                // Its place in the charset list (binary); GEOMETRY renders as hex regardless.
                charsets.next().transpose()?;
                None
            } else if ty.is_enum_or_set_type() {
                enum_set_charsets.next().transpose()?
            } else {
                None
            };
            let name = names.next().transpose()?.map(|n| n.name().to_lowercase());
            let enum_values = if ty.is_enum_type() {
                enum_names.next().map(|n| member_names(n, charset))
            } else {
                None
            };
            let set_values = if ty.is_set_type() {
                set_names.next().map(|n| member_names(n, charset))
            } else {
                None
            };
            columns.push(ColumnShape {
                name,
                ty,
                meta,
                unsigned,
                charset,
                enum_values,
                set_values,
            });
        }
        Ok(TableShape {
            db: tme.database_name().into_owned(),
            table: tme.table_name().into_owned(),
            columns,
        })
    }

    /// Column names, when the table map carried all of them.
    pub fn names(&self) -> Option<Vec<String>> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

impl ColumnShape {
    /// Why this column's text cannot be rendered as the application reads it (its character set
    /// has no conversion here, or its collation id is unknown); `None` when it can, or when the
    /// column holds no text. Values of such a column do not render (see [`render`]).
    pub fn charset_problem(&self) -> Option<String> {
        collation_problem(self.charset?)
    }
}

/// Why text in collation `id` cannot be rendered as the application reads it (its character set
/// has no conversion here, or the id is unknown); `None` when it can. Shared by the binlog path
/// ([`ColumnShape::charset_problem`]) and `squeal check`, which reads the ids from
/// information_schema.
pub fn collation_problem(id: u16) -> Option<String> {
    match Charset::of_collation(id) {
        None => Some(format!(
            "collation id {id} is unknown to squeal, so the character set of its text is not known"
        )),
        Some(Charset::Unsupported(name)) => Some(format!(
            "character set {name} (collation id {id}) is not converted to UTF-8 by squeal"
        )),
        Some(_) => None,
    }
}

/// ENUM/SET member names as the server sends them to a UTF-8 client. With an unconvertible
/// character set they are kept lossily, but never used: such a column's values do not render.
fn member_names(raw: Vec<Vec<u8>>, charset: Option<u16>) -> Vec<String> {
    let cs = charset.and_then(Charset::of_collation);
    raw.into_iter()
        .map(|n| match cs.and_then(|cs| cs.to_utf8(&n)) {
            Some(s) => s,
            None => String::from_utf8_lossy(&n).into_owned(),
        })
        .collect()
}

/// Why a value cannot be rendered as the application reads it (see the module doc). A key over it
/// cannot be built, and must not be skipped as for NULL: the caller flushes the table instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct CannotRender {
    /// The column's name, `?` when the binlog did not carry it.
    pub column: String,
    /// What is wrong with the value or the column.
    pub reason: String,
}

impl CannotRender {
    fn new(col: &ColumnShape, reason: impl Into<String>) -> CannotRender {
        CannotRender {
            column: col.name.clone().unwrap_or_else(|| "?".to_owned()),
            reason: reason.into(),
        }
    }
}

/// Renders one value for a key: `Ok(None)` for SQL NULL (the key is skipped), an error for a value
/// that cannot be rendered as the application reads it. The result is already key-safe.
pub fn render(value: &BinlogValue<'_>, col: &ColumnShape) -> Result<Option<String>, CannotRender> {
    let raw = match value {
        BinlogValue::Value(Value::NULL) => return Ok(None),
        BinlogValue::Value(v) => render_plain(v, col)?,
        BinlogValue::Jsonb(j) => match serde_json::Value::try_from(j.clone()) {
            Ok(json) => canonical_json(&json),
            // No text form the application could have built its key from.
            Err(e) => {
                return Err(CannotRender::new(
                    col,
                    format!("a binary JSON value with no JSON text form ({e})"),
                ))
            }
        },
        // Partial JSON updates only appear in the after image of MySQL's PARTIAL_UPDATE_ROWS_EVENT
        // with binlog_row_value_options=PARTIAL_JSON; a key over a JSON column cannot be rendered
        // from a diff. The source publishes flush_table for such a row before it gets here.
        BinlogValue::JsonDiff(_) => {
            return Err(CannotRender::new(col, "a partial JSON update (a diff)"))
        }
    };
    Ok(Some(key_safe(&raw)))
}

fn canonical_json(v: &serde_json::Value) -> String {
    // serde_json's default Map is a BTreeMap: keys come out sorted, which is the canonical order.
    v.to_string()
}

fn fraction(us: u32, fsp: u8) -> String {
    if fsp == 0 {
        return String::new();
    }
    let digits = format!("{us:06}");
    format!(".{}", &digits[..fsp.min(6) as usize])
}

fn fsp_of(col: &ColumnShape) -> u8 {
    match col.ty {
        ColumnType::MYSQL_TYPE_DATETIME2
        | ColumnType::MYSQL_TYPE_TIME2
        | ColumnType::MYSQL_TYPE_TIMESTAMP2 => col.meta.first().copied().unwrap_or(0).min(6),
        _ => 0,
    }
}

fn render_plain(v: &Value, col: &ColumnShape) -> Result<String, CannotRender> {
    use ColumnType::*;
    if col.enum_values.is_some() || col.set_values.is_some() {
        // Member names in a character set without a conversion here are not what the
        // application reads.
        if let Some(problem) = col.charset_problem() {
            return Err(CannotRender::new(col, problem));
        }
    }
    Ok(match (col.ty, v) {
        (MYSQL_TYPE_INT24, Value::Int(i)) => {
            // mysql_common reads MEDIUMINT's 3 bytes without sign extension, signed column or
            // not (-1 arrives as 16777215): take the 24 bits and extend them as the column says.
            let bits = (*i as u64) & 0xFF_FFFF;
            if col.unsigned {
                bits.to_string()
            } else {
                (((bits << 40) as i64) >> 40).to_string()
            }
        }
        (
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG,
            Value::Int(i),
        ) => {
            if col.unsigned && *i < 0 {
                let u = match col.ty {
                    MYSQL_TYPE_TINY => *i as u8 as u64,
                    MYSQL_TYPE_SHORT => *i as u16 as u64,
                    MYSQL_TYPE_LONG => *i as u32 as u64,
                    _ => *i as u64,
                };
                u.to_string()
            } else {
                i.to_string()
            }
        }
        (_, Value::Int(i)) if col.ty == MYSQL_TYPE_ENUM => match &col.enum_values {
            Some(names) if *i >= 1 && (*i as usize) <= names.len() => {
                names[*i as usize - 1].clone()
            }
            Some(_) if *i == 0 => String::new(),
            _ => i.to_string(),
        },
        (MYSQL_TYPE_TIMESTAMP, Value::Int(secs)) => secs.to_string(),
        (MYSQL_TYPE_SET, Value::Bytes(mask)) => {
            let bits = le_uint(mask);
            match &col.set_values {
                Some(names) => names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i < 64 && bits & (1u64 << i) != 0)
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                None => bits.to_string(),
            }
        }
        (MYSQL_TYPE_BIT, Value::Bytes(b)) => b
            .iter()
            .fold(0u64, |acc, x| (acc << 8) | *x as u64)
            .to_string(),
        (MYSQL_TYPE_TIMESTAMP2, Value::Bytes(b)) => {
            // mysql_common gives `secs` or `secs.micros` (6 digits); re-render with the column's fsp.
            let text = String::from_utf8_lossy(b);
            let (secs, micros) = match text.split_once('.') {
                Some((s, us)) => (s.to_owned(), us.parse::<u32>().unwrap_or(0)),
                None => (text.into_owned(), 0),
            };
            format!("{secs}{}", fraction(micros, fsp_of(col)))
        }
        // The binlog stores YEAR as one byte, year - 1900, with 0 for the zero year that the
        // server shows as `0000`; mysql_common adds 1900 to every byte. 1900 itself is outside
        // YEAR's range (1901–2155), so it can only be the zero year.
        (MYSQL_TYPE_YEAR, Value::Bytes(b)) if b.as_slice() == b"1900" => "0000".to_owned(),
        (MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL | MYSQL_TYPE_YEAR, Value::Bytes(b)) => {
            String::from_utf8_lossy(b).into_owned()
        }
        (MYSQL_TYPE_GEOMETRY, Value::Bytes(b)) => hex(b),
        (_, Value::Bytes(b)) => return render_text(b, col),
        (_, Value::Int(i)) => i.to_string(),
        (_, Value::UInt(u)) => u.to_string(),
        (_, Value::Float(f)) => f.to_string(),
        (_, Value::Double(d)) => d.to_string(),
        (_, Value::Date(y, mo, d, h, mi, s, us)) => {
            if col.ty == MYSQL_TYPE_DATE || col.ty == MYSQL_TYPE_NEWDATE {
                format!("{y:04}-{mo:02}-{d:02}")
            } else {
                format!(
                    "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}",
                    fraction(*us, fsp_of(col))
                )
            }
        }
        (_, Value::Time(neg, days, h, mi, s, us)) => {
            let hours = *days as u64 * 24 + *h as u64;
            format!(
                "{}{hours:02}:{mi:02}:{s:02}{}",
                if *neg { "-" } else { "" },
                fraction(*us, fsp_of(col))
            )
        }
        (_, Value::NULL) => String::new(),
    })
}

fn render_text(bytes: &[u8], col: &ColumnShape) -> Result<String, CannotRender> {
    if col.ty == ColumnType::MYSQL_TYPE_STRING && col.charset == Some(BINARY_CHARSET) {
        // BINARY(n): the server stores n bytes, padding with 0x00, and shows all n, but logs
        // the value with its trailing 0x00 bytes cut (as it cuts CHAR's trailing spaces, which
        // it does not show either): put them back.
        let mut padded = bytes.to_vec();
        if let Some(n) = string_length(&col.meta) {
            if padded.len() < n {
                padded.resize(n, 0);
            }
        }
        return Ok(hex(&padded));
    }
    if col.charset == Some(BINARY_CHARSET)
        || (!col.ty.is_character_type() && !col.ty.is_enum_or_set_type())
    {
        return Ok(hex(bytes));
    }
    let Some(id) = col.charset else {
        // No charset metadata (binlog_row_metadata=NO_LOG, which `check` refuses): UTF-8 when
        // the bytes are, hex otherwise.
        return Ok(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => hex(bytes),
        });
    };
    let cs = match Charset::of_collation(id) {
        Some(Charset::Unsupported(_)) | None => {
            return Err(CannotRender::new(
                col,
                col.charset_problem().unwrap_or_default(),
            ));
        }
        Some(cs) => cs,
    };
    cs.to_utf8(bytes).ok_or_else(|| {
        CannotRender::new(
            col,
            format!(
                "a {} value (collation id {id}) holds bytes the server would not send as UTF-8 \
                 (a lone surrogate, or malformed)",
                cs.name()
            ),
        )
    })
}

/// The declared length in bytes of a CHAR/BINARY column (`MYSQL_TYPE_STRING`), from its two
/// table-map metadata bytes: the real type, whose bits 4–5 (inverted) carry bits 8–9 of the
/// length, then the low byte of the length.
fn string_length(meta: &[u8]) -> Option<usize> {
    let [b0, b1] = meta else { return None };
    let (b0, b1) = (usize::from(*b0), usize::from(*b1));
    Some(b1 | (((b0 & 0x30) ^ 0x30) << 4))
}

fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Percent-encodes the bytes 0x00–0x20, 0x7F and `%`, leaving everything else (UTF-8 included).
pub fn key_safe(text: &str) -> String {
    if !text.bytes().any(needs_escape) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        if ch.is_ascii() && needs_escape(ch as u8) {
            let _ = write!(out, "%{:02X}", ch as u8);
        } else {
            out.push(ch);
        }
    }
    out
}

fn needs_escape(b: u8) -> bool {
    b <= 0x20 || b == 0x7F || b == b'%'
}

/// The character set of a text column, as far as rendering it to UTF-8 is concerned.
///
/// Every conversion is the server's own to utf8mb4 (what an application reads through a UTF-8
/// connection): the single-byte tables below are MariaDB 10.11's, read back from the server byte
/// by byte (`CONVERT(CONVERT(x USING cs) USING utf8mb4)`), `?` included where the server has no
/// mapping and sends `?`. MySQL's latin1 is the same cp1252 variant (its 5 undefined bytes map
/// to the C1 controls U+0081, U+008D, U+008F, U+0090, U+009D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `binary`: not text (rendered as hex).
    Binary,
    /// utf8mb3 and utf8mb4: already UTF-8.
    Utf8,
    /// ucs2: UCS-2 big-endian.
    Ucs2,
    /// utf16: UTF-16 big-endian.
    Utf16,
    /// utf16le: UTF-16 little-endian.
    Utf16Le,
    /// utf32: UTF-32 big-endian.
    Utf32,
    /// An 8-bit character set: ASCII below 0x80, the table above.
    SingleByte(&'static str, &'static [char; 128]),
    /// A character set squeal has no conversion for (the multi-byte Asian ones, swe7).
    Unsupported(&'static str),
}

impl Charset {
    /// The character set of a collation id as MariaDB (10.5–11.x) or MySQL (5.7–8.x) log it;
    /// `None` for an id neither uses.
    pub fn of_collation(id: u16) -> Option<Charset> {
        Charset::named(collation_charset(id)?)
    }

    /// The character set called `name` (as in `information_schema.CHARACTER_SETS`).
    pub fn named(name: &str) -> Option<Charset> {
        use Charset::*;
        Some(match name {
            "binary" => Binary,
            "utf8mb3" | "utf8" | "utf8mb4" => Utf8,
            "ucs2" => Ucs2,
            "utf16" => Utf16,
            "utf16le" => Utf16Le,
            "utf32" => Utf32,
            "ascii" => SingleByte("ascii", &ASCII),
            "latin1" => SingleByte("latin1", &LATIN1),
            "latin2" => SingleByte("latin2", &LATIN2),
            "latin5" => SingleByte("latin5", &LATIN5),
            "latin7" => SingleByte("latin7", &LATIN7),
            "greek" => SingleByte("greek", &GREEK),
            "hebrew" => SingleByte("hebrew", &HEBREW),
            "cp1250" => SingleByte("cp1250", &CP1250),
            "cp1251" => SingleByte("cp1251", &CP1251),
            "cp1256" => SingleByte("cp1256", &CP1256),
            "cp1257" => SingleByte("cp1257", &CP1257),
            "koi8r" => SingleByte("koi8r", &KOI8R),
            "koi8u" => SingleByte("koi8u", &KOI8U),
            "cp850" => SingleByte("cp850", &CP850),
            "cp852" => SingleByte("cp852", &CP852),
            "cp866" => SingleByte("cp866", &CP866),
            "keybcs2" => SingleByte("keybcs2", &KEYBCS2),
            "macroman" => SingleByte("macroman", &MACROMAN),
            "macce" => SingleByte("macce", &MACCE),
            "armscii8" => SingleByte("armscii8", &ARMSCII8),
            "geostd8" => SingleByte("geostd8", &GEOSTD8),
            "dec8" => SingleByte("dec8", &DEC8),
            "hp8" => SingleByte("hp8", &HP8),
            "tis620" => SingleByte("tis620", &TIS620),
            "big5" => Unsupported("big5"),
            "cp932" => Unsupported("cp932"),
            "eucjpms" => Unsupported("eucjpms"),
            "euckr" => Unsupported("euckr"),
            "gb2312" => Unsupported("gb2312"),
            "gbk" => Unsupported("gbk"),
            "gb18030" => Unsupported("gb18030"),
            "sjis" => Unsupported("sjis"),
            "ujis" => Unsupported("ujis"),
            "swe7" => Unsupported("swe7"),
            _ => return None,
        })
    }

    /// The character set's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Binary => "binary",
            Charset::Utf8 => "utf8mb3/utf8mb4",
            Charset::Ucs2 => "ucs2",
            Charset::Utf16 => "utf16",
            Charset::Utf16Le => "utf16le",
            Charset::Utf32 => "utf32",
            Charset::SingleByte(name, _) | Charset::Unsupported(name) => name,
        }
    }

    /// The text as the server sends it to a utf8mb4 client; `None` when it cannot be told
    /// (`binary` or an unsupported character set), or when the server would send bytes that are
    /// not UTF-8 (ucs2/utf32/utf8mb3 holding a surrogate code point, which MariaDB stores and
    /// passes on) or the bytes are malformed.
    pub fn to_utf8(&self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Binary | Charset::Unsupported(_) => None,
            Charset::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_owned),
            Charset::Ucs2 => {
                let units = bytes.chunks(2).map(|u| match u {
                    [hi, lo] => char::from_u32(u32::from(u16::from_be_bytes([*hi, *lo]))),
                    _ => None,
                });
                units.collect()
            }
            Charset::Utf16 | Charset::Utf16Le => {
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units = bytes.chunks_exact(2).map(|u| match self {
                    Charset::Utf16 => u16::from_be_bytes([u[0], u[1]]),
                    _ => u16::from_le_bytes([u[0], u[1]]),
                });
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .ok()
            }
            Charset::Utf32 => bytes
                .chunks(4)
                .map(|u| match u {
                    [a, b, c, d] => char::from_u32(u32::from_be_bytes([*a, *b, *c, *d])),
                    _ => None,
                })
                .collect(),
            Charset::SingleByte(_, high) => Some(
                bytes
                    .iter()
                    .map(|&b| {
                        if b < 0x80 {
                            b as char
                        } else {
                            high[usize::from(b - 0x80)]
                        }
                    })
                    .collect(),
            ),
        }
    }
}

/// The character set of a collation id: MariaDB's `information_schema.
/// COLLATION_CHARACTER_SET_APPLICABILITY` (10.11: ids below 256 shared with MySQL, 576–738 its own,
/// 1024 + id for the NO PAD variants, 2048–3327 the UCA 14 collations in blocks of 256 per
/// character set) and MySQL 8's own (76, 248–250 gb18030, 255–323 utf8mb4).
fn collation_charset(id: u16) -> Option<&'static str> {
    let base = match id {
        1024..=1279 => id - 1024,
        2048..=3327 => {
            let block = usize::from((id - 2048) / 256);
            return Some(["utf8mb3", "utf8mb4", "ucs2", "utf16", "utf32"][block]);
        }
        _ => id,
    };
    Some(match base {
        1 | 84 => "big5",
        2 | 9 | 21 | 27 | 77 => "latin2",
        3 | 69 => "dec8",
        4 | 80 => "cp850",
        5 | 8 | 15 | 31 | 47..=49 | 94 => "latin1",
        6 | 72 => "hp8",
        7 | 74 => "koi8r",
        10 | 82 => "swe7",
        11 | 65 => "ascii",
        12 | 91 => "ujis",
        13 | 88 => "sjis",
        14 | 23 | 50..=52 => "cp1251",
        16 | 71 => "hebrew",
        18 | 89 => "tis620",
        19 | 85 => "euckr",
        20 | 41..=42 | 79 => "latin7",
        22 | 75 => "koi8u",
        24 | 86 => "gb2312",
        25 | 70 => "greek",
        26 | 34 | 44 | 66 | 99 => "cp1250",
        28 | 87 => "gbk",
        29 | 58..=59 => "cp1257",
        30 | 78 => "latin5",
        32 | 64 => "armscii8",
        33 | 76 | 83 | 192..=215 | 223 | 576..=578 => "utf8mb3",
        35 | 90 | 128..=151 | 159 | 640..=642 => "ucs2",
        36 | 68 => "cp866",
        37 | 73 => "keybcs2",
        38 | 43 => "macce",
        39 | 53 => "macroman",
        40 | 81 => "cp852",
        45..=46 | 224..=247 | 255..=323 | 608..=610 => "utf8mb4",
        54..=55 | 101..=124 | 672..=674 => "utf16",
        56 | 62 => "utf16le",
        57 | 67 => "cp1256",
        60..=61 | 160..=183 | 736..=738 => "utf32",
        63 => "binary",
        92..=93 => "geostd8",
        95..=96 => "cp932",
        97..=98 => "eucjpms",
        248..=250 => "gb18030",
        _ => return None,
    })
}

/// The 128 characters of `s` (the upper half of an 8-bit character set), checked at compile time.
const fn high_half(s: &str) -> [char; 128] {
    let b = s.as_bytes();
    let mut out = ['\0'; 128];
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        let (cp, len) = if b[i] < 0x80 {
            (b[i] as u32, 1)
        } else if b[i] < 0xE0 {
            (((b[i] & 0x1F) as u32) << 6 | (b[i + 1] & 0x3F) as u32, 2)
        } else if b[i] < 0xF0 {
            (
                ((b[i] & 0x0F) as u32) << 12
                    | ((b[i + 1] & 0x3F) as u32) << 6
                    | (b[i + 2] & 0x3F) as u32,
                3,
            )
        } else {
            (
                ((b[i] & 0x07) as u32) << 18
                    | ((b[i + 1] & 0x3F) as u32) << 12
                    | ((b[i + 2] & 0x3F) as u32) << 6
                    | (b[i + 3] & 0x3F) as u32,
                4,
            )
        };
        out[n] = match char::from_u32(cp) {
            Some(c) => c,
            None => panic!("not a character"),
        };
        n += 1;
        i += len;
    }
    assert!(n == 128, "an upper half has 128 characters");
    out
}

// The upper halves (0x80–0xFF), 16 a line, as MariaDB 10.11 converts them to utf8mb4 (generated
// from the server; `?` where it sends `?`). Non-printing, combining and right-to-left characters
// are escaped.
static ASCII: [char; 128] = ['?'; 128];
static LATIN1: [char; 128] = high_half(concat!(
    "€\u{81}‚ƒ„…†‡ˆ‰Š‹Œ\u{8D}Ž\u{8F}", // 0x80
    "\u{90}‘’“”•–—˜™š›œ\u{9D}žŸ",      // 0x90
    "\u{A0}¡¢£¤¥¦§¨©ª«¬\u{AD}®¯",      // 0xA0
    "°±²³´µ¶·¸¹º»¼½¾¿",                // 0xB0
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏ",                // 0xC0
    "ÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞß",                // 0xD0
    "àáâãäåæçèéêëìíîï",                // 0xE0
    "ðñòóôõö÷øùúûüýþÿ",                // 0xF0
));
static LATIN2: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}Ą˘Ł¤ĽŚ§¨ŠŞŤŹ\u{AD}ŽŻ", // 0xA0
    "°ą˛ł´ľśˇ¸šşťź˝žż", // 0xB0
    "ŔÁÂĂÄĹĆÇČÉĘËĚÍÎĎ", // 0xC0
    "ĐŃŇÓÔŐÖ×ŘŮÚŰÜÝŢß", // 0xD0
    "ŕáâăäĺćçčéęëěíîď", // 0xE0
    "đńňóôőö÷řůúűüýţ˙", // 0xF0
));
static LATIN5: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}¡¢£¤¥¦§¨©ª«¬\u{AD}®¯", // 0xA0
    "°±²³´µ¶·¸¹º»¼½¾¿", // 0xB0
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏ", // 0xC0
    "ĞÑÒÓÔÕÖ×ØÙÚÛÜİŞß", // 0xD0
    "àáâãäåæçèéêëìíîï", // 0xE0
    "ğñòóôõö÷øùúûüışÿ", // 0xF0
));
static LATIN7: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}”¢£¤„¦§Ø©Ŗ«¬\u{AD}®Æ", // 0xA0
    "°±²³“µ¶·ø¹ŗ»¼½¾æ", // 0xB0
    "ĄĮĀĆÄÅĘĒČÉŹĖĢĶĪĻ", // 0xC0
    "ŠŃŅÓŌÕÖ×ŲŁŚŪÜŻŽß", // 0xD0
    "ąįāćäåęēčéźėģķīļ", // 0xE0
    "šńņóōõö÷ųłśūüżž’", // 0xF0
));
static GREEK: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}ʽʼ£??¦§¨©?«¬\u{AD}?―", // 0xA0
    "°±²³΄΅Ά·ΈΉΊ»Ό½ΎΏ", // 0xB0
    "ΐΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟ", // 0xC0
    "ΠΡ?ΣΤΥΦΧΨΩΪΫάέήί", // 0xD0
    "ΰαβγδεζηθικλμνξο", // 0xE0
    "πρςστυφχψωϊϋόύώ?", // 0xF0
));
static HEBREW: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}?¢£¤¥¦§¨©×«¬\u{AD}®‾", // 0xA0
    "°±²³´µ¶·¸¹÷»¼½¾?", // 0xB0
    "????????????????", // 0xC0
    "???????????????‗", // 0xD0
    "\u{5D0}\u{5D1}\u{5D2}\u{5D3}\u{5D4}\u{5D5}\u{5D6}\u{5D7}\u{5D8}\u{5D9}\u{5DA}\u{5DB}\u{5DC}\u{5DD}\u{5DE}\u{5DF}", // 0xE0
    "\u{5E0}\u{5E1}\u{5E2}\u{5E3}\u{5E4}\u{5E5}\u{5E6}\u{5E7}\u{5E8}\u{5E9}\u{5EA}??\u{200E}\u{200F}?", // 0xF0
));
static CP1250: [char; 128] = high_half(concat!(
    "€?‚?„…†‡?‰Š‹ŚŤŽŹ",           // 0x80
    "?‘’“”•–—?™š›śťžź",           // 0x90
    "\u{A0}ˇ˘Ł¤Ą¦§¨©Ş«¬\u{AD}®Ż", // 0xA0
    "°±˛ł´µ¶·¸ąş»Ľ˝ľż",           // 0xB0
    "ŔÁÂĂÄĹĆÇČÉĘËĚÍÎĎ",           // 0xC0
    "ĐŃŇÓÔŐÖ×ŘŮÚŰÜÝŢß",           // 0xD0
    "ŕáâăäĺćçčéęëěíîď",           // 0xE0
    "đńňóôőö÷řůúűüýţ˙",           // 0xF0
));
static CP1251: [char; 128] = high_half(concat!(
    "ЂЃ‚ѓ„…†‡€‰Љ‹ЊЌЋЏ",           // 0x80
    "ђ‘’“”•–—?™љ›њќћџ",           // 0x90
    "\u{A0}ЎўЈ¤Ґ¦§Ё©Є«¬\u{AD}®Ї", // 0xA0
    "°±Ііґµ¶·ё№є»јЅѕї",           // 0xB0
    "АБВГДЕЖЗИЙКЛМНОП",           // 0xC0
    "РСТУФХЦЧШЩЪЫЬЭЮЯ",           // 0xD0
    "абвгдежзийклмноп",           // 0xE0
    "рстуфхцчшщъыьэюя",           // 0xF0
));
static CP1256: [char; 128] = high_half(concat!(
    "€\u{67E}‚ƒ„…†‡ˆ‰?‹Œ\u{686}\u{698}?", // 0x80
    "\u{6AF}‘’“”•–—?™?›œ\u{200C}\u{200D}?", // 0x90
    "\u{A0}،¢£¤¥¦§¨©?«¬\u{AD}®¯", // 0xA0
    "°±²³´µ¶·¸¹\u{61B}»¼½¾\u{61F}", // 0xB0
    "?\u{621}\u{622}\u{623}\u{624}\u{625}\u{626}\u{627}\u{628}\u{629}\u{62A}\u{62B}\u{62C}\u{62D}\u{62E}\u{62F}", // 0xC0
    "\u{630}\u{631}\u{632}\u{633}\u{634}\u{635}\u{636}×\u{637}\u{638}\u{639}\u{63A}\u{640}\u{641}\u{642}\u{643}", // 0xD0
    "à\u{644}â\u{645}\u{646}\u{647}\u{648}çèéêë\u{649}\u{64A}îï", // 0xE0
    "\u{64B}\u{64C}\u{64D}\u{64E}ô\u{64F}\u{650}÷\u{651}ù\u{652}ûü\u{200E}\u{200F}?", // 0xF0
));
static CP1257: [char; 128] = high_half(concat!(
    "€?‚?„…†‡?‰?‹?¨ˇ¸",           // 0x80
    "?‘’“”•–—?™?›?¯˛?",           // 0x90
    "\u{A0}?¢£¤?¦§Ø©Ŗ«¬\u{AD}®Æ", // 0xA0
    "°±²³´µ¶·ø¹ŗ»¼½¾æ",           // 0xB0
    "ĄĮĀĆÄÅĘĒČÉŹĖĢĶĪĻ",           // 0xC0
    "ŠŃŅÓŌÕÖ×ŲŁŚŪÜŻŽß",           // 0xD0
    "ąįāćäåęēčéźėģķīļ",           // 0xE0
    "šńņóōõö÷ųłśūüżž˙",           // 0xF0
));
static KOI8R: [char; 128] = high_half(concat!(
    "─│┌┐└┘├┤┬┴┼▀▄█▌▐",      // 0x80
    "░▒▓⌠■∙√≈≤≥\u{A0}⌡°²·÷", // 0x90
    "═║╒ё╓╔╕╖╗╘╙╚╛╜╝╞",      // 0xA0
    "╟╠╡Ё╢╣╤╥╦╧╨╩╪╫╬©",      // 0xB0
    "юабцдефгхийклмно",      // 0xC0
    "пярстужвьызшэщчъ",      // 0xD0
    "ЮАБЦДЕФГХИЙКЛМНО",      // 0xE0
    "ПЯРСТУЖВЬЫЗШЭЩЧЪ",      // 0xF0
));
static KOI8U: [char; 128] = high_half(concat!(
    "─│┌┐└┘├┤┬┴┼▀▄█▌▐",      // 0x80
    "░▒▓⌠■•√≈≤≥\u{A0}⌡°²·÷", // 0x90
    "═║╒ёє╔ії╗╘╙╚╛ґ╝╞",      // 0xA0
    "╟╠╡ЁЄ╣ІЇ╦╧╨╩╪Ґ╬©",      // 0xB0
    "юабцдефгхийклмно",      // 0xC0
    "пярстужвьызшэщчъ",      // 0xD0
    "ЮАБЦДЕФГХИЙКЛМНО",      // 0xE0
    "ПЯРСТУЖВЬЫЗШЭЩЧЪ",      // 0xF0
));
static CP850: [char; 128] = high_half(concat!(
    "ÇüéâäàåçêëèïîìÄÅ",           // 0x80
    "ÉæÆôöòûùÿÖÜø£Ø×ƒ",           // 0x90
    "áíóúñÑªº¿®¬½¼¡«»",           // 0xA0
    "░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐",           // 0xB0
    "└┴┬├─┼ãÃ╚╔╩╦╠═╬¤",           // 0xC0
    "ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀",           // 0xD0
    "ÓßÔÒõÕµþÞÚÛÙýÝ¯´",           // 0xE0
    "\u{AD}±‗¾¶§÷¸°¨·¹³²■\u{A0}", // 0xF0
));
static CP852: [char; 128] = high_half(concat!(
    "ÇüéâäůćçłëŐőîŹÄĆ",           // 0x80
    "ÉĹĺôöĽľŚśÖÜŤťŁ×č",           // 0x90
    "áíóúĄąŽžĘę¬źČş«»",           // 0xA0
    "░▒▓│┤ÁÂĚŞ╣║╗╝Żż┐",           // 0xB0
    "└┴┬├─┼Ăă╚╔╩╦╠═╬¤",           // 0xC0
    "đĐĎËďŇÍÎě┘┌█▄ŢŮ▀",           // 0xD0
    "ÓßÔŃńňŠšŔÚŕŰýÝţ´",           // 0xE0
    "\u{AD}˝˛ˇ˘§÷¸°¨˙űŘř■\u{A0}", // 0xF0
));
static CP866: [char; 128] = high_half(concat!(
    "АБВГДЕЖЗИЙКЛМНОП",      // 0x80
    "РСТУФХЦЧШЩЪЫЬЭЮЯ",      // 0x90
    "абвгдежзийклмноп",      // 0xA0
    "░▒▓│┤╡╢╖╕╣║╗╝╜╛┐",      // 0xB0
    "└┴┬├─┼╞╟╚╔╩╦╠═╬╧",      // 0xC0
    "╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀",      // 0xD0
    "рстуфхцчшщъыьэюя",      // 0xE0
    "ЁёЄєЇїЎў°∙·√ⁿ²■\u{A0}", // 0xF0
));
static KEYBCS2: [char; 128] = high_half(concat!(
    "ČüéďäĎŤčěĚĹÍľĺÄÁ",      // 0x80
    "ÉžŽôöÓůÚýÖÜŠĽÝŘť",      // 0x90
    "áíóúňŇŮÔšřŕŔ¼¡«»",      // 0xA0
    "░▒▓│┤╡╢╖╕╣║╗╝╜╛┐",      // 0xB0
    "└┴┬├─┼╞╟╚╔╩╦╠═╬╧",      // 0xC0
    "╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀",      // 0xD0
    "αßΓπΣσµτΦΘΩδ∞φε∩",      // 0xE0
    "≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{A0}", // 0xF0
));
static MACROMAN: [char; 128] = high_half(concat!(
    "ÄÅÇÉÑÖÜáàâäãåçéè",        // 0x80
    "êëíìîïñóòôöõúùûü",        // 0x90
    "†°¢£§•¶ß®©™´¨≠ÆØ",        // 0xA0
    "∞±≤≥¥µ∂∑∏π∫ªºΩæø",        // 0xB0
    "¿¡¬√ƒ≈∆«»…\u{A0}ÀÃÕŒœ",   // 0xC0
    "–—“”‘’÷◊ÿŸ⁄€‹›ﬁﬂ",        // 0xD0
    "‡·‚„‰ÂÊÁËÈÍÎÏÌÓÔ",        // 0xE0
    "\u{F8FF}ÒÚÛÙıˆ˜¯˘˙˚¸˝˛ˇ", // 0xF0
));
static MACCE: [char; 128] = high_half(concat!(
    "ÄĀāÉĄÖÜáąČäčĆćéŹ",      // 0x80
    "źĎíďĒēĖóėôöõúĚěü",      // 0x90
    "†°Ę£§•¶ß®©™ę¨≠ģĮ",      // 0xA0
    "įĪ≤≥īĶ∂∑łĻļĽľĹĺŅ",      // 0xB0
    "ņŃ¬√ńŇ∆«»…\u{A0}ňŐÕőŌ", // 0xC0
    "–—“”‘’÷◊ōŔŕŘ‹›řŖ",      // 0xD0
    "ŗŠ‚„šŚśÁŤťÍŽžŪÓÔ",      // 0xE0
    "ūŮÚůŰűŲųÝýķŻŁżĢˇ",      // 0xF0
));
static ARMSCII8: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}❁§։)(»«—.՝,-՟…՜", // 0xA0
    "՛՞ԱաԲբԳգԴդԵեԶզԷէ", // 0xB0
    "ԸըԹթԺժԻիԼլԽխԾծԿկ", // 0xC0
    "ՀհՁձՂղՃճՄմՅյՆնՇշ", // 0xD0
    "ՈոՉչՊպՋջՌռՍսՎվՏտ", // 0xE0
    "ՐրՑցՒւՓփՔքՕօՖֆ’'", // 0xF0
));
static GEOSTD8: [char; 128] = high_half(concat!(
    "€?‚?„…†‡?‰?‹????",           // 0x80
    "?‘’“”•–—???›????",           // 0x90
    "\u{A0}¡¢£¤¥¦§¨©ª«¬\u{AD}®¯", // 0xA0
    "°±²³´µ¶·¸¹º»¼½¾¿",           // 0xB0
    "აბგდევზჱთიკლმნჲო",           // 0xC0
    "პჟრსტჳუფქღყშჩცძწ",           // 0xD0
    "ჭხჴჯჰჵ??????????",           // 0xE0
    "?????????????№??",           // 0xF0
));
static DEC8: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}¡¢£?¥?§¤©ª«????", // 0xA0
    "°±²³?µ¶·?¹º»¼½?¿", // 0xB0
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏ", // 0xC0
    "?ÑÒÓÔÕÖŒØÙÚÛÜŸ?ß", // 0xD0
    "àáâãäåæçèéêëìíîï", // 0xE0
    "?ñòóôõöœøùúûüÿ??", // 0xF0
));
static HP8: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{A0}ÀÂÈÊËÎÏ´ˋˆ¨˜ÙÛ₤", // 0xA0
    "¯Ýý°ÇçÑñ¡¿¤£¥§ƒ¢", // 0xB0
    "âêôûáéóúàèòùäëöü", // 0xC0
    "ÅîØÆåíøæÄìÖÜÉïßÔ", // 0xD0
    "ÁÃãÐðÍÌÓÒÕõŠšÚŸÿ", // 0xE0
    "Þþ·µ¶¾—¼½ªº«■»±?", // 0xF0
));
static TIS620: [char; 128] = high_half(concat!(
    "\u{80}\u{81}\u{82}\u{83}\u{84}\u{85}\u{86}\u{87}\u{88}\u{89}\u{8A}\u{8B}\u{8C}\u{8D}\u{8E}\u{8F}", // 0x80
    "\u{90}\u{91}\u{92}\u{93}\u{94}\u{95}\u{96}\u{97}\u{98}\u{99}\u{9A}\u{9B}\u{9C}\u{9D}\u{9E}\u{9F}", // 0x90
    "\u{FFFD}กขฃคฅฆงจฉชซฌญฎฏ", // 0xA0
    "ฐฑฒณดตถทธนบปผฝพฟ", // 0xB0
    "ภมยรฤลฦวศษสหฬอฮฯ", // 0xC0
    "ะ\u{E31}าำ\u{E34}\u{E35}\u{E36}\u{E37}\u{E38}\u{E39}\u{E3A}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}฿", // 0xD0
    "เแโใไๅๆ\u{E47}\u{E48}\u{E49}\u{E4A}\u{E4B}\u{E4C}\u{E4D}\u{E4E}๏", // 0xE0
    "๐๑๒๓๔๕๖๗๘๙๚๛\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}", // 0xF0
));

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    fn col(ty: ColumnType) -> ColumnShape {
        ColumnShape {
            name: None,
            ty,
            meta: vec![],
            unsigned: false,
            charset: None,
            enum_values: None,
            set_values: None,
        }
    }

    /// The rendering of a value that can be rendered (`None`: NULL).
    fn r(v: Value, c: &ColumnShape) -> Option<String> {
        render(&BinlogValue::Value(v), c).unwrap_or_else(|e| panic!("does not render: {e}"))
    }

    /// Why a value cannot be rendered (it must not be).
    fn cannot(v: Value, c: &ColumnShape) -> CannotRender {
        match render(&BinlogValue::Value(v), c) {
            Ok(rendered) => panic!("renders as {rendered:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn integers_signed_and_unsigned() {
        assert_eq!(r(Value::Int(-5), &col(MYSQL_TYPE_LONG)).unwrap(), "-5");
        let mut u = col(MYSQL_TYPE_TINY);
        u.unsigned = true;
        assert_eq!(r(Value::Int(-1), &u).unwrap(), "255");
        let mut u = col(MYSQL_TYPE_LONGLONG);
        u.unsigned = true;
        assert_eq!(
            r(Value::UInt(u64::MAX), &u).unwrap(),
            "18446744073709551615"
        );
        assert_eq!(r(Value::Int(-1), &u).unwrap(), "18446744073709551615");
        let mut u = col(MYSQL_TYPE_INT24);
        u.unsigned = true;
        assert_eq!(r(Value::Int(-1), &u).unwrap(), "16777215");
    }

    #[test]
    fn mediumint_is_sign_extended_as_the_column_says() {
        // mysql_common hands a signed MEDIUMINT over as its 24 raw bits: -1 as 16777215.
        let signed = col(MYSQL_TYPE_INT24);
        assert_eq!(r(Value::Int(0xFF_FFFF), &signed).unwrap(), "-1");
        assert_eq!(r(Value::Int(0x80_0000), &signed).unwrap(), "-8388608");
        assert_eq!(r(Value::Int(0x7F_FFFF), &signed).unwrap(), "8388607");
        assert_eq!(r(Value::Int(-5), &signed).unwrap(), "-5");
        let mut unsigned = col(MYSQL_TYPE_INT24);
        unsigned.unsigned = true;
        assert_eq!(r(Value::Int(0xFF_FFFF), &unsigned).unwrap(), "16777215");
        assert_eq!(r(Value::Int(0x80_0000), &unsigned).unwrap(), "8388608");
    }

    #[test]
    fn zero_year_and_binary_padding() {
        // mysql_common turns the zero year's byte 0 into 1900, a year YEAR cannot hold.
        let year = col(MYSQL_TYPE_YEAR);
        assert_eq!(r(Value::Bytes(b"1900".to_vec()), &year).unwrap(), "0000");
        assert_eq!(r(Value::Bytes(b"1901".to_vec()), &year).unwrap(), "1901");
        assert_eq!(r(Value::Bytes(b"2155".to_vec()), &year).unwrap(), "2155");
        // BINARY(4) (real type 0xFE, length 4) logged without its trailing zero bytes.
        let mut bin = col(MYSQL_TYPE_STRING);
        bin.charset = Some(BINARY_CHARSET);
        bin.meta = vec![0xFE, 4];
        assert_eq!(r(Value::Bytes(vec![0x61]), &bin).unwrap(), "61000000");
        assert_eq!(r(Value::Bytes(vec![]), &bin).unwrap(), "00000000");
        assert_eq!(r(Value::Bytes(vec![1, 2, 3, 4]), &bin).unwrap(), "01020304");
        // BINARY(255) and a long length whose bits 8-9 ride in the type byte.
        bin.meta = vec![0xFE, 255];
        assert_eq!(r(Value::Bytes(vec![]), &bin).unwrap(), "00".repeat(255));
        assert_eq!(string_length(&[0xFE ^ 0x10, 0x2C]), Some(300));
        // VARBINARY keeps its length; CHAR keeps the server's cut of trailing spaces.
        let mut varbin = col(MYSQL_TYPE_VARCHAR);
        varbin.charset = Some(BINARY_CHARSET);
        assert_eq!(r(Value::Bytes(vec![0x61, 0]), &varbin).unwrap(), "6100");
        let mut chr = col(MYSQL_TYPE_STRING);
        chr.charset = Some(45);
        chr.meta = vec![0xFE, 20];
        assert_eq!(r(Value::Bytes(b"a".to_vec()), &chr).unwrap(), "a");
    }

    #[test]
    fn floats_decimals_years_bits() {
        assert_eq!(
            r(Value::Double(0.1), &col(MYSQL_TYPE_DOUBLE)).unwrap(),
            "0.1"
        );
        assert_eq!(
            r(Value::Double(1e20), &col(MYSQL_TYPE_DOUBLE)).unwrap(),
            "100000000000000000000"
        );
        assert_eq!(r(Value::Float(1.5), &col(MYSQL_TYPE_FLOAT)).unwrap(), "1.5");
        assert_eq!(
            r(Value::Bytes(b"1.50".to_vec()), &col(MYSQL_TYPE_NEWDECIMAL)).unwrap(),
            "1.50"
        );
        assert_eq!(
            r(Value::Bytes(b"2024".to_vec()), &col(MYSQL_TYPE_YEAR)).unwrap(),
            "2024"
        );
        assert_eq!(
            r(Value::Bytes(vec![1, 2]), &col(MYSQL_TYPE_BIT)).unwrap(),
            "258"
        );
    }

    #[test]
    fn strings_binary_and_key_safety() {
        let mut text = col(MYSQL_TYPE_VARCHAR);
        text.charset = Some(45);
        assert_eq!(
            r(Value::Bytes("é a%b\n".into()), &text).unwrap(),
            "é%20a%25b%0A"
        );
        text.charset = Some(8);
        assert_eq!(r(Value::Bytes(vec![0xE9]), &text).unwrap(), "é");
        text.charset = Some(BINARY_CHARSET);
        assert_eq!(r(Value::Bytes(vec![0, 0xAB]), &text).unwrap(), "00ab");
        text.charset = None;
        assert_eq!(
            r(Value::Bytes(vec![0xFF]), &text).unwrap(),
            "ff",
            "invalid UTF-8 falls back to hex"
        );
        assert_eq!(
            r(Value::Bytes(b"xy".to_vec()), &col(MYSQL_TYPE_GEOMETRY)).unwrap(),
            "7879"
        );
        assert_eq!(r(Value::NULL, &text), None);
    }

    #[test]
    fn temporal_types() {
        assert_eq!(
            r(
                Value::Date(2024, 1, 2, 0, 0, 0, 0),
                &col(MYSQL_TYPE_NEWDATE)
            )
            .unwrap(),
            "2024-01-02"
        );
        let mut dt = col(MYSQL_TYPE_DATETIME2);
        assert_eq!(
            r(Value::Date(2024, 1, 2, 3, 4, 5, 0), &dt).unwrap(),
            "2024-01-02T03:04:05"
        );
        dt.meta = vec![3];
        assert_eq!(
            r(Value::Date(2024, 1, 2, 3, 4, 5, 120_000), &dt).unwrap(),
            "2024-01-02T03:04:05.120"
        );
        let mut t = col(MYSQL_TYPE_TIME2);
        assert_eq!(
            r(Value::Time(true, 1, 2, 3, 4, 0), &t).unwrap(),
            "-26:03:04"
        );
        t.meta = vec![6];
        assert_eq!(
            r(Value::Time(false, 0, 0, 0, 1, 5), &t).unwrap(),
            "00:00:01.000005"
        );
        let mut ts = col(MYSQL_TYPE_TIMESTAMP2);
        assert_eq!(
            r(Value::Bytes(b"1700000000".to_vec()), &ts).unwrap(),
            "1700000000"
        );
        ts.meta = vec![2];
        assert_eq!(
            r(Value::Bytes(b"1700000000.120000".to_vec()), &ts).unwrap(),
            "1700000000.12"
        );
        assert_eq!(
            r(Value::Bytes(b"1700000000".to_vec()), &ts).unwrap(),
            "1700000000.00"
        );
    }

    #[test]
    fn enums_sets_and_json() {
        let mut e = col(MYSQL_TYPE_ENUM);
        assert_eq!(r(Value::Int(2), &e).unwrap(), "2");
        e.enum_values = Some(vec!["red".into(), "green".into()]);
        assert_eq!(r(Value::Int(2), &e).unwrap(), "green");
        let mut s = col(MYSQL_TYPE_SET);
        assert_eq!(r(Value::Bytes(vec![5]), &s).unwrap(), "5");
        s.set_values = Some(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(r(Value::Bytes(vec![5]), &s).unwrap(), "a,c");
        let json: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":[true,null]}"#).unwrap();
        assert_eq!(canonical_json(&json), r#"{"a":[true,null],"b":1}"#);
    }

    fn text(collation: u16) -> ColumnShape {
        let mut c = col(MYSQL_TYPE_VARCHAR);
        c.charset = Some(collation);
        c
    }

    fn conv(name: &str, bytes: &[u8]) -> Option<String> {
        Charset::named(name)
            .expect("a known charset")
            .to_utf8(bytes)
    }

    #[test]
    fn latin1_is_cp1252_with_the_servers_five_c1_bytes() {
        // The application wrote `Café€™` through a utf8mb4 connection into a latin1 column.
        let latin1 = text(8);
        let stored = [b'C', b'a', b'f', 0xE9, 0x80, 0x99];
        assert_eq!(r(Value::Bytes(stored.to_vec()), &latin1).unwrap(), "Café€™");
        // 0x80–0x9F, written out independently of the table (cp1252, and MySQL's C1 mapping for
        // the five bytes cp1252 leaves undefined); 0xA0–0xFF are ISO-8859-1.
        let c1 = [
            '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
            '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ',
            '\u{9D}', 'ž', 'Ÿ',
        ];
        for b in 0u8..=0xFF {
            let want = match b {
                0x80..=0x9F => c1[usize::from(b - 0x80)],
                _ => char::from(b),
            };
            assert_eq!(
                conv("latin1", &[b]).unwrap(),
                want.to_string(),
                "byte {b:#04x}"
            );
        }
        for (b, c) in [
            (0x81, '\u{81}'),
            (0x8D, '\u{8D}'),
            (0x8F, '\u{8F}'),
            (0x90, '\u{90}'),
        ] {
            assert_eq!(r(Value::Bytes(vec![b]), &latin1).unwrap(), c.to_string());
        }
        assert_eq!(r(Value::Bytes(vec![0x9D]), &latin1).unwrap(), "\u{9D}");
        assert_eq!(r(Value::Bytes(vec![0x8C, 0x9C]), &latin1).unwrap(), "Œœ");
        // Every latin1 collation, PAD SPACE and NO PAD, MariaDB's and MySQL's.
        for id in [5, 8, 15, 31, 47, 48, 49, 94, 1032, 1071] {
            assert_eq!(
                Charset::of_collation(id).unwrap().name(),
                "latin1",
                "id {id}"
            );
        }
    }

    #[test]
    fn ascii_sends_question_marks_above_0x7f() {
        assert_eq!(conv("ascii", b"a~\x7f").unwrap(), "a~\u{7f}");
        assert_eq!(conv("ascii", &[0x80, 0xE9, 0xFF]).unwrap(), "???");
        assert_eq!(
            r(Value::Bytes(b"a b".to_vec()), &text(11)).unwrap(),
            "a%20b"
        );
    }

    #[test]
    fn ucs2_utf16_utf32() {
        // ucs2: big-endian BMP code units; `ab` was rendered `%00a%00b` before.
        assert_eq!(
            r(Value::Bytes(vec![0, b'a', 0, b'b']), &text(35)).unwrap(),
            "ab"
        );
        assert_eq!(
            conv("ucs2", &[0x00, 0x43, 0x00, 0xE9, 0x20, 0xAC, 0x21, 0x22]).unwrap(),
            "Cé€™"
        );
        // MariaDB stores a lone surrogate in ucs2 and sends it as CESU bytes, which are not UTF-8.
        assert_eq!(conv("ucs2", &[0xD8, 0x00]), None);
        let mut u2 = text(35);
        u2.name = Some("u2".into());
        assert_eq!(
            cannot(Value::Bytes(vec![0, b'a', 0xD8, 0x00]), &u2).to_string(),
            "column u2: a ucs2 value (collation id 35) holds bytes the server would not send as \
             UTF-8 (a lone surrogate, or malformed)",
            "not a NULL: the caller must flush the table"
        );
        assert_eq!(conv("ucs2", &[0x00]), None, "odd length");
        // utf16: big-endian, surrogate pairs.
        assert_eq!(
            conv("utf16", &[0xD8, 0x3D, 0xDE, 0x00, 0x00, 0x61]).unwrap(),
            "😀a"
        );
        assert_eq!(
            conv("utf16", &[0xDE, 0x00, 0x00, 0x61]),
            None,
            "lone low surrogate"
        );
        assert_eq!(
            conv("utf16", &[0xD8, 0x3D, 0x00, 0x61]),
            None,
            "lone high surrogate"
        );
        assert_eq!(conv("utf16", &[0x00, 0x61, 0x00]), None, "odd length");
        // utf16le: little-endian, surrogate pairs.
        assert_eq!(
            conv("utf16le", &[0x3D, 0xD8, 0x00, 0xDE, 0x61, 0x00]).unwrap(),
            "😀a"
        );
        assert_eq!(
            r(Value::Bytes(vec![0xE9, 0x00, 0xAC, 0x20]), &text(56)).unwrap(),
            "é€"
        );
        // utf32: big-endian code points.
        assert_eq!(
            r(Value::Bytes(vec![0, 1, 0xF6, 0, 0, 0, 0, 0x20]), &text(60)).unwrap(),
            "😀%20"
        );
        assert_eq!(conv("utf32", &[0, 0x11, 0, 0]), None, "beyond U+10FFFF");
        assert_eq!(conv("utf32", &[0, 0, 0xD8, 0]), None, "a surrogate");
        assert_eq!(conv("utf32", &[0, 0, 0x61]), None, "not a multiple of 4");
        for (id, name) in [(90, "ucs2"), (54, "utf16"), (62, "utf16le"), (61, "utf32")] {
            assert_eq!(Charset::of_collation(id).unwrap().name(), name);
        }
    }

    #[test]
    fn utf8_as_is_and_never_hex() {
        for id in [
            33, 45, 46, 83, 192, 224, 255, 309, 576, 608, 1057, 1069, 2048, 2304,
        ] {
            assert_eq!(Charset::of_collation(id), Some(Charset::Utf8), "id {id}");
            assert_eq!(r(Value::Bytes("é😀".into()), &text(id)).unwrap(), "é😀");
        }
        // Not UTF-8 although the column says so (MariaDB keeps a utf8mb3 surrogate): no key
        // rather than a hex key the application never builds.
        // Distinct from NULL, which skips the key: the caller flushes the table instead.
        assert!(cannot(Value::Bytes(vec![0xED, 0xA0, 0x80]), &text(33))
            .reason
            .contains("lone surrogate"));
        assert!(cannot(Value::Bytes(vec![0xFF]), &text(45))
            .reason
            .contains("utf8"));
    }

    #[test]
    fn other_single_byte_charsets() {
        let cases: [(&str, &[u8], &str); 16] = [
            ("cp1250", &[0x8A, 0x9A, 0xA5, 0xB9, 0x80, 0x81], "ŠšĄą€?"),
            (
                "cp1251",
                &[0xCF, 0xF0, 0xE8, 0xE2, 0xE5, 0xF2, 0x88, 0x98],
                "Привет€?",
            ),
            ("cp1256", &[0xC7, 0xE1, 0x81], "\u{627}\u{644}\u{67E}"),
            ("cp1257", &[0xC0, 0xE0, 0xFB, 0x81], "Ąąū?"),
            ("latin2", &[0xA1, 0xB1, 0xC8, 0x80], "ĄąČ\u{80}"),
            ("greek", &[0xC1, 0xE1, 0xD3, 0xF9, 0xAE], "ΑαΣω?"),
            ("hebrew", &[0xE0, 0xFA, 0xC0], "\u{5D0}\u{5EA}?"),
            ("latin5", &[0xD0, 0xDD, 0xFE, 0xFD], "Ğİşı"),
            ("latin7", &[0xC0, 0xE0, 0xFF], "Ąą’"),
            (
                "koi8r",
                &[0xF0, 0xD2, 0xC9, 0xD7, 0xC5, 0xD4, 0xB3, 0xA3],
                "ПриветЁё",
            ),
            ("koi8u", &[0xA4, 0xB4, 0xA6, 0xAD], "єЄіґ"),
            ("cp866", &[0x8F, 0xE0, 0xF0], "ПрЁ"),
            ("cp850", &[0x82, 0x9C], "é£"),
            ("macroman", &[0x8E, 0xDB], "é€"),
            ("tis620", &[0xA1, 0xDB], "ก\u{FFFD}"),
            ("armscii8", &[0xB2, 0xB3], "Աա"),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(conv(name, bytes).unwrap(), want, "{name}");
        }
        // Every table keeps ASCII below 0x80.
        for name in [
            "cp1251", "koi8r", "tis620", "hp8", "dec8", "geostd8", "keybcs2", "macce",
        ] {
            let ascii: Vec<u8> = (0..0x80).collect();
            assert_eq!(conv(name, &ascii).unwrap().as_bytes(), &ascii[..], "{name}");
        }
    }

    #[test]
    fn unconvertible_charsets_and_unknown_collations_do_not_render() {
        for (id, name) in [
            (13, "sjis"),
            (95, "cp932"),
            (12, "ujis"),
            (97, "eucjpms"),
            (28, "gbk"),
            (24, "gb2312"),
            (248, "gb18030"),
            (1, "big5"),
            (19, "euckr"),
            (10, "swe7"),
        ] {
            assert_eq!(Charset::of_collation(id), Some(Charset::Unsupported(name)));
            let c = text(id);
            assert!(c.charset_problem().unwrap().contains(name));
            assert!(cannot(Value::Bytes(b"abc".to_vec()), &c)
                .reason
                .contains(name));
        }
        for id in [0, 17, 100, 251, 400, 1300, 3400, u16::MAX] {
            assert_eq!(Charset::of_collation(id), None, "id {id}");
            assert!(text(id).charset_problem().unwrap().contains("unknown"));
            assert!(cannot(Value::Bytes(b"abc".to_vec()), &text(id))
                .reason
                .contains("unknown"));
        }
        assert_eq!(text(8).charset_problem(), None);
        assert_eq!(col(MYSQL_TYPE_LONG).charset_problem(), None);
        // BINARY/VARBINARY/BLOB stay hex.
        assert_eq!(r(Value::Bytes(vec![0xE9]), &text(63)).unwrap(), "e9");
    }

    #[test]
    fn enum_and_set_names_are_converted_too() {
        assert_eq!(
            member_names(vec![b"Caf\xe9".to_vec(), b"\x80".to_vec()], Some(8)),
            ["Café", "€"]
        );
        assert_eq!(member_names(vec![vec![0, b'a', 0, 0xE9]], Some(35)), ["aé"]);
        let mut e = col(MYSQL_TYPE_ENUM);
        e.charset = Some(8);
        e.enum_values = Some(vec!["Café".into()]);
        assert_eq!(r(Value::Int(1), &e).unwrap(), "Café");
        e.charset = Some(13); // sjis: the names cannot be trusted
        assert!(cannot(Value::Int(1), &e).reason.contains("sjis"));
        let mut s = col(MYSQL_TYPE_SET);
        s.charset = Some(13);
        s.set_values = Some(vec!["a".into()]);
        assert!(cannot(Value::Bytes(vec![1]), &s).reason.contains("sjis"));
        s.set_values = None; // without names the bitmask is rendered, whatever the charset
        assert_eq!(r(Value::Bytes(vec![1]), &s).unwrap(), "1");
    }

    /// TIME2 as the server writes it (big-endian, 0x800000 offset, then the fraction), decoded by
    /// mysql_common as the binlog reader does, rendered for a TIME(`dec`) column.
    fn time2(disk: &[u8], dec: u8) -> String {
        use mysql_common::binlog::misc::{my_time_packed_from_binary, time_from_packed};
        let packed = my_time_packed_from_binary(disk, dec as u32).unwrap();
        let mut c = col(MYSQL_TYPE_TIME2);
        c.meta = vec![dec];
        r(time_from_packed(packed), &c).unwrap()
    }

    #[test]
    fn negative_time2_fractions_decode_as_the_server_wrote_them() {
        // The disk values of MySQL's my_time.cc (my_time_packed_from_binary, FSP 1 and 2): a
        // negative value's fraction byte counts down from 0x100. mysql_common 0.37.3 subtracted
        // 0x100 from an unsigned byte (a debug build panicked on the negative ones with a
        // non-zero fraction byte).
        for (disk, want) in [
            ([0x80, 0x00, 0x00, 0x00], "00:00:00.00"),
            ([0x7F, 0xFF, 0xFF, 0xFF], "-00:00:00.01"),
            ([0x7F, 0xFF, 0xFF, 0x9D], "-00:00:00.99"),
            ([0x7F, 0xFF, 0xFF, 0x00], "-00:00:01.00"),
            ([0x7F, 0xFF, 0xFE, 0xFF], "-00:00:01.01"),
            ([0x7F, 0xFF, 0xFE, 0xF6], "-00:00:01.10"),
        ] {
            assert_eq!(time2(&disk, 2), want, "{disk:02X?}");
        }
        // TIME(1) stores hundredths in the same byte: '-00:00:00.5', '-01:00:00.1', '12:00:00.9'.
        assert_eq!(time2(&[0x7F, 0xFF, 0xFF, 0xCE], 1), "-00:00:00.5");
        assert_eq!(time2(&[0x7F, 0xEF, 0xFF, 0xF6], 1), "-01:00:00.1");
        assert_eq!(time2(&[0x80, 0xC0, 0x00, 0x5A], 1), "12:00:00.9");
        assert_eq!(time2(&[0x7F, 0xFF, 0xFE, 0xE7], 2), "-00:00:01.25");
        // The other widths were right already: TIME(3)/(4) count down from 0x10000, TIME(5)/(6)
        // store the packed value itself, TIME(0) has no fraction.
        assert_eq!(time2(&[0x7F, 0xFF, 0xFF, 0xEC, 0x78], 3), "-00:00:00.500");
        assert_eq!(time2(&[0x7F, 0xFF, 0xFF, 0xFF, 0xFF], 4), "-00:00:00.0001");
        assert_eq!(
            time2(&[0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 6),
            "-00:00:00.000001"
        );
        assert_eq!(time2(&[0x7F, 0xFF, 0xFF], 0), "-00:00:01");
        assert_eq!(time2(&[0x4B, 0x91, 0x05], 0), "-838:59:59");
    }
}
