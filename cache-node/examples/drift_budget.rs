//! A drifting working set through a real 64 MiB store (16 shards, byte budget), beside a plain LRU
//! holding as many items: access i reads key `i / 4 + r`, r uniform below SPAN, and sets a 100-byte
//! value on a miss. The working set slides by one key every 4 accesses, so each key is used about 4
//! times in its life and an LRU of the store's size keeps all of it. The LRU is given the store's item
//! count once the store first evicts, and again every million accesses (the count settles as the
//! store's tables grow). It prints both miss rates and the store's window share for
//! every million accesses from then on, and both miss rates over the second half of the accesses.
//!
//! `cargo run --release -p cache-node --example drift_budget [SPAN [ACCESSES]]` (defaults 200,000
//! and 4,000,000). A check of the policy off the reference traces (STORE.md, "A drifting working
//! set"), not a benchmark of speed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cache_node::clock::{Clock, ManualClock};
use cache_node::store::{NewItem, Store, StoreConfig};

/// An exact LRU over integer keys, sized once the store is warm.
#[derive(Default)]
struct Lru {
    capacity: usize,
    clock: u64,
    last_use: HashMap<u64, u64>,
    by_last_use: BTreeMap<u64, u64>,
}

impl Lru {
    fn access(&mut self, key: u64) -> bool {
        self.clock += 1;
        let hit = match self.last_use.insert(key, self.clock) {
            Some(old) => self.by_last_use.remove(&old).is_some(),
            None => false,
        };
        self.by_last_use.insert(self.clock, key);
        while self.last_use.len() > self.capacity {
            let (_, oldest) = self.by_last_use.pop_first().expect("non-empty");
            self.last_use.remove(&oldest);
        }
        hit
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let span: u64 = args.next().map_or(200_000, |v| v.parse().expect("SPAN"));
    let accesses: u64 = args
        .next()
        .map_or(4_000_000, |v| v.parse().expect("ACCESSES"));
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_700_000_000));
    let config = StoreConfig {
        memory_limit_bytes: 64 << 20,
        shards: 16,
        ..Default::default()
    };
    let store = Store::new(config, clock);
    let mut lru = Lru {
        capacity: usize::MAX,
        ..Default::default()
    };
    let value = [7u8; 100];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut store_misses, mut lru_misses) = (0u64, 0u64);
    // Accesses, and misses of the store and of the LRU, since the last line printed.
    let mut period = (0u64, 0u64, 0u64);
    for i in 0..accesses {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = i / 4 + rng % span;
        let key = format!("key:{k:016}");
        let hit = store.with_entry(key.as_bytes(), |e| {
            if e.item().is_some() {
                e.record_read();
                true
            } else {
                e.insert(NewItem::plain(&[&value])).expect("insert");
                false
            }
        });
        if lru.capacity == usize::MAX && i % 10_000 == 0 {
            let st = store.stats();
            if st.evictions > 0 {
                lru.capacity = st.curr_items as usize;
                println!(
                    "access {i}: the store evicts, holding {} items",
                    lru.capacity
                );
            }
        }
        let lru_hit = lru.access(k);
        if i >= accesses / 2 {
            store_misses += u64::from(!hit);
            lru_misses += u64::from(!lru_hit);
        }
        if lru.capacity != usize::MAX {
            period.0 += 1;
            period.1 += u64::from(!hit);
            period.2 += u64::from(!lru_hit);
            if (i + 1) % 1_000_000 == 0 {
                let st = store.stats();
                println!(
                    "accesses to {}M: store miss {:.2}%, LRU {:.2}%, window {:.1}% of {} items",
                    (i + 1) / 1_000_000,
                    100.0 * period.1 as f64 / period.0 as f64,
                    100.0 * period.2 as f64 / period.0 as f64,
                    100.0 * st.window_items as f64 / st.curr_items as f64,
                    st.curr_items
                );
                lru.capacity = st.curr_items as usize;
                period = (0, 0, 0);
            }
        }
    }
    let measured = (accesses - accesses / 2) as f64;
    println!(
        "span {span}, {accesses} accesses, second half: store miss {:.2}% ({} items), LRU of as many items miss {:.2}%",
        100.0 * store_misses as f64 / measured,
        lru.capacity,
        100.0 * lru_misses as f64 / measured
    );
}
