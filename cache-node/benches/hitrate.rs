//! Hit-rate benchmark: our store against LRU, moka 0.12 and OPT (Belady) on every trace of a
//! directory, at capacity = 10% of the distinct keys, all computed in this run.
//!
//! `cargo bench -p cache-node --bench hitrate [-- TRACE_DIR]` (default `../shared/traces` beside the checkout:
//! the Caffeine simulator's trace files, which are not part of this repository).
//! Policy experiments: `WINDOW_PERCENT=20 ADAPTIVE=0 cargo bench ...` (knobs below: window,
//! sketch, adaptation, ghost admission, margin, `CONSERVATIVE`, `SEED`); `MOKA_SYNC=1` runs
//! moka's maintenance after each insert; `TWO_POOL_RESAMPLES=N` (default 20) sets how many
//! synthetic two-pool traces the last line averages over. `COPIES=N` replays each trace as N
//! independent copies of itself (keys renamed) interleaved at random, at 10% of N times the distinct
//! keys: the same workload in an N times larger cache (what a node of millions of items sees),
//! where the per-shard structures that do not grow with the cache would show.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use cache_node::replay::{read_trace, replay_config, replay_keys_with, TraceFormat};
use cache_node::store::WindowAdaptation;

fn lru_hits(keys: &[u64], cap: usize) -> u64 {
    // key -> last use; BTreeSet of (last use, key) gives the LRU end.
    let mut last: HashMap<u64, usize> = HashMap::new();
    let mut order: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0;
    for (i, &k) in keys.iter().enumerate() {
        if let Some(t) = last.insert(k, i) {
            order.remove(&(t, k));
            hits += 1;
        } else if last.len() > cap {
            let (t, victim) = order.pop_first().expect("non-empty");
            debug_assert!(t < i);
            last.remove(&victim);
        }
        order.insert((i, k));
    }
    hits
}

fn opt_hits(keys: &[u64], cap: usize) -> u64 {
    // Next use of each access (usize::MAX - i when never used again, unique per access).
    let mut next = vec![0usize; keys.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for i in (0..keys.len()).rev() {
        next[i] = seen.insert(keys[i], i).unwrap_or(usize::MAX - i);
    }
    let mut cached: HashMap<u64, usize> = HashMap::new();
    let mut by_next: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0;
    for (i, &k) in keys.iter().enumerate() {
        if let Some(old) = cached.insert(k, next[i]) {
            by_next.remove(&(old, k));
            hits += 1;
        } else if cached.len() > cap {
            let (_, victim) = by_next.pop_last().expect("non-empty");
            cached.remove(&victim);
        }
        by_next.insert((next[i], k));
    }
    hits
}

fn moka_hits(keys: &[u64], cap: usize) -> u64 {
    // moka evicts in batched maintenance, so between runs it holds more than `cap` entries,
    // which raises its hit rate; MOKA_SYNC=1 runs the maintenance after every insert (the
    // reference figures, like the issue's, use moka as an application would: no sync).
    let sync = std::env::var("MOKA_SYNC").is_ok_and(|v| v != "0");
    let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::new(cap as u64);
    let mut hits = 0;
    for &k in keys {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, ());
            if sync {
                cache.run_pending_tasks();
            }
        }
    }
    hits
}

