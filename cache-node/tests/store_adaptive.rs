//! The adaptive window: it grows on a recency-friendly workload and stays small on a
//! frequency-friendly one, and the growth pays: a fixed 1% window (the control) does worse on
//! the recency workload.

use cache_node::replay::{replay_config, replay_each, replay_keys_with};
use cache_node::store::{StoreStats, WindowAdaptation};

/// Working sets of 80 keys (capacity 100) that change every 20 rounds: recency wins, and
/// frequency counts from the old phase keep new keys out of a small window's main space.
fn shifting_phases() -> Vec<u64> {
    let mut keys = Vec::new();
    let mut x = 7u64;
    for phase in 0..40u64 {
        for _ in 0..20 {
            for _ in 0..80 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                keys.push(phase * 1000 + x % 80);
            }
        }
    }
    keys
}

/// A loop over 1,000 keys (capacity 100): only a fixed subset can ever hit.
fn big_loop() -> Vec<u64> {
    (0..100).flat_map(|_| 0..1000u64).collect()
}

fn run(keys: &[u64], adaptation: WindowAdaptation) -> (f64, f64) {
    let mut config = replay_config(100);
    config.window_adaptation = adaptation;
    let r = replay_keys_with(keys.iter().copied(), 100, config);
    (r.hit_rate_percent(), r.final_window_percent)
}

#[test]
fn window_grows_for_recency_and_stays_small_for_loops() {
    let phases = shifting_phases();
    let (ghost_rate, ghost_window) = run(&phases, WindowAdaptation::Ghost);
    let (fixed_rate, _) = run(&phases, WindowAdaptation::Fixed);
    eprintln!(
        "phases: ghost {ghost_rate:.2}% (window {ghost_window:.1}%), fixed 1% {fixed_rate:.2}%"
    );
    assert!(ghost_window > 20.0, "window grew: {ghost_window}");
    assert!(
        ghost_rate > fixed_rate + 2.0,
        "adaptation pays: {ghost_rate} vs fixed {fixed_rate}"
    );

    let looped = big_loop();
    let (loop_rate, loop_window) = run(&looped, WindowAdaptation::Ghost);
    eprintln!("loop: ghost {loop_rate:.2}% (window {loop_window:.1}%)");
    assert!(
        loop_window < 5.0,
        "window stays small on a loop: {loop_window}"
    );
    assert!(
        loop_rate > 8.0,
        "a fixed subset of the loop hits: {loop_rate}"
    );
}

/// A hot set of 100 keys that was popular (saturated sketch counts), then a new working set of
/// 15 keys used in a tight cycle (capacity 100, probation about 20): the new keys leaving the small window lose
/// the admission duel to the old favourites until the sketch's halving has aged them. Ghost
/// admission lets a new key that comes back soon after being turned away into the main space
/// at once. The window is held at its 1% (`ghost_step_items` = 0) so that its growth, the other
/// answer to the same misses, does not hide the effect. Control: ghost admission off.
fn favourites_then_new_cycle() -> Vec<u64> {
    let mut keys = Vec::new();
    for _ in 0..20 {
        keys.extend(0..100u64);
    }
    for _ in 0..20 {
        keys.extend(1000..1015u64);
    }
    keys
}

#[test]
fn ghost_admission_lets_returning_keys_in() {
    let keys = favourites_then_new_cycle();
    let with = |ghost_admission: bool| {
        let mut config = replay_config(100);
        config.ghost_admission = ghost_admission;
        config.ghost_step_items = 0.0;
        replay_keys_with(keys.iter().copied(), 100, config).hits
    };
    let (on, off) = (with(true), with(false));
    eprintln!("hits: ghost admission {on}, without {off}");
    // Measured: 2171 vs 2100 (of the 300 accesses to the new keys, 271 vs 200 hit).
    assert!(on > off + 50, "ghost admission on {on} vs off {off}");
}

/// Keys drawn from a Zipf(`s`) popularity over `n` keys (inverse CDF, xorshift, fixed seed): the
/// shape of most cache workloads, where frequency is the signal and recency adds nothing.
fn zipf(n: usize, s: f64, accesses: usize) -> Vec<u64> {
    let mut cumulative = Vec::with_capacity(n);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / (rank as f64).powf(s);
        cumulative.push(total);
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..accesses)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64 * total;
            cumulative.partition_point(|&c| c < u) as u64
        })
        .collect()
}

