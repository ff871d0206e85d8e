//! The invalidation record that squeal publishes to Kafka and every regional invalidator consumes.
//!
//! One definition shared by producer and consumers. It holds no I/O and depends on neither MySQL nor
//! Kafka: a record is plain data plus its JSON encoding ([`Record::to_json`], [`Record::from_json`]).
//!
//! # Model
//!
//! squeal publishes one or more records per committed transaction (a *chunk* each, so no record grows
//! without bound). Every record carries the source position of the transaction's commit, the server
//! id, the GTID when known and the commit timestamp, and a list of [`Change`]s: for one table and one
//! [`Operation`], the cache keys that the transaction made stale. Keys are deduplicated within the
//! transaction as far as squeal's bounded buffer allows; duplicates are harmless (deletes are
//! idempotent). The records of one transaction share a Kafka key and so a partition, and arrive in
//! chunk order; the record with `last: true` closes the transaction.
//!
//! A [`Operation::FlushTable`] change (TRUNCATE or DROP of a ruled table) carries no keys: it tells
//! invalidators that every key derived from that table may be stale. What they do with it (flush a
//! key prefix, flush the whole cache, alert) is their configuration.
//!
//! # Example
//!
//! ```
//! use invalidation::{Change, Chunk, Gtid, Operation, Record, SourcePosition, TableRef};
//!
//! let record = Record {
//!     version: invalidation::SCHEMA_VERSION,
//!     source: SourcePosition {
//!         server_id: 1,
//!         file: "mariadb-bin.000003".into(),
//!         pos: 1234,
//!         gtid: Some("0-1-42".parse().unwrap()),
//!     },
//!     commit_ts: 1_700_000_000,
//!     chunk: Chunk { index: 0, last: true },
//!     changes: vec![Change {
//!         table: Some(TableRef::new("squeal_demo", "users")),
//!         op: Operation::Update,
//!         keys: vec!["user:42".into(), "user:email:a@example.com".into()],
//!     }],
//! };
//! let json = record.to_json();
//! assert_eq!(
//!     std::str::from_utf8(&json).unwrap(),
//!     r#"{"v":1,"source":{"server_id":1,"file":"mariadb-bin.000003","pos":1234,"gtid":"0-1-42"},"commit_ts":1700000000,"chunk":{"index":0,"last":true},"changes":[{"table":{"db":"squeal_demo","name":"users"},"op":"update","keys":["user:42","user:email:a@example.com"]}]}"#
//! );
//! let back = Record::from_json(&json).unwrap();
//! assert_eq!(back, record);
//! assert_eq!(back.source.gtid, Some(Gtid::MariaDb { domain: 0, server: 1, seq: 42 }));
//! assert_eq!(back.keys().collect::<Vec<_>>(), ["user:42", "user:email:a@example.com"]);
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version squeal writes. Consumers accept records whose `v` is at most this; a newer
/// major version is refused with [`DecodeError::UnsupportedVersion`] rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

/// Recommended upper bound of one encoded record, below Kafka's default `message.max.bytes` (1 MB).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 512 * 1024;

/// One Kafka record: a chunk of the keys one committed transaction made stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version ([`SCHEMA_VERSION`]); lets consumers refuse what they cannot read.
    #[serde(rename = "v")]
    pub version: u32,
    /// Where the transaction committed in the source's binlog; also the replica wait target.
    pub source: SourcePosition,
    /// Commit time on the source, seconds since the Unix epoch (binlog event header resolution).
    pub commit_ts: u32,
    /// Position of this record among the transaction's records.
    pub chunk: Chunk,
    /// The stale keys, grouped by table and operation.
    pub changes: Vec<Change>,
}

/// Binlog coordinates of a transaction's commit event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourcePosition {
    /// `server_id` of the server that wrote the binlog event (the primary, even when read from a replica).
    pub server_id: u32,
    /// Binlog file name, e.g. `mariadb-bin.000003`.
    pub file: String,
    /// End position of the commit event in `file` (where the next transaction starts).
    pub pos: u64,
    /// The transaction's GTID, when the server assigns them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<Gtid>,
}

/// Chunk index and end flag: a transaction of many keys is split over several records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based index of this record within its transaction.
    pub index: u32,
    /// True on the transaction's final record.
    pub last: bool,
}

/// The keys made stale by one operation on one table (or embedded in a statement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The table; `None` for [`Operation::Embedded`] keys, which name no table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableRef>,
    /// What happened.
    pub op: Operation,
    /// Rendered cache keys; empty for [`Operation::FlushTable`].
    #[serde(default)]
    pub keys: Vec<String>,
}