fn pct(hits: u64, n: usize) -> f64 {
    100.0 * hits as f64 / n as f64
}

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/traces"))
        });
    let config_overrides = |c: &mut cache_node::store::StoreConfig| {
        if let Ok(w) = std::env::var("WINDOW_PERCENT") {
            c.window_percent = w.parse().expect("WINDOW_PERCENT");
        }
        if let Ok(v) = std::env::var("SKETCH_PER_ITEM") {
            c.sketch_counters_per_item = v.parse().expect("SKETCH_PER_ITEM");
        }
        if let Ok(v) = std::env::var("SAMPLE_FACTOR") {
            c.sample_factor = v.parse().expect("SAMPLE_FACTOR");
        }
        if let Ok(v) = std::env::var("CLIMBER_SAMPLE") {
            c.climber_sample_factor = v.parse().expect("CLIMBER_SAMPLE");
        }
        if let Ok(v) = std::env::var("PROTECTED_PERCENT") {
            c.protected_percent = v.parse().expect("PROTECTED_PERCENT");
        }
        if let Ok(a) = std::env::var("ADAPTIVE") {
            c.window_adaptation = match a.as_str() {
                "0" | "fixed" => WindowAdaptation::Fixed,
                "climber" => WindowAdaptation::HillClimber,
                _ => WindowAdaptation::Ghost,
            };
        }
        if let Ok(v) = std::env::var("MARGIN") {
            c.admission_margin = v.parse().expect("MARGIN");
        }
        if let Ok(v) = std::env::var("COLD_VICTIMS") {
            c.cold_victims = v != "0";
        }
        if let Ok(v) = std::env::var("GHOST_ADMISSION") {
            c.ghost_admission = v != "0";
        }
        if let Ok(v) = std::env::var("CONSERVATIVE") {
            c.conservative_update = v != "0";
        }
        if let Ok(v) = std::env::var("SEED") {
            c.hash_seed = v.parse().expect("SEED");
        }
        if let Ok(v) = std::env::var("GHOST_STEP") {
            c.ghost_step_items = v.parse().expect("GHOST_STEP");
        }
    };
    let copies: usize = std::env::var("COPIES")
        .map(|v| v.parse().expect("COPIES"))
        .unwrap_or(1);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (the key traces, the Caffeine simulator's lirs_*.trace.gz and \
                 cache2k_*.trace.xz, are not in this repository: pass their directory as the argument)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| TraceFormat::detect(p).is_some())
        .collect();
    paths.sort();
    println!(
        "{:<16} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "trace", "accesses", "distinct", "cap", "LRU", "moka", "OPT", "ours", "gap", "window%"
    );
    let (mut gap_sum, mut best_gap_sum, mut n, mut beats_all) = (0.0, 0.0, 0, true);
    for path in &paths {
        let keys = read_trace(path, TraceFormat::detect(path).expect("filtered")).expect("trace");
        let keys = interleave_copies(&keys, copies);
        let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
        let cap = (distinct / 10).max(1);
        let lru = pct(lru_hits(&keys, cap), keys.len());
        let moka = pct(moka_hits(&keys, cap), keys.len());
        let opt = pct(opt_hits(&keys, cap), keys.len());
        let mut config = replay_config(cap);
        config_overrides(&mut config);
        if let Ok(extra) = std::env::var("EXTRA_ITEMS") {
            let extra: usize = extra.parse().expect("EXTRA_ITEMS");
            config.max_items = Some(cap + extra);
            config.window_percent = 100.0 * extra as f64 / (cap + extra) as f64;
        }
        let report = replay_keys_with(keys.iter().copied(), cap, config);
        let ours = report.hit_rate_percent();
        let name = Path::new(path.file_name().expect("file"))
            .to_string_lossy()
            .split('.')
            .next()
            .unwrap_or("")
            .to_string();
        let name = if copies > 1 {
            format!("x{copies}_{name}")
        } else {
            name
        };
        println!(
            "{name:<16} {:>9} {distinct:>8} {cap:>6} {lru:>7.2} {moka:>7.2} {opt:>7.2} {ours:>7.2} {:>7.2} {:>7.1}{}",
            keys.len(),
            opt - ours,
            report.final_window_percent,
            if ours > lru && ours > moka { "" } else { "  (not above both LRU and moka)" }
        );
        beats_all &= ours > lru && ours > moka;
        gap_sum += opt - ours;
        best_gap_sum += opt - lru.max(moka);
        n += 1;
    }
    if n > 0 {
        println!(
            "mean gap to OPT: ours {:.2} points, better of LRU/moka {:.2} points; above both on every trace: {}",
            gap_sum / n as f64,
            best_gap_sum / n as f64,
            beats_all
        );
    }
    two_pool_resamples(&config_overrides);
}

