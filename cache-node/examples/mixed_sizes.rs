//! Cache-aside with mixed value sizes through a real store (byte budget): access a key (uniform or Zipf
//! popularity), read it, and on a miss set it with a size fixed per key (log-uniform 100..10,000 B by
//! default), holding its memory while it "arrives" as the server does (`server::as_received`). Prints the hit rate over the second half (of
//! requests, of bytes, and of the largest tenth of the keys by size), the items kept, the bytes of
//! keys and values kept, the share of each size band kept, where evictions came from and where the budget goes (chunks, idle chunks, page tails,
//! tables). A check of how the store spends a byte budget when sizes vary, not a benchmark of speed.
//!
//! `cargo run --release -p cache-node --example mixed_sizes -- [--mb 64] [--shards 8] [--keys 200000]
//! [--zipf 0.9] [--accesses 4000000] [--sizes loguniform|loguniform:MIN:MAX|uniform|N]
//! [--size-aware-admission false] [--size-aware-eviction false] [--in-flight N]`

use std::sync::Arc;

use cache_node::clock::{Clock, ManualClock};
use cache_node::server::{as_received, BUFFER_BYTES};
use cache_node::store::{NewItem, SlabClass, Store, StoreConfig};

fn main() {
    let mut mb = 64usize;
    let mut shards = 8usize;
    let mut keys = 200_000u64;
    let mut zipf = 0.0f64;
    let mut accesses = 4_000_000u64;
    let mut sizes = "loguniform".to_string();
    let mut size_aware_admission = true;
    let mut size_aware_eviction = true;
    let mut in_flight = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args.next().expect("a value after each flag");
        match flag.as_str() {
            "--mb" => mb = v.parse().expect("--mb"),
            "--shards" => shards = v.parse().expect("--shards"),
            "--keys" => keys = v.parse().expect("--keys"),
            "--zipf" => zipf = v.parse().expect("--zipf"),
            "--accesses" => accesses = v.parse().expect("--accesses"),
            "--sizes" => sizes = v,
            "--size-aware-admission" => size_aware_admission = v.parse().expect("true or false"),
            "--size-aware-eviction" => size_aware_eviction = v.parse().expect("true or false"),
            "--in-flight" => in_flight = v.parse().expect("--in-flight"),
            other => panic!("unknown flag {other}"),
        }
    }
    // `loguniform:MIN:MAX`: log-uniform between MIN and MAX bytes.
    let log_range: Option<(f64, f64)> = sizes.strip_prefix("loguniform:").map(|range| {
        let (min, max) = range.split_once(':').expect("--sizes loguniform:MIN:MAX");
        (
            min.parse().expect("--sizes MIN"),
            max.parse().expect("--sizes MAX"),
        )
    });
    let size_of = |k: u64| -> usize {
        let h = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        match (sizes.as_str(), log_range) {
            (_, Some((min, max))) => (min * (max / min).powf(h)) as usize,
            ("loguniform", _) => (100.0 * 100f64.powf(h)) as usize,
            ("uniform", _) => 100 + (9_900.0 * h) as usize,
            (n, _) => n.parse().expect("--sizes"),
        }
    };
    let cdf: Vec<f64> = if zipf > 0.0 {
        let mut total = 0.0;
        (0..keys)
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(zipf);
                total
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let draw = |next: &mut dyn FnMut() -> u64| -> u64 {
        if cdf.is_empty() {
            next() % keys
        } else {
            let r = (next() >> 11) as f64 / (1u64 << 53) as f64 * cdf[cdf.len() - 1];
            cdf.partition_point(|&c| c < r) as u64
        }
    };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_700_000_000));
    let store = Store::new(
        StoreConfig {
            memory_limit_bytes: mb << 20,
            shards,
            size_aware_admission,
            size_aware_eviction,
            ..Default::default()
        },
        clock,
    );
    let value = vec![b'x'; (0..keys).map(size_of).max().unwrap_or(0)];
    let (mut hits, mut reads) = (0u64, 0u64);
    // Byte hit rate, and the hit rate of the largest tenth of the keys by size (the values a
    // size-aware policy gives up first).
    let (mut hit_bytes, mut read_bytes) = (0u64, 0u64);
    let largest_tenth = {
        let mut sizes: Vec<usize> = (0..keys).map(size_of).collect();
        sizes.sort_unstable();
        sizes[sizes.len() * 9 / 10]
    };
    let (mut large_hits, mut large_reads) = (0u64, 0u64);
    let mut arriving = std::collections::VecDeque::new();
    for i in 0..accesses {
        let k = draw(&mut next);
        let key = format!("k{k}");
        let n = size_of(k);
        let hit = store.with_entry(key.as_bytes(), |e| {
            let hit = e.item().is_some();
            if hit {
                e.record_read();
            }
            hit
        });
        if !hit {
            if in_flight == 0 {
                // As the server stores a value it received (its memory held while it arrives).
                as_received(&store, key.as_bytes(), &value[..n], 0, |v| {
                    store.with_entry(key.as_bytes(), |e| e.insert(NewItem::plain(&[v])))
                })
                .expect("insert");
            } else {
                // A value with a mapping of its own lands at its miss and is stored `in_flight`
                // misses later, as values arriving on that many connections at once; others at once.
                let landed = store
                    .land(key.as_bytes(), n, 0, BUFFER_BYTES)
                    .ok()
                    .flatten()
                    .and_then(|mut landing| landing.grow_to(n).is_ok().then_some(landing));
                match landed {
                    Some(mut landing) => {
                        landing.write(&value[..n]);
                        arriving.push_back((key, landing));
                    }
                    None => {
                        let _ = store.with_entry(key.as_bytes(), |e| {
                            e.insert(NewItem::plain(&[&value[..n]]))
                        });
                    }
                }
                if arriving.len() > in_flight {
                    let (key, landing) = arriving.pop_front().expect("one arriving");
                    let _ = store.with_entry(key.as_bytes(), |e| {
                        e.insert(NewItem::plain(&[landing.value()]))
                    });
                }
            }
        }
        if i >= accesses / 2 {
            reads += 1;
            hits += hit as u64;
            read_bytes += n as u64;
            hit_bytes += if hit { n as u64 } else { 0 };
            if n >= largest_tenth {
                large_reads += 1;
                large_hits += hit as u64;
            }
        }
    }
    // Keys and values kept: walk the key space once (a read that finds nothing changes nothing).
    // And by size: the share of each size band's keys that are kept (bands of 10% of the keys by size).
    let (mut items, mut data) = (0u64, 0u64);
    let mut by_size: Vec<(usize, bool)> = Vec::with_capacity(keys as usize);
    for k in 0..keys {
        let key = format!("k{k}");
        let kept = store.with_entry(key.as_bytes(), |e| match e.item() {
            Some(it) => {
                items += 1;
                data += (key.len() + it.value().len()) as u64;
                true
            }
            None => false,
        });
        by_size.push((size_of(k), kept));
    }
    by_size.sort_unstable();
    let bands: Vec<String> = by_size
        .chunks(by_size.len().div_ceil(10))
        .map(|band| {
            let kept = band.iter().filter(|(_, kept)| *kept).count();
            format!(
                "{}-{} B {:.1}%",
                band[0].0,
                band[band.len() - 1].0,
                100.0 * kept as f64 / band.len() as f64
            )
        })
        .collect();
    let st = store.stats();
    println!(
        "hit rate {:.2}%  items {items}  keys+values {:.1} MiB (mean {} B)  arena {:.1} MiB  evictions {}  pages emptied {}  slabs_moved {}  size refusals {}  read in place {}  shards {}",
        100.0 * hits as f64 / reads as f64,
        data as f64 / (1 << 20) as f64,
        data / items.max(1),
        st.arena_bytes as f64 / (1 << 20) as f64,
        st.evictions,
        st.slab_page_evictions,
        st.slabs_moved,
        st.size_refusals,
        st.values_read_in_place,
        store.shard_count(),
    );
    println!(
        "byte hit rate {:.2}%  largest tenth (>= {largest_tenth} B) hit rate {:.2}%",
        100.0 * hit_bytes as f64 / read_bytes.max(1) as f64,
        100.0 * large_hits as f64 / large_reads.max(1) as f64,
    );
    println!("kept by size: {}", bands.join(", "));
    // Where the budget goes: memcached's `stats slabs` figures summed, beside the keys and values.
    // The arena counts the touched part of each page (`counted` here): the chunks in use, those freed,
    // and the rest (touched ends of pages short of a whole OS page, the spare pages); chunks never
    // handed out cost no budget unless they share an OS page with a touched one.
    let (classes, counted) = store.slab_classes();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let chunk_bytes = |count: fn(&SlabClass) -> u64| -> u64 {
        classes
            .iter()
            .map(|c| count(c) * u64::from(c.chunk_size))
            .sum()
    };
    let (in_use, freed) = (
        chunk_bytes(|c| c.used_chunks),
        chunk_bytes(|c| c.free_chunks),
    );
    let tables = st.index_bytes + st.policy_bytes;
    println!(
        "budget: chunks in use {:.1} MiB (keys+values {:.1}, the rest headers and rounding), freed {:.1}, \
         page ends and spare pages {:.1}, tables {:.1}, left {:.1}; never handed out {:.1} MiB (not \
         counted); {} size classes",
        mib(in_use),
        mib(data),
        mib(freed),
        mib(counted.saturating_sub(in_use + freed)),
        mib(tables),
        mib(st.limit_maxbytes.saturating_sub(counted + tables)),
        mib(chunk_bytes(|c| c.free_chunks_end)),
        classes.len(),
    );
}