/// A table, by database and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    /// Database (schema) name.
    pub db: String,
    /// Table name.
    pub name: String,
}

impl TableRef {
    /// A table reference from database and table names.
    pub fn new(db: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef {
            db: db.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.name)
    }
}

/// The kind of change behind a group of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Row inserted: keys rendered from the after image.
    Insert,
    /// Row updated: keys rendered from both the before and the after image.
    Update,
    /// Row deleted: keys rendered from the before image.
    Delete,
    /// TRUNCATE or DROP of a ruled table (or a rule that could no longer be rendered): every key of
    /// the table may be stale. Carries no keys.
    FlushTable,
    /// Keys named in a `/* squeal:invalidate k1,k2 */` comment of a statement.
    Embedded,
}

impl Operation {
    /// The name a record carries for it (`"flush_table"`), for output meant for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::FlushTable => "flush_table",
            Operation::Embedded => "embedded",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A global transaction id, as MariaDB (`domain-server-seq`) or MySQL (`uuid:gno`) writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gtid {
    /// MariaDB GTID `domain-server-seq`, e.g. `0-1-42`.
    MariaDb {
        /// Replication domain id.
        domain: u32,
        /// Server id of the originating server.
        server: u32,
        /// Sequence number within the domain.
        seq: u64,
    },
    /// MySQL GTID `source_uuid:transaction_id`, e.g. `3e11fa47-71ca-11e1-9e33-c80aa9429562:23`.
    MySql {
        /// Source server UUID (16 bytes).
        uuid: [u8; 16],
        /// Transaction number.
        gno: u64,
    },
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::MariaDb {
                domain,
                server,
                seq,
            } => write!(f, "{domain}-{server}-{seq}"),
            Gtid::MySql { uuid, gno } => {
                for (i, b) in uuid.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                write!(f, ":{gno}")
            }
        }
    }
}

/// A string that is not a GTID in either form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GTID (expected MariaDB `domain-server-seq` or MySQL `uuid:n`): {0:?}")]
pub struct GtidParseError(pub String);

