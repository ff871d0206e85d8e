//! Client flags are stored only when nonzero (memcached's `ITEM_CFLAGS`): a flagless chunk has no
//! flags field and its key starts 4 bytes earlier. These tests mix flagless and flagged items
//! (including `u32::MAX`) in the same pages and check flags, key and value through every path
//! that reads or writes a chunk: insert, meta read, meta update, multi-part (append-style)
//! insert, replacement in both directions, eviction (item and whole-page), the background
//! expiry page walk and the too-large limit.
//!
//! Shown to fail without the protections: with `Slab::body_offset` ignoring the has-flags bit
//! (key written over the flags), or with `Shard::update_meta` dropping that bit (a read or a
//! touch makes the key read 4 bytes early: lookups miss, eviction panics on an unindexed item),
//! the first three tests fail.

use std::sync::Arc;

use cache_node::clock::ManualClock;
use cache_node::store::{ItemMeta, NewItem, Store, StoreConfig, StoreError};

const FLAGS: [u32; 5] = [0, 1, 0x8000_0000, 0xdead_beef, u32::MAX];

fn store(limit: usize, clock: &Arc<ManualClock>) -> Store {
    Store::new(
        StoreConfig {
            memory_limit_bytes: limit,
            shards: 1,
            ..StoreConfig::default()
        },
        clock.clone(),
    )
}

fn try_put(
    s: &Store,
    key: &[u8],
    parts: &[&[u8]],
    flags: u32,
    exptime: u32,
) -> Result<(), StoreError> {
    s.with_entry(key, |e| {
        e.insert(NewItem {
            value: parts,
            flags,
            exptime,
            cas: 0,
            stale: false,
            win_sent: false,
            placeholder: false,
        })
    })
}

fn put(s: &Store, key: &[u8], parts: &[&[u8]], flags: u32, exptime: u32) {
    try_put(s, key, parts, flags, exptime).expect("insert within budget");
}

fn get(s: &Store, key: &[u8]) -> Option<(Vec<u8>, ItemMeta)> {
    s.with_entry(key, |e| {
        e.item().map(|it| (it.value().to_vec(), *it.meta()))
    })
}

/// A value that differs per item, so a chunk read at the wrong offset cannot pass.
fn value_for(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect()
}

fn flags_for(i: usize) -> u32 {
    FLAGS[i % FLAGS.len()]
}

#[test]
fn flags_round_trip_through_insert_meta_update_append_and_replacement() {
    let clock = Arc::new(ManualClock::new(1_000));
    let s = store(16 << 20, &clock);
    // Neighbours in the same pages: a write at a wrong offset would show in the others.
    for (i, &flags) in FLAGS.iter().enumerate() {
        put(&s, format!("key{i}").as_bytes(), &[b"hello"], flags, 0);
    }
    for (i, &flags) in FLAGS.iter().enumerate() {
        let key = format!("key{i}");
        let (v, m) = get(&s, key.as_bytes()).expect("stored");
        assert_eq!((&v[..], m.flags), (&b"hello"[..], flags), "{key} insert");

        // A read access and an in-place meta update (touch, stale, new CAS) keep flags and body.
        s.with_entry(key.as_bytes(), |e| {
            e.record_read();
            let mut m = e.meta_mut().expect("live");
            m.exptime = 5_000;
            m.stale = true;
            m.cas = 77;
        });
        let (v, m) = get(&s, key.as_bytes()).expect("still there");
        assert_eq!(&v[..], b"hello", "{key} value after meta update");
        assert_eq!(
            (m.flags, m.exptime, m.stale, m.cas, m.fetched),
            (flags, 5_000, true, 77, true),
            "{key} meta after update"
        );

        // Append as the server does it: old value and suffix as parts, the old flags kept.
        s.with_entry(key.as_bytes(), |e| {
            let (old, m) = {
                let it = e.item().expect("live");
                (it.value().to_vec(), *it.meta())
            };
            e.insert(NewItem {
                value: &[&old, b" world"],
                flags: m.flags,
                exptime: m.exptime,
                cas: 0,
                stale: false,
                win_sent: false,
                placeholder: false,
            })
        })
        .expect("append");
        let (v, m) = get(&s, key.as_bytes()).expect("appended");
        assert_eq!(
            (&v[..], m.flags),
            (&b"hello world"[..], flags),
            "{key} append"
        );

        // Replacement that adds or drops the flags field (and changes the value length).
        let other = if flags == 0 { u32::MAX } else { 0 };
        put(&s, key.as_bytes(), &[b"x"], other, 0);
        let (v, m) = get(&s, key.as_bytes()).expect("replaced");
        assert_eq!((&v[..], m.flags), (&b"x"[..], other), "{key} replaced");
        put(&s, key.as_bytes(), &[b"back", b"again"], flags, 0);
        let (v, m) = get(&s, key.as_bytes()).expect("replaced back");
        assert_eq!((&v[..], m.flags), (&b"backagain"[..], flags), "{key} back");
    }
    assert_eq!(s.stats().curr_items, FLAGS.len() as u64);
}

