//! The per-transaction key buffer: collects the keys of one transaction until it commits, then
//! turns them into size-bounded [`Record`] chunks.
//!
//! Memory is bounded: keys are deduplicated in memory up to `max_buffered_keys`; past that the
//! buffered keys are appended to an anonymous temporary file and the in-memory set starts afresh
//! (so deduplication is per window; duplicates are harmless, deletes being idempotent). Nothing
//! leaves this buffer before the commit is seen. The spill file is deleted when the buffer is
//! dropped or reset. This module does file I/O only for spilling.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::PathBuf;

use invalidation::{
    key_encoded_len_bound, Change, Chunk, Operation, Record, SourcePosition, TableRef,
};

/// Identifies one (table, operation) group of a transaction.
type GroupId = u32;

/// Keys of the transaction being read.
#[derive(Debug)]
pub struct TxnBuffer {
    /// Group definitions in first-seen order; index = GroupId.
    groups: Vec<(Option<TableRef>, Operation)>,
    /// Lookup of a group's id.
    group_ids: HashMap<(Option<TableRef>, Operation), GroupId>,
    /// Keys seen in the current in-memory window (deduplication).
    seen: HashSet<Box<str>>,
    /// Keys of the current window in arrival order.
    pending: Vec<(GroupId, Box<str>)>,
    /// Where earlier windows went once `pending` reached `max_buffered_keys`.
    spill: Option<BufWriter<File>>,
    /// Keys written to the spill file.
    spilled: u64,
    /// Flush-table groups (they carry no keys but must be published).
    flushes: Vec<GroupId>,
    /// In-memory window size.
    max_buffered_keys: usize,
    /// Directory for the spill file (system temp dir when None).
    spill_dir: Option<PathBuf>,
}

/// Limits for chunking a transaction into records.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Most keys in one record.
    pub max_keys: usize,
    /// Most JSON bytes in one record (approximate upper bound; keys are never split).
    pub max_bytes: usize,
}

impl TxnBuffer {
    /// An empty buffer.
    pub fn new(max_buffered_keys: usize, spill_dir: Option<PathBuf>) -> Self {
        TxnBuffer {
            groups: Vec::new(),
            group_ids: HashMap::new(),
            seen: HashSet::new(),
            pending: Vec::new(),
            spill: None,
            spilled: 0,
            flushes: Vec::new(),
            max_buffered_keys,
            spill_dir,
        }
    }