impl FromStr for Gtid {
    type Err = GtidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GtidParseError(s.to_owned());
        if let Some((uuid_text, gno)) = s.split_once(':') {
            let gno: u64 = gno.parse().map_err(|_| bad())?;
            let hex: Vec<u8> = uuid_text.bytes().filter(|b| *b != b'-').collect();
            if hex.len() != 32 || uuid_text.len() != 36 {
                return Err(bad());
            }
            let mut uuid = [0u8; 16];
            for (i, pair) in hex.chunks(2).enumerate() {
                let text = std::str::from_utf8(pair).map_err(|_| bad())?;
                uuid[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
            }
            return Ok(Gtid::MySql { uuid, gno });
        }
        let mut parts = s.split('-');
        let (Some(d), Some(sv), Some(q), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Gtid::MariaDb {
            domain: d.parse().map_err(|_| bad())?,
            server: sv.parse().map_err(|_| bad())?,
            seq: q.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for Gtid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Gtid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why bytes could not be read as a [`Record`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of another shape.
    #[error("invalid invalidation record: {0}")]
    Json(#[from] serde_json::Error),
    /// Written by a newer squeal whose schema this consumer does not know.
    #[error("invalidation record schema v{found} is newer than supported v{supported}")]
    UnsupportedVersion {
        /// The version in the record.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
}

impl Record {
    /// Encodes the record as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Record always serializes")
    }

    /// Decodes a record, refusing schema versions newer than [`SCHEMA_VERSION`].
    ///
    /// Unknown fields are ignored so that additive changes within a version stay readable.
    pub fn from_json(bytes: &[u8]) -> Result<Record, DecodeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        let VersionOnly { v } = serde_json::from_slice(bytes)?;
        if v > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// All keys in this record, in order (flush-table changes contribute none).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.changes
            .iter()
            .flat_map(|c| c.keys.iter().map(String::as_str))
    }

    /// Tables flushed by this record (TRUNCATE/DROP).
    pub fn flushed_tables(&self) -> impl Iterator<Item = &TableRef> {
        self.changes
            .iter()
            .filter(|c| c.op == Operation::FlushTable)
            .filter_map(|c| c.table.as_ref())
    }

    /// The JSON size of a record with these fields and no changes (for chunking).
    pub fn envelope_len(&self) -> usize {
        let mut empty = self.clone();
        empty.changes.clear();
        empty.to_json().len()
    }
}

impl Change {
    /// A flush-table change for `table`.
    pub fn flush_table(table: TableRef) -> Change {
        Change {
            table: Some(table),
            op: Operation::FlushTable,
            keys: Vec::new(),
        }
    }

    /// Bytes this change adds to a record's JSON (an upper bound, used for chunking).
    pub fn encoded_len_bound(&self) -> usize {
        // 64 covers the object punctuation, field names and op; keys cost their escaped text + 3.
        let table = self
            .table
            .as_ref()
            .map_or(0, |t| 2 * (t.db.len() + t.name.len()) + 24);
        64 + table
            + self
                .keys
                .iter()
                .map(|k| key_encoded_len_bound(k))
                .sum::<usize>()
    }
}

/// Upper bound of the JSON bytes a key costs inside a `keys` array (quotes, comma, escapes).
pub fn key_encoded_len_bound(key: &str) -> usize {
    // A control character escapes to at most 6 bytes (\u00XX); anything else to at most 2.
    3 + key
        .bytes()
        .map(|b| if b < 0x20 { 6 } else { 2 })
        .sum::<usize>()
        .min(6 * key.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            version: SCHEMA_VERSION,
            source: SourcePosition {
                server_id: 7,
                file: "binlog.000001".into(),
                pos: 4,
                gtid: Some(Gtid::MySql {
                    uuid: [
                        0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a,
                        0xa9, 0x42, 0x95, 0x62,
                    ],
                    gno: 23,
                }),
            },
            commit_ts: 1,
            chunk: Chunk {
                index: 2,
                last: false,
            },
            changes: vec![
                Change {
                    table: Some(TableRef::new("d", "t")),
                    op: Operation::Delete,
                    keys: vec!["a".into(), "quote\"and\\slash".into(), "é".into()],
                },
                Change::flush_table(TableRef::new("d", "u")),
                Change {
                    table: None,
                    op: Operation::Embedded,
                    keys: vec!["feed:7".into()],
                },
            ],
        }
    }

    #[test]
    fn round_trips_every_operation_and_gtid_form() {
        let record = sample();
        let json = record.to_json();
        assert_eq!(Record::from_json(&json).unwrap(), record);
        let text = String::from_utf8(json).unwrap();
        assert!(
            text.contains(r#""gtid":"3e11fa47-71ca-11e1-9e33-c80aa9429562:23""#),
            "{text}"
        );
        assert!(text.contains(r#""op":"flush_table""#), "{text}");
        assert!(text.contains(r#""op":"embedded""#), "{text}");
        for op in [
            Operation::Insert,
            Operation::Update,
            Operation::Delete,
            Operation::FlushTable,
            Operation::Embedded,
        ] {
            let s = serde_json::to_string(&op).unwrap();
            assert_eq!(serde_json::from_str::<Operation>(&s).unwrap(), op);
            // The name people read (Display, the demo's output) is the record's.
            assert_eq!(s, format!("\"{op}\""));
        }
    }

    #[test]
    fn gtid_text_forms_parse_and_print_identically() {
        for text in [
            "0-1-42",
            "4294967295-2-18446744073709551615",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1",
        ] {
            let gtid: Gtid = text.parse().unwrap();
            assert_eq!(gtid.to_string(), text);
        }
        for bad in [
            "",
            "0-1",
            "0-1-2-3",
            "x-1-2",
            "3e11fa47:1",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:x",
        ] {
            assert!(bad.parse::<Gtid>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn newer_schema_version_is_refused_and_unknown_fields_ignored() {
        let mut value: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        value["future_field"] = serde_json::json!(true);
        let with_extra = serde_json::to_vec(&value).unwrap();
        assert_eq!(Record::from_json(&with_extra).unwrap(), sample());
        value["v"] = serde_json::json!(SCHEMA_VERSION + 1);
        let newer = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            Record::from_json(&newer),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        assert!(matches!(Record::from_json(b"{"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn encoded_len_bound_is_an_upper_bound() {
        let record = sample();
        let total: usize = record.envelope_len()
            + record
                .changes
                .iter()
                .map(Change::encoded_len_bound)
                .sum::<usize>();
        assert!(total >= record.to_json().len());
        let ctl = "\u{1}\u{2}";
        assert!(key_encoded_len_bound(ctl) > serde_json::to_string(ctl).unwrap().len());
    }

    #[test]
    fn accessors_list_keys_and_flushed_tables() {
        let record = sample();
        assert_eq!(
            record.keys().collect::<Vec<_>>(),
            ["a", "quote\"and\\slash", "é", "feed:7"]
        );
        assert_eq!(
            record.flushed_tables().collect::<Vec<_>>(),
            [&TableRef::new("d", "u")]
        );
    }
}
