//! Property tests of squeal's pure parts: decoders never panic on arbitrary bytes, rendered and
//! embedded keys are always key-safe, and chunked records respect their limits without losing or
//! reordering keys.

use invalidation::{Operation, SourcePosition, TableRef};
use proptest::prelude::*;
use squeal::events::{
    classify_statement, decode_mariadb_gtid, decode_mariadb_gtid_list, embedded_keys,
};
use squeal::render::key_safe;
use squeal::txn::{ChunkLimits, TxnBuffer};

fn is_key_safe(k: &str) -> bool {
    !k.bytes().any(|b| b <= 0x20 || b == 0x7F)
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_mariadb_gtid(&bytes, 1);
        let _ = decode_mariadb_gtid_list(&bytes);
    }

    #[test]
    fn statements_never_panic_and_embedded_keys_are_key_safe(sql in ".{0,200}") {
        let _ = classify_statement(&sql);
        for k in embedded_keys(&sql) {
            prop_assert!(is_key_safe(&k), "{k:?}");
            prop_assert!(!k.is_empty());
        }
    }

    #[test]
    fn key_safe_output_is_safe_and_distinct_inputs_stay_distinct(a in ".{0,40}", b in ".{0,40}") {
        let (ka, kb) = (key_safe(&a), key_safe(&b));
        prop_assert!(is_key_safe(&ka));
        // Injective: '%' itself is escaped, so different values never render the same key.
        prop_assert_eq!(a == b, ka == kb);
    }

    #[test]
    fn chunks_respect_limits_keep_order_and_lose_nothing(
        keys in proptest::collection::vec("[a-z0-9:]{1,30}", 1..400),
        window in 1usize..50,
        max_keys in 1usize..60,
        max_bytes in 4096usize..8192,
    ) {
        let table = TableRef::new("d", "t");
        let mut buffer = TxnBuffer::new(window, None);
        for (i, k) in keys.iter().enumerate() {
            let op = if i % 2 == 0 { Operation::Insert } else { Operation::Delete };
            buffer.add_key(Some(&table), op, k.clone()).unwrap();
        }
        let source = SourcePosition { server_id: 1, file: "f.000001".into(), pos: 9, gtid: None };
        let mut chunker = buffer.finish(source, 0, ChunkLimits { max_keys, max_bytes }).unwrap();
        let mut out = Vec::new();
        let mut records = Vec::new();
        while let Some(r) = chunker.next_record().unwrap() {
            prop_assert!(r.keys().count() <= max_keys);
            prop_assert!(r.to_json().len() <= max_bytes, "{} > {max_bytes}", r.to_json().len());
            out.extend(r.keys().map(str::to_owned));
            records.push(r);
        }
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.chunk.index as usize, i);
            prop_assert_eq!(r.chunk.last, i + 1 == records.len());
        }
        // Deduplication is per in-memory window: every distinct key appears, first occurrences in order.
        let mut first_seen = Vec::new();
        for k in &keys {
            if !first_seen.contains(k) {
                first_seen.push(k.clone());
            }
        }
        let mut out_first = Vec::new();
        for k in &out {
            if !out_first.contains(k) {
                out_first.push(k.clone());
            }
        }
        prop_assert_eq!(out_first, first_seen);
    }
}
