//! Store operation cost: inserts into a full 64 MiB store (every insert evicts) and lookups
//! (hits and misses) on one thread, then a mixed get/set load on 1 and 2 threads (sharding:
//! the threads should not serialize on one lock). A sanity figure for the store alone; the
//! server's benchmark measures the node end to end against memcached.
//!
//! `cargo bench -p cache-node --bench ops`

use std::sync::Arc;
use std::time::Instant;

use cache_node::clock::SystemClock;
use cache_node::store::{NewItem, Store, StoreConfig};

fn main() {
    let s = Store::new(
        StoreConfig {
            memory_limit_bytes: 64 << 20,
            ..StoreConfig::default()
        },
        Arc::new(SystemClock::new()),
    );
    let v = vec![1u8; 100];
    let n = 2_000_000;
    let keys: Vec<String> = (0..n).map(|i| format!("key:{i:028}")).collect();
    let t = Instant::now();
    for k in &keys {
        s.with_entry(k.as_bytes(), |e| e.insert(NewItem::plain(&[&v])))
            .expect("insert");
    }
    let el = t.elapsed();
    let st = s.stats();
    println!(
        "insert (32B key, 100B value, evicting): {:.0} ns/op over {n} ({} items kept, {} evictions)",
        el.as_nanos() as f64 / n as f64,
        st.curr_items,
        st.evictions
    );
    let t = Instant::now();
    let mut hits = 0u64;
    for i in 0..n {
        let k = &keys[(i * 7919) % n];
        let hit = s.with_entry(k.as_bytes(), |e| {
            let hit = e.item().is_some();
            if hit {
                e.record_read();
            }
            hit
        });
        hits += u64::from(hit);
    }
    let el = t.elapsed();
    println!(
        "lookup (+ record_read on hit): {:.0} ns/op over {n} ({:.1}% hits)",
        el.as_nanos() as f64 / n as f64,
        100.0 * hits as f64 / n as f64
    );
    let s = Arc::new(s);
    let keys = Arc::new(keys);
    let mut single = 0.0;
    for threads in [1usize, 2] {
        let per = 1_000_000;
        let t = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let (s, keys, v) = (s.clone(), keys.clone(), v.clone());
                std::thread::spawn(move || {
                    for i in 0..per {
                        let k = &keys[(i * 31 + id * 1_000_003) % keys.len()];
                        s.with_entry(k.as_bytes(), |e| {
                            if e.item().is_some() {
                                e.record_read();
                            } else {
                                let _ = e.insert(NewItem::plain(&[&v]));
                            }
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("worker");
        }
        let ops = (per * threads) as f64 / t.elapsed().as_secs_f64();
        if threads == 1 {
            single = ops;
        }
        println!(
            "get-or-set, {threads} thread(s): {:.2} M ops/s ({:.2}x one thread)",
            ops / 1e6,
            ops / single
        );
    }
}
