//! Injectable time source for the store and the server.
//!
//! memcached keeps a "current time" in whole seconds since the process started; expiry times,
//! lease windows and `last_access` are all expressed on that scale. [`Clock::now`] is that value
//! and [`Clock::unix_now`] is the matching wall-clock second, used to convert absolute exptimes
//! (anything above 30 days) into clock seconds.
//!
//! [`SystemClock`] follows the real monotonic clock; [`ManualClock`] only moves when a test tells
//! it to, so TTL, lease and aging tests are deterministic (moka's approach). This module does not
//! convert exptimes itself: that is protocol semantics and lives with the server.
//!
//! ```
//! use cache_node::clock::{Clock, ManualClock};
//! let clock = ManualClock::new(1_700_000_000);
//! assert_eq!(clock.now(), 0);
//! clock.advance(5);
//! assert_eq!(clock.now(), 5);
//! assert_eq!(clock.unix_now(), 1_700_000_005);
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of memcached-style seconds.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the clock's start; never goes backwards.
    fn now(&self) -> u32;
    /// Unix seconds corresponding to [`Clock::now`].
    fn unix_now(&self) -> u64;
}

/// The real clock: monotonic seconds since construction, anchored to the wall clock at start.
#[derive(Debug)]
pub struct SystemClock {
    /// Monotonic origin, so a wall-clock step does not move `now()`.
    started: Instant,
    /// Unix seconds at `started`, for converting absolute exptimes.
    started_unix: u64,
}

impl SystemClock {
    /// A clock whose `now()` is 0 at this instant.
    pub fn new() -> SystemClock {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        SystemClock {
            started: Instant::now(),
            started_unix,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }
    fn unix_now(&self) -> u64 {
        self.started_unix + u64::from(self.now())
    }
}

/// A clock moved by hand, for deterministic tests.
#[derive(Debug)]
pub struct ManualClock {
    /// Unix seconds when `now` was 0.
    start_unix: u64,
    /// Current clock seconds.
    now: AtomicU32,
}

impl ManualClock {
    /// A clock at `now() == 0` whose unix time is `start_unix`.
    pub fn new(start_unix: u64) -> ManualClock {
        ManualClock {
            start_unix,
            now: AtomicU32::new(0),
        }
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: u32) {
        self.now.fetch_add(secs, Ordering::SeqCst);
    }

    /// Sets the clock to `now` seconds. Setting it backwards is refused (the clock is monotonic).
    pub fn set(&self, now: u32) {
        self.now.fetch_max(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u32 {
        self.now.load(Ordering::SeqCst)
    }
    fn unix_now(&self) -> u64 {
        self.start_unix + u64::from(self.now())
    }
}