    /// True when the transaction produced nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.spilled == 0 && self.flushes.is_empty()
    }

    /// Keys held (in memory plus spilled).
    pub fn len(&self) -> u64 {
        self.pending.len() as u64 + self.spilled
    }

    /// Keys written to disk so far (for metrics and tests).
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Forgets everything (rollback, or after the records were produced).
    pub fn reset(&mut self) {
        self.groups.clear();
        self.group_ids.clear();
        self.seen = HashSet::new();
        self.pending = Vec::new();
        self.spill = None;
        self.spilled = 0;
        self.flushes.clear();
    }

    fn group(&mut self, table: Option<TableRef>, op: Operation) -> GroupId {
        if let Some(id) = self.group_ids.get(&(table.clone(), op)) {
            return *id;
        }
        let id = self.groups.len() as GroupId;
        self.groups.push((table.clone(), op));
        self.group_ids.insert((table, op), id);
        id
    }

    /// Adds one key (deduplicated within the in-memory window).
    pub fn add_key(
        &mut self,
        table: Option<&TableRef>,
        op: Operation,
        key: String,
    ) -> io::Result<()> {
        if self.seen.contains(key.as_str()) {
            return Ok(());
        }
        let group = self.group(table.cloned(), op);
        let key: Box<str> = key.into_boxed_str();
        self.seen.insert(key.clone());
        self.pending.push((group, key));
        if self.pending.len() >= self.max_buffered_keys {
            self.spill_pending()?;
        }
        Ok(())
    }

    /// Records a flush of a whole table.
    pub fn add_flush(&mut self, table: TableRef) {
        let group = self.group(Some(table), Operation::FlushTable);
        if !self.flushes.contains(&group) {
            self.flushes.push(group);
        }
    }

    fn spill_pending(&mut self) -> io::Result<()> {
        if self.spill.is_none() {
            let file = match &self.spill_dir {
                Some(dir) => tempfile::tempfile_in(dir)?,
                None => tempfile::tempfile()?,
            };
            self.spill = Some(BufWriter::with_capacity(1 << 16, file));
        }
        let w = self.spill.as_mut().expect("just created");
        for (group, key) in self.pending.drain(..) {
            // Keys never contain '\n': rendered values and embedded keys are key-safe, templates
            // refuse whitespace.
            writeln!(w, "{group}\t{key}")?;
            self.spilled += 1;
        }
        self.seen = HashSet::new();
        self.pending = Vec::new();
        Ok(())
    }

    /// Turns the committed transaction into records; the buffer is empty afterwards.
    pub fn finish(
        &mut self,
        source: SourcePosition,
        commit_ts: u32,
        limits: ChunkLimits,
    ) -> io::Result<Chunker> {
        let spill = match self.spill.take() {
            Some(w) => {
                let mut file = w.into_inner().map_err(|e| e.into_error())?;
                file.rewind()?;
                Some(BufReader::with_capacity(1 << 16, file).lines())
            }
            None => None,
        };
        let chunker = Chunker {
            source,
            commit_ts,
            limits,
            groups: std::mem::take(&mut self.groups),
            flushes: std::mem::take(&mut self.flushes),
            spill,
            pending: std::mem::take(&mut self.pending).into_iter(),
            next_index: 0,
            lookahead: None,
            carry: None,
            done: false,
        };
        self.reset();
        Ok(chunker)
    }
}

/// Produces a committed transaction's records one by one, in order; the last has `last: true`.
pub struct Chunker {
    source: SourcePosition,
    commit_ts: u32,
    limits: ChunkLimits,
    groups: Vec<(Option<TableRef>, Operation)>,
    flushes: Vec<GroupId>,
    spill: Option<std::io::Lines<BufReader<File>>>,
    pending: std::vec::IntoIter<(GroupId, Box<str>)>,
    next_index: u32,
    /// A built record held back until we know whether another follows it.
    lookahead: Option<Record>,
    /// A key read but not fitting the previous record: it starts the next one.
    carry: Option<(GroupId, String)>,
    done: bool,
}

