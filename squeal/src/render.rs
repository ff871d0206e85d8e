//! Canonical rendering of binlog column values into cache-key text.
//!
//! One rendering per column type, documented in the README ("Rendering"), so that applications can
//! build the same keys when they fill the cache:
//!
//! | type | rendering |
//! | --- | --- |
//! | TINYINT..BIGINT | decimal, `-` for negatives; UNSIGNED columns never negative (`18446744073709551615`) |
//! | DECIMAL | fixed point with exactly the column's scale: `DECIMAL(10,2)` 1.5 → `1.50` |
//! | FLOAT, DOUBLE | shortest text that reads back to the same value, no exponent: `0.1`, `1e20` → `100000000000000000000` |
//! | CHAR, VARCHAR, TEXT (any non-binary charset) | the text as UTF-8 (latin1 converted) |
//! | BINARY, VARBINARY, BLOB, GEOMETRY, and text that is not valid UTF-8 | lowercase hex, no prefix |
//! | DATE | `YYYY-MM-DD` |
//! | DATETIME | `YYYY-MM-DDTHH:MM:SS`, then `.` and exactly fsp digits when the column has fractional seconds |
//! | TIMESTAMP | seconds since the Unix epoch (time-zone free), then `.` and fsp digits if any |
//! | TIME | `[-]HH:MM:SS` (hours may exceed 24), fraction as DATETIME |
//! | YEAR | four digits |
//! | BIT | the unsigned integer value in decimal |
//! | ENUM | the member's name (its 1-based index when the server did not log names) |
//! | SET | member names in definition order joined with `,` (the bitmask as a decimal integer without names) |
//! | JSON (MySQL binary JSON) | compact JSON, object keys sorted; MariaDB's JSON is text and rendered as text |
//! | NULL | no value: the template yields no key |
//!
//! Every rendered value is then made key-safe: the bytes 0x00–0x20 (controls and space), 0x7F and
//! `%` are written `%XX` (uppercase hex), so a key never contains whitespace or control characters.
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
    /// Charset collation id for character columns, when logged.
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
const LATIN1_CHARSETS: [u16; 8] = [5, 8, 15, 31, 47, 48, 49, 94];

impl TableShape {
    /// Reads the layout from a table map event, including optional metadata where present.
    pub fn from_table_map(tme: &TableMapEvent<'_>) -> std::io::Result<TableShape> {
        let count = tme.columns_count() as usize;
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut names = extractor.iter_column_name();
        let mut enum_names: Vec<Vec<String>> = Vec::new();
        let mut set_names: Vec<Vec<String>> = Vec::new();
        for field in tme.iter_optional_meta() {
            match field? {
                OptionalMetadataField::EnumStrValue(values) => {
                    for v in values.iter_values() {
                        let v = v?;
                        enum_names
                            .push(v.values().iter().map(|x| x.value().into_owned()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for v in values.iter_values() {
                        let v = v?;
                        set_names.push(v.values().iter().map(|x| x.value().into_owned()).collect());
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
            } else {
                None
            };
            let name = names.next().transpose()?.map(|n| n.name().to_lowercase());
            let enum_values = if ty.is_enum_type() {
                enum_names.next()
            } else {
                None
            };
            let set_values = if ty.is_set_type() {
                set_names.next()
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

/// Renders one value for a key; `None` for SQL NULL. The result is already key-safe.
pub fn render(value: &BinlogValue<'_>, col: &ColumnShape) -> Option<String> {
    let raw = match value {
        BinlogValue::Value(Value::NULL) => return None,
        BinlogValue::Value(v) => render_plain(v, col),
        BinlogValue::Jsonb(j) => match serde_json::Value::try_from(j.clone()) {
            Ok(json) => canonical_json(&json),
            Err(_) => format!("{j:?}"),
        },
        // Partial JSON updates only appear in the after image of MySQL's PARTIAL_UPDATE_ROWS_EVENT
        // with binlog_row_value_options=PARTIAL_JSON; a key over a JSON column cannot be rendered
        // from a diff, so the hex of nothing would be wrong: say so in the key (never silently).
        BinlogValue::JsonDiff(_) => "%JSONDIFF".to_owned(),
    };
    Some(key_safe(&raw))
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

fn render_plain(v: &Value, col: &ColumnShape) -> String {
    use ColumnType::*;
    match (col.ty, v) {
        (
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG,
            Value::Int(i),
        ) => {
            if col.unsigned && *i < 0 {
                let u = match col.ty {
                    MYSQL_TYPE_TINY => *i as u8 as u64,
                    MYSQL_TYPE_SHORT => *i as u16 as u64,
                    MYSQL_TYPE_INT24 => (*i as u64) & 0xFF_FFFF,
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
        (MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL | MYSQL_TYPE_YEAR, Value::Bytes(b)) => {
            String::from_utf8_lossy(b).into_owned()
        }
        (MYSQL_TYPE_GEOMETRY, Value::Bytes(b)) => hex(b),
        (_, Value::Bytes(b)) => render_text(b, col),
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
    }
}

fn render_text(bytes: &[u8], col: &ColumnShape) -> String {
    match col.charset {
        Some(BINARY_CHARSET) => hex(bytes),
        Some(cs) if LATIN1_CHARSETS.contains(&cs) => bytes.iter().map(|&b| b as char).collect(),
        _ if !col.ty.is_character_type() && !col.ty.is_enum_or_set_type() => hex(bytes),
        _ => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => hex(bytes),
        },
    }
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

    fn r(v: Value, c: &ColumnShape) -> Option<String> {
        render(&BinlogValue::Value(v), c)
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
}