/// Under a Zipf popularity the adaptive policy must do as well as the plain W-TinyLFU it adapts
/// (a fixed 1% window, no ghost admission: moka and Caffeine's shape). Two things used to cost it
/// 1-2 points there (STORE.md, "Adaptive window"): the filter turns many keys away and they come
/// back at random, so ghost hits counted over the whole window list grew the window to 15-30%;
/// and ghost admission let those keys in unjudged, pushing out main-space victims that were
/// more likely to be used again. Measured here (Zipf 0.8, 300,000 accesses over 50,000 keys,
/// capacity 10% of the distinct keys): see the asserts' messages. Without the recent-evictions
/// rule the window ends above 10%; without the yield test of ghost admission the adaptive policy
/// falls about a point below the control.
#[test]
fn a_zipf_popularity_keeps_the_window_small_and_ghost_admission_off() {
    let keys = zipf(50_000, 0.8, 300_000);
    let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
    let capacity = distinct / 10;
    let run = |adaptation: WindowAdaptation, ghost_admission: bool| {
        let mut config = replay_config(capacity);
        config.window_adaptation = adaptation;
        config.ghost_admission = ghost_admission;
        replay_keys_with(keys.iter().copied(), capacity, config)
    };
    let adaptive = run(WindowAdaptation::Ghost, true);
    let plain = run(WindowAdaptation::Fixed, false);
    eprintln!(
        "zipf: adaptive {:.2}% (window {:.1}%), plain W-TinyLFU {:.2}%",
        adaptive.hit_rate_percent(),
        adaptive.final_window_percent,
        plain.hit_rate_percent()
    );
    assert!(
        adaptive.final_window_percent < 5.0,
        "window stays small: {:.1}%",
        adaptive.final_window_percent
    );
    assert!(
        adaptive.hit_rate_percent() > plain.hit_rate_percent() - 0.3,
        "adaptive {:.2}% against plain {:.2}%",
        adaptive.hit_rate_percent(),
        plain.hit_rate_percent()
    );
}

/// The store's counters show which way ghost admission went: on the phased workload of
/// `ghost_admission_lets_returning_keys_in` it lets returning keys in and never declines, under
/// the Zipf popularity above it declines most of them (measured: 14 admitted, 0 declined; 5,927
/// admitted, 13,782 declined: it admits one in 8 anyway, to keep measuring, and admits all while the
/// measure says it pays, as at the start).
#[test]
fn the_stats_show_whether_ghost_admission_pays() {
    let stats_after = |keys: &[u64], capacity: usize| -> StoreStats {
        replay_each(keys.iter().copied(), replay_config(capacity), |_| {}).stats()
    };
    let phased = stats_after(&favourites_then_new_cycle(), 100);
    let keys = zipf(50_000, 0.8, 300_000);
    let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
    let skewed = stats_after(&keys, distinct / 10);
    eprintln!(
        "phased: {} admitted, {} declined; zipf: {} admitted, {} declined",
        phased.ghost_admissions,
        phased.ghost_admissions_declined,
        skewed.ghost_admissions,
        skewed.ghost_admissions_declined
    );
    assert!(phased.ghost_admissions > 0 && phased.ghost_admissions_declined == 0);
    assert!(skewed.ghost_admissions_declined > 2 * skewed.ghost_admissions);
}

/// Phases of `per_phase` accesses, 90% uniform over a `width`-key range that moves `shift` keys a
/// phase and 10% to a hot set of 1,000 keys of Zipf(0.8) popularity (xorshift, fixed seed): the shape
/// of `val/phases2` of `tools/synthetic_traces.py`, half its length. A key of the range is used about
/// 3 times a phase and lives about 3 phases, and the large window this wants holds it meanwhile.
fn sliding_range(phases: u64, per_phase: usize, width: u64, shift: u64) -> Vec<u64> {
    let hot = zipf(1_000, 0.8, phases as usize * per_phase);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut keys = Vec::with_capacity(hot.len());
    for phase in 0..phases {
        for i in 0..per_phase {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            keys.push(if x % 10 == 0 {
                1 << 40 | hot[phase as usize * per_phase + i]
            } else {
                phase * shift + (x >> 8) % width
            });
        }
    }
    keys
}

/// Cold victims pay only while the items they evict come back no more often than the probation
/// LRU items they spare. On a sliding range they do not: the keys seen once that they would evict
/// are the new phase's, and come back (81-82% of them on the phased synthetic traces, against
/// 15-32% of the LRU victims). The yield test turns them down there: measured 82.84% with cold
/// victims (770 taken while the test was still learning or probing, 33,151 declined) against 82.90%
/// without; without the yield test they are all taken (4,501) and the policy scores 82.47%.
#[test]
fn cold_victims_are_declined_where_the_keys_seen_once_come_back() {
    let keys = sliding_range(30, 15_000, 4_000, 1_500);
    let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
    let capacity = distinct / 10;
    let run = |cold_victims: bool| {
        let mut config = replay_config(capacity);
        config.cold_victims = cold_victims;
        let mut hits = 0u64;
        let store = replay_each(keys.iter().copied(), config, |hit| hits += u64::from(hit));
        (100.0 * hits as f64 / keys.len() as f64, store.stats())
    };
    let (with, stats) = run(true);
    let (without, _) = run(false);
    eprintln!(
        "sliding range, capacity {capacity}: {with:.2}% with cold victims ({} taken, {} declined), \
         {without:.2}% without",
        stats.cold_victims, stats.cold_victims_declined
    );
    assert!(with > without - 0.15, "{with:.2}% against {without:.2}%");
    assert!(
        stats.cold_victims_declined > 10 * stats.cold_victims,
        "taken {}, declined {}",
        stats.cold_victims,
        stats.cold_victims_declined
    );
}