impl Chunker {
    fn next_key(&mut self) -> io::Result<Option<(GroupId, String)>> {
        if let Some(carried) = self.carry.take() {
            return Ok(Some(carried));
        }
        if let Some(lines) = &mut self.spill {
            match lines.next() {
                Some(line) => {
                    let line = line?;
                    let (g, k) = line.split_once('\t').ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "corrupt spill line")
                    })?;
                    let g: GroupId = g.parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "corrupt spill group")
                    })?;
                    return Ok(Some((g, k.to_owned())));
                }
                None => self.spill = None,
            }
        }
        Ok(self.pending.next().map(|(g, k)| (g, k.into_string())))
    }

    fn build(&mut self) -> io::Result<Option<Record>> {
        let mut record = Record {
            version: invalidation::SCHEMA_VERSION,
            source: self.source.clone(),
            commit_ts: self.commit_ts,
            chunk: Chunk {
                index: 0,
                last: false,
            },
            changes: Vec::new(),
        };
        let empty_bytes = record.envelope_len() + 16;
        let mut bytes = empty_bytes;
        let mut keys = 0usize;
        if self.next_index == 0 {
            for g in std::mem::take(&mut self.flushes) {
                let (table, _) = self.groups[g as usize].clone();
                let change = Change::flush_table(table.expect("flush groups name a table"));
                bytes += change.encoded_len_bound();
                record.changes.push(change);
            }
        }
        let mut current: Option<GroupId> = None;
        while keys < self.limits.max_keys {
            let Some((g, key)) = self.next_key()? else {
                break;
            };
            let cost = key_encoded_len_bound(&key);
            let group_cost = if current == Some(g) {
                0
            } else {
                64 + self.group_cost(g)
            };
            if bytes + cost + group_cost > self.limits.max_bytes {
                // `cost` is a bound: measure what the key costs alone in an empty record. A key
                // that no record can hold would be refused by Kafka (`message.max.bytes` is
                // `max_record_bytes` + 4 KiB) and stop squeal at every restart, holding every
                // later invalidation: its table is flushed instead, as for a key that cannot be
                // rendered. An embedded key (no table) is published as it is.
                let exact = serde_json::to_string(&key).map_or(usize::MAX, |json| json.len() + 1);
                let alone = (empty_bytes + 64 + self.group_cost(g)).saturating_add(exact);
                if alone > self.limits.max_bytes {
                    if let Some(table) = self.groups[g as usize].0.clone() {
                        let flush = Change::flush_table(table.clone());
                        // Once per record and table: a transaction may hold many such keys.
                        if !record.changes.contains(&flush) {
                            tracing::error!(
                                table = %table,
                                key_bytes = key.len(),
                                max_record_bytes = self.limits.max_bytes,
                                "a key longer than a record can hold; publishing flush_table for its table"
                            );
                            bytes += flush.encoded_len_bound();
                            record.changes.push(flush);
                        }
                        current = None;
                        continue;
                    }
                }
                if keys > 0 || !record.changes.is_empty() {
                    // Put it back by starting the next record with it.
                    self.carry = Some((g, key));
                    break;
                }
            }
            bytes += cost + group_cost;
            if current != Some(g) {
                let (table, op) = self.groups[g as usize].clone();
                record.changes.push(Change {
                    table,
                    op,
                    keys: Vec::new(),
                });
                current = Some(g);
            }
            record.changes.last_mut().expect("pushed").keys.push(key);
            keys += 1;
        }
        if record.changes.is_empty() && self.next_index > 0 {
            return Ok(None);
        }
        record.chunk.index = self.next_index;
        self.next_index += 1;
        Ok(Some(record))
    }

    fn group_cost(&self, g: GroupId) -> usize {
        self.groups[g as usize]
            .0
            .as_ref()
            .map_or(0, |t| 2 * (t.db.len() + t.name.len()) + 24)
    }

    /// The next record, or `None` when all were produced.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        if self.lookahead.is_none() {
            self.lookahead = self.build()?;
        }
        let Some(mut current) = self.lookahead.take() else {
            self.done = true;
            return Ok(None);
        };
        self.lookahead = self.build()?;
        if self.lookahead.is_none() {
            current.chunk.last = true;
            self.done = true;
        }
        Ok(Some(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> SourcePosition {
        SourcePosition {
            server_id: 1,
            file: "b.000001".into(),
            pos: 99,
            gtid: None,
        }
    }

    fn all(mut c: Chunker) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(r) = c.next_record().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn dedupes_groups_and_marks_the_last_chunk() {
        let users = TableRef::new("d", "users");
        let mut b = TxnBuffer::new(1000, None);
        b.add_key(Some(&users), Operation::Insert, "user:1".into())
            .unwrap();
        b.add_key(Some(&users), Operation::Update, "user:1".into())
            .unwrap();
        b.add_key(Some(&users), Operation::Update, "user:2".into())
            .unwrap();
        b.add_key(None, Operation::Embedded, "feed:7".into())
            .unwrap();
        b.add_flush(TableRef::new("d", "posts"));
        let limits = ChunkLimits {
            max_keys: 1000,
            max_bytes: 1 << 20,
        };
        let records = all(b.finish(pos(), 5, limits).unwrap());
        assert!(b.is_empty());
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert!(r.chunk.last);
        assert_eq!(r.keys().collect::<Vec<_>>(), ["user:1", "user:2", "feed:7"]);
        assert_eq!(r.changes[0].op, Operation::FlushTable);
        assert_eq!(r.changes[1].op, Operation::Insert);
        assert_eq!(r.changes[2].op, Operation::Update);
        assert_eq!(r.changes[3].op, Operation::Embedded);
    }

    #[test]
    fn spills_past_the_window_and_chunks_in_order_within_limits() {
        let t = TableRef::new("d", "t");
        let mut b = TxnBuffer::new(100, None);
        for i in 0..2_500u32 {
            b.add_key(Some(&t), Operation::Delete, format!("k:{i}"))
                .unwrap();
        }
        assert_eq!(b.spilled(), 2_500, "every full window went to disk");
        let limits = ChunkLimits {
            max_keys: 300,
            max_bytes: 4096,
        };
        let records = all(b.finish(pos(), 5, limits).unwrap());
        let keys: Vec<String> = records
            .iter()
            .flat_map(|r| r.keys().map(str::to_owned))
            .collect();
        let expected: Vec<String> = (0..2_500).map(|i| format!("k:{i}")).collect();
        assert_eq!(
            keys, expected,
            "order kept, nothing lost across spill and chunks"
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.chunk.index as usize, i);
            assert_eq!(r.chunk.last, i == records.len() - 1);
            assert!(
                r.to_json().len() <= 4096,
                "record {i} is {} bytes",
                r.to_json().len()
            );
            assert!(r.keys().count() <= 300);
        }
        assert!(records.len() >= 2_500 / 300);
    }

    /// A key that no record can hold (Kafka would refuse it, and squeal would stop on it at every
    /// restart) gives its table's flush instead, once per record; a key whose escaping bound is
    /// over the limit but whose JSON fits is published; an embedded key (no table to flush) is
    /// published as it is. Without the flush, the 5,000-byte keys are published alone in records
    /// over the limit, and this test fails.
    #[test]
    fn a_key_no_record_can_hold_flushes_its_table_instead() {
        let docs = TableRef::new("d", "docs");
        let mut b = TxnBuffer::new(100, None);
        let fits = "a".repeat(3000);
        for key in [
            "doc:1".to_string(),
            "x".repeat(5000),
            "y".repeat(5000),
            fits.clone(),
            "doc:2".to_string(),
        ] {
            b.add_key(Some(&docs), Operation::Update, key).unwrap();
        }
        let embedded = "z".repeat(5000);
        b.add_key(None, Operation::Embedded, embedded.clone())
            .unwrap();
        let limits = ChunkLimits {
            max_keys: 1000,
            max_bytes: 4096,
        };
        let records = all(b.finish(pos(), 5, limits).unwrap());
        // Compared by first letter and length: a failure prints no 5,000-byte keys.
        let short = |k: &str| (k.chars().next(), k.len());
        let keys: Vec<_> = records.iter().flat_map(|r| r.keys()).map(short).collect();
        let expected: Vec<_> = ["doc:1", fits.as_str(), "doc:2", embedded.as_str()]
            .into_iter()
            .map(short)
            .collect();
        assert_eq!(keys, expected);
        let flushes: Vec<&TableRef> = records.iter().flat_map(|r| r.flushed_tables()).collect();
        assert_eq!(flushes, [&docs], "one flush for the two long keys");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.chunk.index as usize, i);
            assert_eq!(r.chunk.last, i == records.len() - 1);
            let len = r.to_json().len();
            let holds_embedded = r.keys().any(|k| k == embedded);
            assert!(holds_embedded || len <= 4096, "record {i} is {len} bytes");
        }
    }

    #[test]
    fn flush_only_transaction_gives_one_record() {
        let mut b = TxnBuffer::new(10, None);
        assert!(b.is_empty());
        b.add_flush(TableRef::new("d", "t"));
        b.add_flush(TableRef::new("d", "t"));
        let records = all(b
            .finish(
                pos(),
                0,
                ChunkLimits {
                    max_keys: 10,
                    max_bytes: 4096,
                },
            )
            .unwrap());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].flushed_tables().count(), 1);
        assert!(records[0].chunk.last);
    }
}
