//! How well could *choosing* the window size per period do on a trace? Replays the trace
//! through the real store with fixed windows of 0.5-99% (ghost feedback off), then scores two
//! choosers over periods of 0.5-10 x capacity accesses:
//!
//! - *lagged leader*: each period, use the window that hit most in the previous period (kept on
//!   a tie; what a
//!   mini-simulation climber such as Caffeine's MiniSim could at best do, switching for free);
//! - *oracle*: each period, the window that hits most in that same period (needs foresight).
//!
//! `cargo run --release -p cache-node --example window_oracle -- ../shared/traces/lirs_sprite.trace.gz`
//! (capacity = 10% of the distinct keys, as in the hit-rate bench). An experiment for
//! STORE.md, not part of the store.

use std::path::Path;

use cache_node::replay::{read_trace, replay_config, replay_each, TraceFormat};
use cache_node::store::WindowAdaptation;

const WINDOWS_PERCENT: [f64; 9] = [0.5, 1.0, 3.0, 10.0, 20.0, 40.0, 60.0, 80.0, 99.0];

fn hits_with_fixed_window(keys: &[u64], cap: usize, window_percent: f64) -> Vec<bool> {
    let mut config = replay_config(cap);
    config.window_percent = window_percent;
    config.window_adaptation = WindowAdaptation::Fixed;
    let mut hits = Vec::with_capacity(keys.len());
    replay_each(keys.iter().copied(), config, |hit| hits.push(hit));
    hits
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: window_oracle TRACE")?;
    let path = Path::new(&path);
    let format = TraceFormat::detect(path).ok_or("unknown trace format")?;
    let keys = read_trace(path, format)?;
    let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
    let cap = (distinct / 10).max(1);
    let pct = |hits: usize| 100.0 * hits as f64 / keys.len() as f64;
    let runs: Vec<Vec<bool>> = WINDOWS_PERCENT
        .iter()
        .map(|&w| hits_with_fixed_window(&keys, cap, w))
        .collect();
    print!("fixed windows:");
    for (w, run) in WINDOWS_PERCENT.iter().zip(&runs) {
        print!(" {w}%={:.2}", pct(run.iter().filter(|&&h| h).count()));
    }
    println!();
    for period_factor in [0.5, 1.0, 2.0, 5.0, 10.0] {
        let period = ((cap as f64 * period_factor) as usize).max(1);
        let (mut lagged, mut oracle) = (0, 0);
        let mut leader = 1; // the store's initial 1% window
        for start in (0..keys.len()).step_by(period) {
            let end = (start + period).min(keys.len());
            let counts: Vec<usize> = runs
                .iter()
                .map(|r| r[start..end].iter().filter(|&&h| h).count())
                .collect();
            lagged += counts[leader];
            oracle += counts.iter().max().copied().unwrap_or(0);
            // Switch only to a strictly better window (ties keep the current one).
            let best = (0..runs.len()).max_by_key(|&j| counts[j]).unwrap_or(leader);
            if counts[best] > counts[leader] {
                leader = best;
            }
        }
        println!(
            "period {period_factor} x capacity: lagged leader {:.2}, per-period oracle {:.2}",
            pct(lagged),
            pct(oracle)
        );
    }
    Ok(())
}
