//! Trace replay: runs a key trace through the real [`Store`] at a capacity in items and reports
//! the hit rate.
//!
//! Each access is a lookup; a miss is followed by a store of the key (cache-aside), exactly what
//! `cache-node replay` and the hit-rate benchmark measure. The store is seeded, so a trace replays
//! to the same hit rate on every run. Trace formats (see `../shared/traces/README.md` beside the checkout):
//! gzip text with one decimal key per line (`.gz`; blank lines and `*` markers are skipped), and xz-compressed big-endian `u32` (`.xz`) or
//! `u64` keys. This module does not print anything; the CLI formats the report.
//!
//! ```
//! use cache_node::replay::{replay_keys, ReplayReport};
//! // capacity 2: the loop 1,2,1,2 hits after the first two misses
//! let report = replay_keys([1u64, 2, 1, 2].into_iter(), 2);
//! assert_eq!((report.accesses, report.hits), (4, 2));
//! ```

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use crate::clock::ManualClock;
use crate::store::{NewItem, Store, StoreConfig};

/// Errors from reading or replaying a trace.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace file could not be read or decompressed.
    #[error("reading trace {path}: {source}")]
    Io {
        /// The trace path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The trace content is malformed.
    #[error("bad trace {path}: {reason}")]
    Format {
        /// The trace path.
        path: String,
        /// What is wrong, with a line or byte position.
        reason: String,
    },
}

/// How the keys of a trace file are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// gzip-compressed text, one decimal key per line.
    GzipText,
    /// xz-compressed big-endian 32-bit keys back to back.
    XzU32,
    /// xz-compressed big-endian 64-bit keys back to back.
    XzU64,
}

impl TraceFormat {
    /// Guesses the format from the file name: `.gz` is text, `.xz` is `u32` keys unless the name
    /// contains `u64`.
    pub fn detect(path: &Path) -> Option<TraceFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".gz") {
            Some(TraceFormat::GzipText)
        } else if name.ends_with(".xz") {
            Some(if name.contains("u64") {
                TraceFormat::XzU64
            } else {
                TraceFormat::XzU32
            })
        } else {
            None
        }
    }
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Accesses replayed.
    pub accesses: u64,
    /// Accesses that hit.
    pub hits: u64,
    /// Capacity in items.
    pub capacity_items: usize,
    /// The W-TinyLFU window share (percent) at the end of the replay, where the hill climber
    /// left it.
    pub final_window_percent: f64,
}

impl ReplayReport {
    /// Hit rate in percent (0 for an empty trace).
    pub fn hit_rate_percent(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.accesses as f64
        }
    }
}

/// Reads all keys of a trace file in `format`.
pub fn read_trace(path: &Path, format: TraceFormat) -> Result<Vec<u64>, ReplayError> {
    let shown = path.display().to_string();
    let io = |source| ReplayError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut keys = Vec::new();
    match format {
        TraceFormat::GzipText => {
            let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
            for (n, line) in reader.lines().enumerate() {
                let line = line.map_err(io)?;
                let t = line.trim();
                // The LIRS traces mark phase boundaries with a lone "*" (Caffeine skips them too).
                if t.is_empty() || t == "*" {
                    continue;
                }
                let key = t.parse::<u64>().map_err(|e| ReplayError::Format {
                    path: shown.clone(),
                    reason: format!("line {}: {t:?} is not a decimal key: {e}", n + 1),
                })?;
                keys.push(key);
            }
        }
        TraceFormat::XzU32 | TraceFormat::XzU64 => {
            let mut bytes = Vec::new();
            xz2::read::XzDecoder::new(file)
                .read_to_end(&mut bytes)
                .map_err(io)?;
            let width = if format == TraceFormat::XzU32 { 4 } else { 8 };
            if bytes.len() % width != 0 {
                return Err(ReplayError::Format {
                    path: shown,
                    reason: format!(
                        "{} bytes is not a whole number of {width}-byte keys",
                        bytes.len()
                    ),
                });
            }
            keys.reserve(bytes.len() / width);
            for c in bytes.chunks_exact(width) {
                keys.push(if width == 4 {
                    u64::from(u32::from_be_bytes(c.try_into().expect("4 bytes")))
                } else {
                    u64::from_be_bytes(c.try_into().expect("8 bytes"))
                });
            }
        }
    }
    Ok(keys)
}

/// The store configuration replay uses: one shard (so the capacity is exact), bounded by items,
/// memory unbounded, everything else at the server's defaults.
pub fn replay_config(capacity_items: usize) -> StoreConfig {
    StoreConfig {
        memory_limit_bytes: usize::MAX / 4,
        shards: 1,
        max_items: Some(capacity_items.max(1)),
        ..StoreConfig::default()
    }
}

/// Replays `keys` through a fresh single-shard store bounded to `capacity_items` items.
pub fn replay_keys(keys: impl Iterator<Item = u64>, capacity_items: usize) -> ReplayReport {
    replay_keys_with(keys, capacity_items, replay_config(capacity_items))
}

/// Replays `keys` through a fresh store built from `config` (for policy experiments).
pub fn replay_keys_with(
    keys: impl Iterator<Item = u64>,
    capacity_items: usize,
    config: StoreConfig,
) -> ReplayReport {
    let mut report = ReplayReport {
        accesses: 0,
        hits: 0,
        capacity_items,
        final_window_percent: 0.0,
    };
    let store = replay_each(keys, config, |hit| {
        report.accesses += 1;
        report.hits += u64::from(hit);
    });
    report.final_window_percent = store.window_percent().first().copied().unwrap_or(0.0);
    report
}

/// Replays `keys` through a fresh store built from `config`, telling `on_access` whether each
/// access hit; returns the store for inspection. The one replay loop: a lookup, and on a miss
/// a store of the key.
pub fn replay_each(
    keys: impl Iterator<Item = u64>,
    config: StoreConfig,
    mut on_access: impl FnMut(bool),
) -> Store {
    let store = Store::new(config, Arc::new(ManualClock::new(0)));
    for key in keys {
        let hit = store.with_entry(&key.to_be_bytes(), |e| {
            if e.item().is_some() {
                e.record_read();
                true
            } else {
                // A miss is not counted by the sketch; the insert is (as in Caffeine).
                let _ = e.insert(NewItem::plain(&[]));
                false
            }
        });
        on_access(hit);
    }
    store
}

/// Replays the trace at `path` (format detected from its name) at `capacity_items`.
pub fn run_replay(path: &Path, capacity_items: usize) -> Result<ReplayReport, ReplayError> {
    let format = TraceFormat::detect(path).ok_or_else(|| ReplayError::Format {
        path: path.display().to_string(),
        reason: "unknown trace format: expected a .gz (text) or .xz (u32 keys) file".into(),
    })?;
    run_replay_with(path, format, capacity_items)
}

/// Replays the trace at `path` in `format` at `capacity_items`.
pub fn run_replay_with(
    path: &Path,
    format: TraceFormat,
    capacity_items: usize,
) -> Result<ReplayReport, ReplayError> {
    let keys = read_trace(path, format)?;
    // A store of as many items as the trace has accesses never evicts, so any larger capacity
    // replays to the same hits; building it at the capacity asked for would size the admission
    // sketch (6 bytes an item) for it, and `--capacity 1000000000000` aborted on that allocation.
    let sized = capacity_items.min(keys.len());
    Ok(replay_keys_with(
        keys.into_iter(),
        capacity_items,
        replay_config(sized),
    ))
}
