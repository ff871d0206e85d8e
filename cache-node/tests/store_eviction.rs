//! Eviction: the memory budget holds under a multi-threaded write flood (also when memory has to
//! move between size classes), and W-TinyLFU admission protects frequent keys from scans.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cache_node::clock::ManualClock;
use cache_node::server::{as_received, BUFFER_BYTES};
use cache_node::store::{NewItem, Store, StoreConfig, StoreError, WindowAdaptation};

mod common;

fn insert(s: &Store, key: &[u8], value: &[u8]) {
    s.with_entry(key, |e| e.insert(NewItem::plain(&[value])))
        .expect("insert within budget");
}

/// A read-through access: hit (recorded) or insert on a miss. Returns whether it hit.
fn access(s: &Store, key: &[u8]) -> bool {
    let hit = access_without_insert(s, key);
    if !hit {
        insert(s, key, &[]);
    }
    hit
}

/// Without eviction this flood would store ~8 threads x 4000 x ~1.5 KB = ~48 MB in an 8 MiB
/// budget; the test checks the accounted bytes never pass the budget, sampled concurrently.
#[test]
fn write_flood_from_many_threads_stays_within_the_budget() {
    let limit = 8 << 20;
    let s = Arc::new(Store::new(
        StoreConfig {
            memory_limit_bytes: limit,
            shards: 4,
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (s, done) = (s.clone(), done.clone());
        std::thread::spawn(move || {
            let mut max_seen = 0;
            while !done.load(Ordering::Relaxed) {
                max_seen = max_seen.max(s.stats().bytes);
                std::thread::yield_now();
            }
            max_seen
        })
    };
    let writers: Vec<_> = (0..8u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let buf = vec![7u8; 3000];
                for i in 0..4000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = 20 + (x % 2980) as usize; // many size classes
                    insert(&s, format!("t{t}-{i}").as_bytes(), &buf[..len]);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Relaxed);
    let max_seen = watcher.join().expect("watcher");
    let st = s.stats();
    assert!(
        st.bytes <= limit as u64,
        "bytes {} > limit {limit}",
        st.bytes
    );
    assert!(
        max_seen <= limit as u64,
        "sampled {max_seen} > limit {limit}"
    );
    assert!(st.evictions > 0);
    assert!(
        st.curr_items > 1000,
        "the budget is used, not emptied: {}",
        st.curr_items
    );
}

/// A store of `limit` bytes asking for `shards` shards (fewer when the budget is small, as the
/// server splits a small node). One shard makes every item compete for the same budget.
fn store_of(limit: usize, shards: usize) -> Store {
    Store::new(
        StoreConfig {
            memory_limit_bytes: limit,
            shards,
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    )
}

/// Fill with small items, then flood with large ones, each read once after its set: the large
/// class has no pages, so memory must move from the small class (whole pages evicted). Without page
/// eviction the inserts would fail with OutOfMemory (or the budget would be exceeded).
#[test]
fn memory_moves_between_size_classes_when_full() {
    let limit = 4 << 20;
    let s = store_of(limit, 1);
    for i in 0..60_000 {
        insert(&s, format!("small{i}").as_bytes(), &[1u8; 40]);
    }
    let small = s.stats();
    assert!(small.evictions > 0, "the small items filled the budget");
    let big = vec![2u8; 20_000];
    for i in 0..400 {
        let key = format!("big{i}");
        insert(&s, key.as_bytes(), &big);
        assert!(access(&s, key.as_bytes()), "{key} is there after its set");
    }
    let st = s.stats();
    assert!(st.bytes <= limit as u64, "{} > {limit}", st.bytes);
    assert!(st.slab_page_evictions > 0 || st.evictions > small.evictions);
    let present = (0..400)
        .filter(|i| s.with_entry(format!("big{i}").as_bytes(), |e| e.item().is_some()))
        .count();
    // About 1.8 of the 4 MiB: each large item has a mapping of its own, and since session 34 the
    // page to empty for room is also chosen among such items further from the LRU end (one item
    // lost for 20 KB rather than a page of small ones), so the large items make room mostly among
    // themselves (92 kept; before, above 100). Not read after their sets, they would be kept only
    // until the next one came (session 35's size-aware admission: each is worth less per byte
    // than the small items it displaces, which were set as often and never read either; 1 kept).
    assert!(present > 50, "large items got memory: {present}");
}

fn capacity_store(adaptation: WindowAdaptation, window_percent: f64) -> Store {
    Store::new(
        StoreConfig {
            shards: 1,
            max_items: Some(100),
            window_adaptation: adaptation,
            window_percent,
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    )
}

/// A scan of one-time keys does not flush a frequently used key: "hot" comes back every 150
/// accesses, a reuse distance beyond the capacity of 100, so plain LRU (a 100% window:
/// admission never runs) always loses it to the scan, while W-TinyLFU admission keeps it
/// (scan keys, seen once, lose the frequency duel). The LRU run is the control showing that
/// the admission filter is what protects it.
#[test]
fn tinylfu_admission_keeps_a_frequent_key_over_a_scan() {
    let hot_hits = |s: &Store| {
        let mut hits = 0;
        for i in 0..30_000 {
            if i % 150 == 0 {
                hits += u32::from(access(s, b"hot"));
            } else {
                access(s, format!("scan{i}").as_bytes());
            }
        }
        hits // out of 200 accesses of "hot"
    };
    let ghost = hot_hits(&capacity_store(WindowAdaptation::Ghost, 1.0));
    let fixed = hot_hits(&capacity_store(WindowAdaptation::Fixed, 1.0));
    let climber = hot_hits(&capacity_store(WindowAdaptation::HillClimber, 1.0));
    let lru = hot_hits(&capacity_store(WindowAdaptation::Fixed, 100.0));
    assert!(
        ghost >= 190 && fixed >= 190 && climber >= 190,
        "{ghost} {fixed} {climber}"
    );
    assert_eq!(lru, 0, "control: LRU loses the hot key to every scan");
}

/// Item-count mode: the bound holds exactly.
#[test]
fn item_capacity_is_exact() {
    let s = capacity_store(WindowAdaptation::Ghost, 1.0);
    for i in 0..1000 {
        access(&s, format!("k{i}").as_bytes());
        assert!(s.stats().curr_items <= 100);
    }
    assert_eq!(s.stats().curr_items, 100);
    assert_eq!(s.stats().evictions, 900);
}

/// The sketch halves every sample period, so an old favourite fades and newer frequent keys
/// win admission against it. Without aging (halving), 15 early accesses would pin "old" for
/// good: the new keys' counts could never exceed its saturated count.
#[test]
fn sketch_aging_lets_new_favourites_replace_old_ones() {
    let s = capacity_store(WindowAdaptation::Fixed, 1.0);
    for _ in 0..15 {
        access(&s, b"old");
    }
    let resets_before = s.sketch_resets();
    // A new working set of 150 keys (more than the capacity), each used many times.
    for round in 0..40 {
        for i in 0..150 {
            access(&s, format!("new{i}").as_bytes());
        }
        if round == 0 {
            assert!(
                s.with_entry(b"old", |e| e.item().is_some()),
                "still there early on"
            );
        }
    }
    assert!(s.sketch_resets() > resets_before, "the sketch was halved");
    assert!(
        !s.with_entry(b"old", |e| e.item().is_some()),
        "the old favourite aged out"
    );
}

/// A small budget with many requested shards still stores items: the shard count is lowered so
/// each shard has room for pages (16 shards of 128 KiB could not hold a 64 KiB page plus tables).
#[test]
fn small_budgets_get_fewer_shards() {
    let s = store_of(2 << 20, 16);
    assert_eq!(s.shard_count(), 2);
    for i in 0..5000 {
        insert(&s, format!("k{i}").as_bytes(), &[0u8; 300]);
    }
    let st = s.stats();
    assert!(st.curr_items > 1000, "{}", st.curr_items);
    assert!(st.bytes <= 2 << 20);
}

/// Room held for a value still arriving (`Store::reserve`, taken by a connection before it buffers a
/// large data block) is part of the budget: holding it evicts stored items as an insert would; holds
/// that cannot fit beside the others are refused with `OutOfMemory` instead of passing the budget; a
/// dropped hold gives its room back, to a new hold and to the insert of the value.
#[test]
fn room_held_for_arriving_values_counts_in_the_budget() {
    let limit = 4 << 20;
    let s = store_of(limit, 1);
    for i in 0..6000 {
        insert(&s, format!("small{i}").as_bytes(), &[1u8; 900]);
    }
    let full = s.stats();
    assert!(full.evictions > 0, "the small items filled the budget");

    let value_len = 900_000;
    let mut held = Vec::new();
    let refused = loop {
        match s.reserve(
            format!("big{}", held.len()).as_bytes(),
            value_len,
            value_len,
        ) {
            Ok(r) => held.push(r),
            Err(e) => break e,
        }
        let st = s.stats();
        assert!(st.bytes <= limit as u64, "{} > {limit}", st.bytes);
        assert!(held.len() <= 4, "more held than the budget has");
    };
    assert_eq!(refused, StoreError::OutOfMemory);
    // Most of the budget can be held (the tables keep the rest).
    assert!(held.len() >= 3, "only {} holds", held.len());
    let st = s.stats();
    assert_eq!(st.reserved_bytes, (held.len() * value_len) as u64);
    assert!(
        st.curr_items < full.curr_items / 2,
        "holding evicted items: {} of {} left",
        st.curr_items,
        full.curr_items
    );
    // A hold that cannot fit even in an empty arena evicts nothing: the items that still fit
    // beside the holds stay.
    for i in 0..200 {
        insert(&s, format!("beside{i}").as_bytes(), &[2u8; 900]);
    }
    let beside = s.stats().curr_items;
    assert!(beside > 0);
    assert_eq!(
        s.reserve(b"big-more", value_len, value_len).err(),
        Some(StoreError::OutOfMemory)
    );
    assert_eq!(s.stats().curr_items, beside, "a refused hold evicted items");

    // A dropped hold makes room for another, and for the value once it is in.
    held.pop();
    let again = s
        .reserve(b"big-again", value_len, value_len)
        .expect("room given back");
    drop(again);
    let value = vec![3u8; value_len];
    insert(&s, b"big-again", &value);
    assert!(s
        .with_entry(b"big-again", |e| e.item().map(|i| i.value() == &value[..]))
        .unwrap());
    held.clear();
    assert_eq!(s.stats().reserved_bytes, 0);
}

/// A hold grows with its value: started small it evicts only for what it holds, each `grow_to` evicts
/// for the difference, it never passes the value's size, and a value that could not fit beside the
/// other holds is refused at the start, evicting nothing. (A connection holds room as a large value
/// arrives, so a client that stalls after the first line evicts nothing.)
#[test]
fn a_hold_grows_as_its_value_arrives() {
    let limit = 4 << 20;
    let s = store_of(limit, 1);
    for i in 0..6000 {
        insert(&s, format!("small{i}").as_bytes(), &[1u8; 900]);
    }
    let full = s.stats();
    let mut hold = s.reserve(b"big", 1_000_000, 0).expect("a value that fits");
    assert_eq!(
        s.stats().curr_items,
        full.curr_items,
        "an empty hold evicted"
    );
    assert_eq!(s.stats().reserved_bytes, 0);
    hold.grow_to(300_000).unwrap();
    let grown = s.stats();
    assert_eq!(grown.reserved_bytes, 300_000);
    assert!(grown.bytes <= limit as u64);
    let evicted = full.curr_items - grown.curr_items;
    assert!(
        evicted > 0 && evicted < 600,
        "{evicted} items of 900 bytes evicted for a 300 KB hold"
    );
    hold.grow_to(200_000).unwrap();
    assert_eq!(s.stats().reserved_bytes, 300_000, "a hold does not shrink");
    hold.grow_to(5_000_000).unwrap();
    assert_eq!(
        (hold.bytes(), s.stats().reserved_bytes),
        (1_000_000, 1_000_000)
    );
    // Three more 1 MB holds cannot all fit beside it in 4 MB: the one that would not fit is refused
    // before it evicts anything, even if it starts empty.
    let mut others = Vec::new();
    let refused = loop {
        match s.reserve(
            format!("other{}", others.len()).as_bytes(),
            1_000_000,
            1_000_000,
        ) {
            Ok(h) => others.push(h),
            Err(e) => break e,
        }
    };
    assert_eq!(refused, StoreError::OutOfMemory);
    let before = s.stats().curr_items;
    assert_eq!(
        s.reserve(b"one-more", 1_000_000, 0).err(),
        Some(StoreError::OutOfMemory)
    );
    assert_eq!(s.stats().curr_items, before, "a refused hold evicted items");
    drop(others);
    drop(hold);
    assert_eq!(s.stats().reserved_bytes, 0);
}

/// A large value's landing ([`Store::land`]) holds the budget as a reservation does: nothing before
/// `grow_to`, then what may arrive less the free bytes (the buffer a connection has anyway), evicting
/// for it; nothing can be written beyond what is held. The insert of its value stores it where it was
/// written, without a copy (the item's value is at the address the landing wrote, and
/// `values_read_in_place` counts it), and then counts all of it; a landing dropped without an insert
/// gives its room back; a value that would go in a shared page gets none.
#[test]
fn a_landed_value_is_stored_where_it_was_read() {
    let limit = 4 << 20;
    let s = store_of(limit, 1);
    for i in 0..6000 {
        insert(&s, format!("small{i}").as_bytes(), &[1u8; 900]);
    }
    let full = s.stats();
    let value: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut landing = s
        .land(b"big", value.len(), 0, BUFFER_BYTES)
        .expect("room for it")
        .expect("a mapping of its own");
    assert_eq!(
        s.stats().curr_items,
        full.curr_items,
        "an empty landing evicted"
    );
    assert_eq!(s.stats().reserved_bytes, 0);
    assert_eq!(landing.write(&value), 0, "written before it was held");
    landing.grow_to(100_000).unwrap();
    let grown = s.stats();
    assert!(
        (100_000 - BUFFER_BYTES as u64..100_000 + 4096).contains(&grown.reserved_bytes),
        "{} held for 100,000 bytes arriving",
        grown.reserved_bytes
    );
    assert!(grown.bytes <= limit as u64);
    let evicted = full.curr_items - grown.curr_items;
    assert!(
        evicted > 0 && evicted < 200,
        "{evicted} items of 900 bytes evicted for a 100 KB hold"
    );
    let written = landing.write(&value);
    assert!(
        (100_000..104_096).contains(&written),
        "{written} bytes written with 100,000 held"
    );
    landing.grow_to(value.len()).unwrap();
    landing.write(&value[written..]);
    assert!(landing.is_full());
    let at = landing.value().as_ptr();
    insert(&s, b"big", landing.value());
    drop(landing);
    let stored = s.stats();
    assert_eq!(stored.values_read_in_place, 1);
    assert_eq!(stored.reserved_bytes, 0);
    assert!(stored.bytes <= limit as u64);
    s.with_entry(b"big", |e| {
        let item = e.item().expect("stored");
        assert_eq!(item.value(), &value[..]);
        assert!(std::ptr::eq(item.value().as_ptr(), at), "copied");
    });

    let mut unstored = s.land(b"big2", 200_000, 0, 0).unwrap().unwrap();
    unstored.grow_to(200_000).unwrap();
    assert!(s.stats().reserved_bytes >= 200_000);
    drop(unstored);
    assert_eq!(s.stats().reserved_bytes, 0);
    assert!(s.stats().bytes <= limit as u64);
    assert_eq!(s.stats().values_read_in_place, 1);

    assert!(s.land(b"small", 1000, 0, 0).unwrap().is_none());
    assert!(matches!(
        s.land(b"huge", 5_000_000, 0, 0),
        Err(StoreError::TooLarge { .. })
    ));
}

/// A store that fails for want of room (values in flight hold the rest of the budget) keeps the item it
/// was to replace, as memcached keeps it when a cas, replace, append or prepend cannot allocate. Before,
/// the old item was removed first and then the allocation failed, so the key was gone (found by an audit
/// over TCP: `append` answered `SERVER_ERROR out of memory storing object` and `get` then missed).
#[test]
fn a_replacement_that_finds_no_room_keeps_the_old_item() {
    let limit = 4 << 20;
    let s = store_of(limit, 1);
    let old = vec![1u8; 60_000];
    insert(&s, b"victim", &old);
    // Hold all but about 4 KB of the budget, without evicting anything.
    let mut holds = Vec::new();
    loop {
        let free = limit as u64 - s.stats().bytes;
        if free < 8_000 {
            break;
        }
        let take = ((free - 4_000) as usize).min(1 << 20);
        match s.reserve(format!("hold{}", holds.len()).as_bytes(), take, take) {
            Ok(h) => holds.push(h),
            Err(_) => break,
        }
    }
    // (length, first byte) of the stored value.
    let value = |s: &Store| {
        s.with_entry(b"victim", |e| {
            e.item().map(|i| (i.value().len(), i.value()[0]))
        })
    };
    assert_eq!(value(&s), Some((60_000, 1)), "the holds evicted it");
    // An append that needs a larger chunk: no room, refused, the old value still there.
    let appended = s.with_entry(b"victim", |e| {
        let current = e.item().expect("present").value().to_vec();
        e.insert(NewItem::plain(&[&current, &[b'a'; 10_000]]))
    });
    assert_eq!(appended, Err(StoreError::OutOfMemory));
    assert_eq!(value(&s), Some((60_000, 1)), "a failed append lost it");
    // A replacement of the same size takes the old item's chunk: it needs no new room.
    insert(&s, b"victim", &[2u8; 60_000]);
    assert_eq!(value(&s), Some((60_000, 2)));
    drop(holds);
}

/// Stores 1.5 x what fits in `limit` of 32-byte keys and values of 100-10,000 bytes (a size fixed per
/// key) and returns the share of `limit` that the keys and values still stored make up.
fn fill_with_mixed_sizes(s: &Store, limit: usize) -> f64 {
    let len_of = |i: u64| 100 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) as usize % 9_901;
    let keys = (limit / (32 + 5_050)) as u64 * 3 / 2;
    let value = vec![7u8; 10_000];
    for i in 0..keys {
        insert(s, format!("{i:032}").as_bytes(), &value[..len_of(i)]);
    }
    let stored: usize = (0..keys)
        .filter_map(|i| {
            let key = format!("{i:032}");
            s.with_entry(key.as_bytes(), |e| {
                e.item().map(|item| key.len() + item.value().len())
            })
        })
        .sum();
    stored as f64 / limit as f64
}

/// Values of mixed sizes fill a small store's memory with data, not with the partly used last pages of
/// its size classes. 16 shards of 2 MiB (the server splits a small node the same way) are filled with
/// 1.5 x what fits of 32-byte keys and values of 100-10,000 bytes; the keys and values still stored must
/// make up at least 55% of the budget (63% now; memcached keeps about 90% in such a fill at 343 MiB).
/// With every class on full pages (1/64 of a shard), this store kept 38%, and this test fails.
#[test]
fn mixed_sizes_fill_a_small_store_with_data() {
    let limit = 32 << 20;
    let s = store_of(limit, 16);
    let share = fill_with_mixed_sizes(&s, limit);
    assert!(s.stats().evictions > 0);
    assert!(
        share >= 0.55,
        "keys and values are {:.0}% of the budget",
        share * 100.0
    );
}

/// Compaction turns idle chunks into room for items: one 32 MiB shard filled with 1.5 x what fits of
/// 32-byte keys and values of 100-10,000 bytes keeps at least 84% of the budget in keys and values
/// (87% now), with pages emptied by moving their items. Without compaction (the store then evicts
/// until a chunk of the right size is free, and the chunks its victims leave stay idle) it keeps
/// 82%, and this test fails.
#[test]
fn compaction_fills_idle_chunks_with_items() {
    let limit = 32 << 20;
    let s = store_of(limit, 1);
    let share = fill_with_mixed_sizes(&s, limit);
    let stats = s.stats();
    assert!(stats.evictions > 0);
    assert!(stats.slabs_moved > 0, "no page was emptied by moving items");
    assert!(
        share >= 0.84,
        "keys and values are {:.1}% of the budget",
        share * 100.0
    );
}

/// Memory moves from small values to large ones without losing room to the spare page: one 21 MiB
/// shard filled with 1.5 x what fits of 100-byte values, then of 5,000-byte values, keeps at least
/// 75,000 items (80,297 now). When the spare page (an emptied page kept mapped for reuse) was kept
/// while the growing tables put the shard over its budget, the shard counted itself full, could not
/// use its free chunks and evicted on: 60,195 items, and this test fails.
#[test]
fn memory_moves_to_larger_values_without_losing_room() {
    let s = store_of(21 << 20, 1);
    let value = vec![3u8; 5_000];
    let mut next = 0u64;
    for len in [100usize, 5_000] {
        for _ in 0..(21 << 20) / (32 + len) * 3 / 2 {
            insert(&s, format!("{next:032}").as_bytes(), &value[..len]);
            next += 1;
        }
    }
    let stats = s.stats();
    assert!(stats.bytes <= stats.limit_maxbytes);
    assert!(stats.curr_items >= 75_000, "{} items", stats.curr_items);
}

/// Room held for a value still arriving comes from compaction before eviction: a full 8 MiB shard of
/// 1,000-byte values with every other key deleted (pages half empty) holds 100 KB by moving items,
/// evicting none and keeping every item. Holding room only by emptying whole pages, as before, the
/// hold evicts 46 of the 3,905 items, and this test fails.
#[test]
fn a_hold_compacts_before_it_evicts() {
    let s = store_of(8 << 20, 1);
    let value = vec![1u8; 1000];
    let mut keys = 0;
    while s.stats().evictions == 0 {
        insert(&s, format!("key:{keys}").as_bytes(), &value);
        keys += 1;
    }
    for i in (0..keys).step_by(2) {
        s.with_entry(format!("key:{i}").as_bytes(), |e| e.remove());
    }
    let before = s.stats();
    let hold = s
        .reserve(b"arriving", 100_000, 100_000)
        .expect("room for the value");
    let after = s.stats();
    assert!(
        after.slabs_moved > before.slabs_moved,
        "no page was emptied by moving items"
    );
    assert_eq!(
        (after.evictions, after.curr_items),
        (before.evictions, before.curr_items),
        "the hold evicted items"
    );
    assert!(after.bytes <= after.limit_maxbytes);
    drop(hold);
}

/// Small items of one size fill a small store's memory with data, not with size-class rounding: 16
/// shards of 2 MiB filled with 1.5 x what fits of 32-byte keys and 100-byte values (161-byte items)
/// keep at least 66% of the budget in keys and values (70% now; memcached, whose 192-byte class
/// takes them, keeps about 69% at 343 MiB). With classes as coarse as the count of full pages allowed
/// (25% apart here, so each item took a 192-byte chunk), this store kept 62%, and this test fails.
#[test]
fn small_items_fill_a_small_store_with_data() {
    let limit = 32 << 20;
    let s = store_of(limit, 16);
    let keys = limit / (32 + 100) * 3 / 2;
    for i in 0..keys {
        insert(&s, format!("{i:032}").as_bytes(), &[7u8; 100]);
    }
    let stats = s.stats();
    assert!(stats.evictions > 0);
    let share = stats.curr_items as f64 * 132.0 / limit as f64;
    assert!(
        share >= 0.66,
        "keys and values are {:.1}% of the budget",
        share * 100.0
    );
}

/// What a read-through churn of mixed sizes left: [`mixed_size_churn`].
struct Churn {
    /// Hits over the second half of the accesses.
    hit_rate: f64,
    /// Share of the smallest tenth of the keys by size kept at the end.
    smallest_kept: f64,
    /// Share of the largest tenth kept.
    largest_kept: f64,
    /// Bytes of keys and values kept at the end.
    data: usize,
}

/// 25,000 keys, each with a value log-uniform in 100-10,000 B, read through (insert on a miss)
/// 400,000 times at random into `s`.
fn mixed_size_churn(s: &Store) -> Churn {
    const KEYS: u64 = 25_000;
    let size_of = |k: u64| {
        let h = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        (100.0 * 100f64.powf(h)) as usize
    };
    let value = vec![5u8; 10_000];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let (mut hits, mut reads) = (0u32, 0u32);
    for i in 0..400_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = rng % KEYS;
        let hit = s.with_entry(format!("k{k}").as_bytes(), |e| {
            if e.item().is_some() {
                e.record_read();
                true
            } else {
                e.insert(NewItem::plain(&[&value[..size_of(k)]]))
                    .expect("insert");
                false
            }
        });
        if i >= 200_000 {
            reads += 1;
            hits += u32::from(hit);
        }
    }
    let mut by_size: Vec<u64> = (0..KEYS).collect();
    by_size.sort_by_key(|&k| size_of(k));
    let kept = |k: u64| {
        let key = format!("k{k}");
        s.with_entry(key.as_bytes(), |e| {
            e.item().map(|it| key.len() + it.value().len())
        })
    };
    let kept_share = |keys: &[u64]| {
        keys.iter().filter(|&&k| kept(k).is_some()).count() as f64 / keys.len() as f64
    };
    let tenth = (KEYS / 10) as usize;
    Churn {
        hit_rate: f64::from(hits) / f64::from(reads),
        smallest_kept: kept_share(&by_size[..tenth]),
        largest_kept: kept_share(&by_size[by_size.len() - tenth..]),
        data: (0..KEYS).filter_map(kept).sum(),
    }
}

/// When memory moves between size classes by emptying a whole page, the page that goes is the one
/// with the fewest items per byte among those of the policy's next victims, and an allocation turns
/// to that after 32 policy evictions, so a churn of mixed sizes does not throw small items out by the
/// page-full and a miss costs few items. The churn of [`mixed_size_churn`] into 16 MiB (2 shards):
/// the smallest tenth of the keys by size must be kept at least as often as the largest tenth, and
/// the hit rate over the second half must reach 37%. Now 55.4% and 13.0% of each tenth kept, 44.1%
/// of hits (53.4%, 12.9% and 41.3% in session 22, with whole pages counted). The test fails with each
/// earlier rule (measured with whole pages counted): the page of the policy's next victim kept 15.9%
/// and 25.6% (23.0% of hits; session 20); the fewest items counted per page, not per byte, 35.7% of
/// hits; 64 policy evictions before a page, 32.7% (30.4% with both, session 21's rules).
#[test]
fn emptying_a_page_costs_the_fewest_items_under_churn() {
    let s = store_of(16 << 20, 2);
    let churn = mixed_size_churn(&s);
    let (hit_rate, smallest, largest) = (churn.hit_rate, churn.smallest_kept, churn.largest_kept);
    assert!(s.stats().slab_page_evictions > 0, "no page was emptied");
    assert!(
        smallest >= largest,
        "smallest tenth {:.1}% kept, largest {:.1}%; hit rate {:.1}%",
        smallest * 100.0,
        largest * 100.0,
        hit_rate * 100.0
    );
    assert!(
        hit_rate >= 0.37,
        "hit rate {:.1}% (smallest tenth {:.1}% kept, largest {:.1}%)",
        hit_rate * 100.0,
        smallest * 100.0,
        largest * 100.0
    );
}

/// A page's chunks that no item has taken yet cost no budget, only the OS pages its chunks have
/// touched: the churn of [`mixed_size_churn`] into 16 MiB (2 shards) ends within the budget with
/// keys and values filling at least 83% of it, and hits at least 43% of the second half. Now 85.2%
/// and 44.1%. With every mapped page counted whole (before session 23), every size class's partly
/// used page held budget that no item used: 80.6% and 41.3%, and this test fails.
#[test]
fn untouched_chunks_cost_no_budget_under_churn() {
    let limit = 16 << 20;
    let s = store_of(limit, 2);
    let churn = mixed_size_churn(&s);
    let stats = s.stats();
    assert!(stats.bytes <= stats.limit_maxbytes);
    let share = churn.data as f64 / limit as f64;
    assert!(
        share >= 0.83 && churn.hit_rate >= 0.43,
        "keys and values fill {:.1}% of the budget, hit rate {:.1}%",
        share * 100.0,
        churn.hit_rate * 100.0
    );
}

/// A lease placeholder outlives the admission filter until its refill comes: a winner that reads
/// a lukewarm key (one read) and takes a while at the database must find its lease when it sets,
/// even if many one-off keys were stored meanwhile. Each of 20 placeholders below sees 300 one-off
/// inserts (30 times the window) in a cache full of a working set read three times. Admitted by
/// frequency alone, each placeholder lost its duel at the window's end and this test fails on the
/// first; one-off keys still do (the working set stays).
#[test]
fn a_lease_placeholder_is_not_filtered_out_before_its_refill() {
    let s = Store::new(
        StoreConfig {
            memory_limit_bytes: 64 << 20,
            shards: 1,
            max_items: Some(1000),
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    );
    for _ in 0..3 {
        for k in 0..1000u32 {
            access(&s, format!("hot{k}").as_bytes());
        }
    }
    for p in 0..20 {
        let lease = format!("lease{p}");
        s.with_entry(lease.as_bytes(), |e| {
            e.insert(NewItem::lease_placeholder(30, 1000 + p))
                .expect("placeholder");
            e.record_read();
        });
        for i in 0..300 {
            insert(&s, format!("once{p}-{i}").as_bytes(), b"v");
        }
        assert!(
            s.with_entry(lease.as_bytes(), |e| e.item().is_some()),
            "placeholder {p} was evicted before its refill"
        );
    }
    let hot_kept = (0..1000u32)
        .filter(|k| s.with_entry(format!("hot{k}").as_bytes(), |e| e.item().is_some()))
        .count();
    assert!(
        hot_kept >= 900,
        "the working set was flushed: {hot_kept} of 1000 kept"
    );
}

/// Read-through passes (a get, then a set on a miss) over 1.5 x as many keys with `len`-byte values as
/// would fit; returns how many of those keys are held at the end.
fn read_through_passes(s: &Store, prefix: &str, len: usize, limit: usize, passes: usize) -> usize {
    let value = vec![5u8; len];
    let n = limit / (32 + len + 40) * 3 / 2;
    for _ in 0..passes {
        for i in 0..n {
            s.with_entry(format!("{prefix}{i:028}").as_bytes(), |e| {
                if e.item().is_some() {
                    e.record_read();
                } else {
                    e.insert(NewItem::plain(&[&value])).expect("insert");
                }
            });
        }
    }
    (0..n)
        .filter(|i| {
            s.with_entry(format!("{prefix}{i:028}").as_bytes(), |e| {
                e.item().is_some()
            })
        })
        .count()
}

/// The tables (hash index, sketch, ghost lists) sized for a phase of many small items give their room
/// back to items once the shard holds far fewer: a 16 MiB shard that held 200,000 empty values, then
/// serves read-through passes over 2,000-byte ones, holds at least 95% as many of those as a fresh shard
/// does (7,757 against 7,856). With tables that only grew, they kept the room of the most items ever held
/// (3.4 MB) for good: 6,278 items, and this test fails.
#[test]
fn tables_sized_for_many_small_items_give_their_room_back() {
    let limit = 16 << 20;
    let fresh = store_of(limit, 1);
    let kept_fresh = read_through_passes(&fresh, "large", 2_000, limit, 8);
    let s = store_of(limit, 1);
    read_through_passes(&s, "small", 0, limit, 1);
    assert!(s.stats().curr_items > 200_000);
    let kept = read_through_passes(&s, "large", 2_000, limit, 8);
    assert!(s.stats().bytes <= limit as u64);
    assert!(
        kept * 100 >= kept_fresh * 95,
        "{kept} large items kept after the small-item phase, {kept_fresh} in a fresh shard"
    );
}

/// What [`wide_size_read_through`] measured.
struct WideSizes {
    /// Hit rate over the second half.
    hit_rate: f64,
    /// Share of the smallest tenth of the keys kept at the end.
    smallest_kept: f64,
    /// Share of the hot key's reads (second half) that hit.
    hot_hit_rate: f64,
    store: Store,
}

impl WideSizes {
    /// The figures of this run beside those of `without`, the same run with `rule` off, for the
    /// assertions' messages (also printed).
    fn beside(&self, without: &WideSizes, rule: &str) -> String {
        let report = format!(
            "hit rate {:.2}% (without {rule} {:.2}%), smallest tenth kept {:.1}% ({:.1}%)",
            self.hit_rate * 100.0,
            without.hit_rate * 100.0,
            self.smallest_kept * 100.0,
            without.smallest_kept * 100.0,
        );
        eprintln!("{report}");
        report
    }
}

/// A read-through of 10,000 keys of equal popularity, each with a value log-uniform in 16 B..200 KB
/// (mean 20 KB, 200 MB in all), 60,000 accesses into a 16 MiB store (2 shards, 128 KiB pages:
/// values above 32 KiB have mappings of their own), the sets made as the server makes them; every
/// `hot_every`th access is instead to one more key, whose value is 100 KB.
fn wide_size_read_through(
    size_aware_admission: bool,
    size_aware_eviction: bool,
    hot_every: u32,
) -> WideSizes {
    const KEYS: u64 = 10_000;
    let s = Store::new(
        StoreConfig {
            memory_limit_bytes: 16 << 20,
            shards: 2,
            size_aware_admission,
            size_aware_eviction,
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    );
    let size_of = |k: u64| {
        let h = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        (16.0 * 12_500f64.powf(h)) as usize
    };
    let value = vec![7u8; 200_000];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let (mut hits, mut reads, mut hot_hits, mut hot_reads) = (0u32, 0u32, 0u32, 0u32);
    for i in 0..60_000u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (key, size) = if i % hot_every == 0 {
            ("hot".to_string(), 100_000)
        } else {
            let k = rng % KEYS;
            (format!("k{k}"), size_of(k))
        };
        let hit = access_without_insert(&s, key.as_bytes());
        if !hit {
            as_received(&s, key.as_bytes(), &value[..size], 0, |v| {
                insert(&s, key.as_bytes(), v)
            });
        }
        if i >= 30_000 {
            if key == "hot" {
                (hot_hits, hot_reads) = (hot_hits + u32::from(hit), hot_reads + 1);
            } else {
                (hits, reads) = (hits + u32::from(hit), reads + 1);
            }
        }
    }
    let mut by_size: Vec<u64> = (0..KEYS).collect();
    by_size.sort_by_key(|&k| size_of(k));
    let smallest_kept = by_size[..KEYS as usize / 10]
        .iter()
        .filter(|&&k| s.with_entry(format!("k{k}").as_bytes(), |e| e.item().is_some()))
        .count() as f64
        / (KEYS / 10) as f64;
    WideSizes {
        hit_rate: f64::from(hits) / f64::from(reads),
        smallest_kept,
        hot_hit_rate: f64::from(hot_hits) / f64::from(hot_reads.max(1)),
        store: s,
    }
}

/// A read: hit (recorded) or miss, nothing inserted.
fn access_without_insert(s: &Store, key: &[u8]) -> bool {
    s.with_entry(key, |e| {
        let hit = e.item().is_some();
        if hit {
            e.record_read();
        }
        hit
    })
}

/// Size-aware admission: a new large value read no more often than the items the next page
/// eviction would free, which hold more items per byte, is kept only until that eviction, so large
/// values read once take the room of earlier ones instead of pages of small values. Over
/// [`wide_size_read_through`] with size-aware eviction off on both sides, 25.12% of hits and 33.0% of
/// the smallest tenth kept; without it (`size_aware_admission: false`, the rule before session 35)
/// 14.56% and 22.2%, and this test fails. (Session 36, before the sketch kept its counts when resized:
/// 23.95% and 33.4% against 15.28% and 22.8%; session 35, before room made by whole pages fought the
/// window candidate's duel: 25.95% and 40.4% against 14.06% and 17.9%; the duel's loser here is
/// often a small newcomer, STORE.md.)
#[test]
fn size_aware_admission_keeps_small_values_beside_large_ones_read_once() {
    let on = wide_size_read_through(true, false, u32::MAX);
    let off = wide_size_read_through(false, false, u32::MAX);
    let report = on.beside(&off, "size-aware admission");
    assert!(
        on.store.stats().size_refusals > 0,
        "nothing refused: {report}"
    );
    assert_eq!(off.store.stats().size_refusals, 0, "{report}");
    assert!(
        on.hit_rate >= 0.20 && on.hit_rate >= 1.4 * off.hit_rate,
        "{report}"
    );
    assert!(on.smallest_kept >= 1.3 * off.smallest_kept, "{report}");
}

/// A large value read now and then (one access in 1,000) beside the large values read once of
/// [`wide_size_read_through`] stays cached: refused at first, it waits at the probation LRU end,
/// where large values refused after it are evicted before it, and its next read promotes it. 100%
/// of its reads in the second half hit; without size-aware admission none do (it is evicted with
/// the large values read once before its next read), and this test fails.
#[test]
fn a_large_value_read_now_and_then_stays_beside_large_values_read_once() {
    let run = wide_size_read_through(true, true, 1_000);
    assert!(
        run.hot_hit_rate >= 0.9,
        "the large value read one access in 1,000 hit {:.1}% of its reads",
        run.hot_hit_rate * 100.0
    );
}

/// Size-aware eviction: when the page of the policy's next victims holds several small items, a large
/// value read no more often than they are, anywhere in the shard (protected too, where the main
/// space, which keeps items by count, holds a large value read twice), goes instead. Over
/// [`wide_size_read_through`], 28.17% of hits and 35.6% of the smallest tenth kept; without it
/// (`size_aware_eviction: false`, the rule before session 37) 25.12% and 33.0%, and this test fails.
/// (The effect is smaller here than in `examples/mixed_sizes`, 8.12% -> 15.57%: this shard's next
/// victims' pages are mostly 128 KiB pages of a few 16-32 KB values, which a large value frees
/// little more room than.)
#[test]
fn size_aware_eviction_takes_large_values_before_pages_of_small_ones() {
    let on = wide_size_read_through(true, true, u32::MAX);
    let off = wide_size_read_through(true, false, u32::MAX);
    let report = on.beside(&off, "size-aware eviction");
    assert!(on.store.stats().size_evictions > 0, "{report}");
    assert_eq!(off.store.stats().size_evictions, 0, "{report}");
    assert!(on.hit_rate >= 1.1 * off.hit_rate, "{report}");
    assert!(on.smallest_kept >= 1.05 * off.smallest_kept, "{report}");
}

/// Size-aware eviction spares large values read more often than the small items they would make
/// room for: 100 values of 64 KB, each read every 400 accesses, beside a read-through of 100,000
/// values of 100 B at uniform popularity (each read about every 133,000 accesses), in 16 MiB. A
/// large value frees the room of hundreds of small ones, so by room per item lost alone it would go
/// first; its frequency keeps it. 100% of the large values' reads hit in the second half; without the
/// frequency test 93.7%, and this test fails.
#[test]
fn size_aware_eviction_keeps_large_values_read_often() {
    let s = Store::new(
        StoreConfig {
            memory_limit_bytes: 16 << 20,
            shards: 2,
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    );
    let value = vec![7u8; 64_000];
    let mut rng = common::xorshift(1);
    let (mut hits, mut reads) = (0u32, 0u32);
    for i in 0..200_000u32 {
        let (key, size) = if i % 4 == 0 {
            (format!("warm{}", i / 4 % 100), 64_000)
        } else {
            (format!("small{}", rng() % 100_000), 100)
        };
        let hit = access_without_insert(&s, key.as_bytes());
        if !hit {
            as_received(&s, key.as_bytes(), &value[..size], 0, |v| {
                insert(&s, key.as_bytes(), v)
            });
        }
        if i >= 100_000 && size == 64_000 {
            (hits, reads) = (hits + u32::from(hit), reads + 1);
        }
    }
    let hit_rate = f64::from(hits) / f64::from(reads);
    eprintln!(
        "large values read often hit {:.1}% of their reads",
        hit_rate * 100.0
    );
    assert!(
        hit_rate >= 0.99,
        "the large values read every 400 accesses hit {:.1}% of their reads",
        hit_rate * 100.0
    );
}
