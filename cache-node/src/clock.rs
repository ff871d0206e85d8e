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
#[cfg(not(target_os = "linux"))]
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of memcached-style seconds.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the clock's start; never goes backwards.
    fn now(&self) -> u32;
    /// Unix seconds corresponding to [`Clock::now`].
    fn unix_now(&self) -> u64;
}

/// The real clock: monotonic seconds since construction, anchored to the wall clock at start.
///
/// It reads Linux's `CLOCK_MONOTONIC_COARSE`: the time of the last kernel tick (a few milliseconds old),
/// read from memory the kernel shares with the process, without the hardware counter read that
/// `Instant::now()` pays for. The store reads the clock on every request and needs whole seconds, so
/// the tick's resolution costs nothing (memcached goes further and updates a global second from a
/// timer).
#[derive(Debug)]
pub struct SystemClock {
    /// Monotonic origin, so a wall-clock step does not move `now()`.
    started: Duration,
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
            started: coarse_monotonic(),
            started_unix,
        }
    }
}

/// Monotonic time at the last kernel tick (Linux); elsewhere the precise monotonic clock.
#[cfg(target_os = "linux")]
pub(crate) fn coarse_monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists since Linux 2.6.32 and
    // the call cannot fail with a valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn coarse_monotonic() -> Duration {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// How far [`coarse_monotonic`] moves at a time: the kernel's tick on Linux. `None` where there is no
/// coarse clock (elsewhere, [`coarse_monotonic`] is the precise clock).
#[cfg(target_os = "linux")]
pub fn coarse_resolution() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes the resolution into the timespec it is given.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

#[cfg(not(target_os = "linux"))]
pub fn coarse_resolution() -> Option<Duration> {
    None
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        let elapsed = coarse_monotonic().saturating_sub(self.started);
        u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The coarse clock lags the precise one by at most a kernel tick (1-10 ms), so the time it measures
    /// between two reads lies within a tick or so of the precise time around those reads. Each coarse
    /// read is bracketed by precise ones, so a thread preempted between reads widens the bracket instead
    /// of failing the test. A wrong clock id (a per-thread CPU clock measures almost nothing across a
    /// sleep) or a unit slip in the conversion fails it.
    #[test]
    fn coarse_clock_follows_the_monotonic_clock() {
        use std::time::Instant;
        let tick_margin = Duration::from_millis(15);
        let before_start = Instant::now();
        let coarse_start = coarse_monotonic();
        let after_start = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let before_end = Instant::now();
        let coarse_end = coarse_monotonic();
        let after_end = Instant::now();
        let coarse = coarse_end - coarse_start;
        let shortest = before_end - after_start;
        let longest = after_end - before_start;
        assert!(
            coarse + tick_margin >= shortest && coarse <= longest + tick_margin,
            "coarse {coarse:?}, precise between {shortest:?} and {longest:?}"
        );
    }

    #[test]
    fn system_clock_starts_at_zero_on_the_wall_clock() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let clock = SystemClock::new();
        assert_eq!(clock.now(), 0);
        assert!(clock.unix_now().abs_diff(before) <= 1);
    }
}