/// 60,000 items of ~80 bytes in a 4 MiB budget: most are evicted one by one, then a flood of
/// large items, each read once, empties whole pages (the page walk evicts every live chunk in them). Every
/// eviction hashes the victim's key from its chunk, so a wrong key offset panics there.
#[test]
fn mixed_flags_survive_eviction_and_page_eviction() {
    let clock = Arc::new(ManualClock::new(1_000));
    let limit = 4 << 20;
    let s = store(limit, &clock);
    let n = 60_000;
    for i in 0..n {
        let v = value_for(i, 40 + i % 13);
        put(&s, format!("small{i}").as_bytes(), &[&v], flags_for(i), 0);
    }
    let after_small = s.stats();
    assert!(
        after_small.evictions > 0,
        "the small items filled the budget"
    );
    let check = |upto: usize| {
        let mut present = 0;
        for i in 0..upto {
            if let Some((v, m)) = get(&s, format!("small{i}").as_bytes()) {
                assert_eq!(v, value_for(i, 40 + i % 13), "small{i} value");
                assert_eq!(m.flags, flags_for(i), "small{i} flags");
                present += 1;
            }
        }
        present
    };
    let present = check(n);
    assert!(present > 10_000, "a full budget of small items: {present}");
    // Each read once after its set: a large value never read is kept only until the next one
    // comes (size-aware admission: it is worth less per byte than the small items read before).
    for i in 0..300 {
        let v = value_for(i, 20_000);
        put(&s, format!("big{i}").as_bytes(), &[&v], flags_for(i), 0);
        let read = s.with_entry(format!("big{i}").as_bytes(), |e| {
            let found = e.item().is_some();
            if found {
                e.record_read();
            }
            found
        });
        assert!(read, "big{i} after its set");
    }
    let st = s.stats();
    assert!(st.slab_page_evictions > 0, "memory moved by page eviction");
    assert!(st.bytes <= limit as u64, "{} > {limit}", st.bytes);
    check(n);
    let mut big = 0;
    for i in 0..300 {
        if let Some((v, m)) = get(&s, format!("big{i}").as_bytes()) {
            assert_eq!((v, m.flags), (value_for(i, 20_000), flags_for(i)), "big{i}");
            big += 1;
        }
    }
    assert!(big > 50, "large items got memory: {big}");
}

/// The background pass walks pages chunk by chunk and hashes each expired item's key from the
/// chunk: it must find every expired item whatever its flags, and leave the others intact.
#[test]
fn background_expiry_finds_flagged_and_flagless_items() {
    let clock = Arc::new(ManualClock::new(1_000));
    let s = store(16 << 20, &clock);
    let n = 2_000;
    for i in 0..n {
        let exptime = if i % 2 == 0 { 1_010 } else { 0 };
        let v = value_for(i, 30);
        put(&s, format!("k{i}").as_bytes(), &[&v], flags_for(i), exptime);
    }
    clock.set(1_010);
    let removed = s.expire_some(1_000_000);
    assert_eq!(removed, n / 2, "every expired item, flagged or not");
    assert_eq!(s.stats().curr_items, (n / 2) as u64);
    for i in (1..n).step_by(2) {
        let (v, m) = get(&s, format!("k{i}").as_bytes()).expect("never expires");
        assert_eq!((v, m.flags), (value_for(i, 30), flags_for(i)), "k{i}");
    }
}

/// The size limit counts the flags field only when it is stored: with a 4 MiB single-shard
/// budget an item may take 1 MiB, so a value that exactly fills that limit without flags is
/// 4 bytes too large with them.
#[test]
fn too_large_limit_counts_the_flags_field_only_when_stored() {
    let clock = Arc::new(ManualClock::new(1_000));
    let s = store(4 << 20, &clock);
    let max_item = 1 << 20;
    let key = b"big";
    let probe = vec![0u8; 4 << 20];
    let r = try_put(&s, key, &[&probe], 0, 0);
    assert_eq!(
        r,
        Err(StoreError::TooLarge {
            size: 29 + key.len() + probe.len(),
            max: max_item
        }),
        "flagless: 29-byte header"
    );
    let fits = vec![b'v'; max_item - 29 - key.len()];
    let r = try_put(&s, key, &[&fits], 9, 0);
    assert_eq!(
        r,
        Err(StoreError::TooLarge {
            size: max_item + 4,
            max: max_item
        }),
        "flagged: 4 bytes more"
    );
    put(&s, key, &[&fits], 0, 0);
    let (v, m) = get(&s, key).expect("fits exactly without flags");
    assert_eq!((v.len(), m.flags), (fits.len(), 0));
}