/// `copies` independent copies of `keys` (key k of copy c becomes k x copies + c), each in its own
/// order, interleaved by a seeded random choice among the copies not yet finished.
fn interleave_copies(keys: &[u64], copies: usize) -> Vec<u64> {
    if copies <= 1 || keys.is_empty() {
        return keys.to_vec();
    }
    let n = copies as u64;
    let mut next = vec![0usize; copies];
    let mut live: Vec<usize> = (0..copies).collect();
    let mut out = Vec::with_capacity(keys.len() * copies);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    while !live.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let j = (rng % live.len() as u64) as usize;
        let c = live[j];
        out.push(keys[next[c]] * n + c as u64);
        next[c] += 1;
        if next[c] == keys.len() {
            live.swap_remove(j);
        }
    }
    out
}

/// lirs_2_pools is 50% accesses to 100 hot keys and 50% to 9,839 cold keys, each drawn
/// uniformly at random (its per-key counts fit a Poisson law). On the cold half no online
/// policy can beat chance: a cold key's next access is independent of its past, so any policy
/// that keeps the hot keys and stays full hits the cold half with the same probability,
/// (capacity - 100) / 9,839, and the trace's one draw decides which policy lands 0.1 point
/// higher. This resamples traces of that shape (`TWO_POOL_RESAMPLES`, default 20; 0 skips)
/// and prints each policy's mean and spread, and how often ours is above both others.
fn two_pool_resamples(config_overrides: &dyn Fn(&mut cache_node::store::StoreConfig)) {
    let runs: u64 = std::env::var("TWO_POOL_RESAMPLES")
        .ok()
        .map(|v| v.parse().expect("TWO_POOL_RESAMPLES"))
        .unwrap_or(20);
    if runs == 0 {
        return;
    }
    let (hot, cold, accesses) = (100u64, 9_839u64, 100_000usize);
    let cap = ((hot + cold) / 10) as usize;
    let (mut ours_all, mut lru_all, mut moka_all, mut above) = (vec![], vec![], vec![], 0);
    for run in 0..runs {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ run.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let keys: Vec<u64> = (0..accesses)
            .map(|_| {
                let r = next();
                if r & 1 == 0 {
                    (r >> 1) % hot
                } else {
                    hot + (r >> 1) % cold
                }
            })
            .collect();
        let lru = pct(lru_hits(&keys, cap), keys.len());
        let moka = pct(moka_hits(&keys, cap), keys.len());
        let mut config = replay_config(cap);
        config_overrides(&mut config);
        let ours = replay_keys_with(keys.iter().copied(), cap, config).hit_rate_percent();
        above += u32::from(ours > lru && ours > moka);
        ours_all.push(ours);
        lru_all.push(lru);
        moka_all.push(moka);
    }
    let mean_sd = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var.sqrt())
    };
    let stats = |v: &[f64]| {
        let (mean, sd) = mean_sd(v);
        format!("{mean:.2} (sd {sd:.2})")
    };
    // Paired with ours run by run; the standard error is that of the mean difference.
    let diff = |other: &[f64]| {
        let d: Vec<f64> = ours_all.iter().zip(other).map(|(o, x)| o - x).collect();
        let (mean, sd) = mean_sd(&d);
        let se = sd / (d.len() as f64).sqrt();
        format!("{mean:.2} (sd {sd:.2}), standard error {se:.2}")
    };
    let chance = 100.0 * (0.5 + 0.5 * (cap as f64 - hot as f64) / cold as f64);
    println!(
        "two-pool traces resampled {runs} times (cap {cap}; any policy keeping the hot keys: about {chance:.2}): \
         LRU {}, moka {}, ours {}; ours above both in {above} of {runs}; \
         ours - LRU {}; ours - moka {}",
        stats(&lru_all),
        stats(&moka_all),
        stats(&ours_all),
        diff(&lru_all),
        diff(&moka_all)
    );
}
