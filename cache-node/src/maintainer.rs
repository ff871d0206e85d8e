//! The maintainer: one background thread that walks the store for expired items, waking every couple of
//! milliseconds while requests arrive and backing off to about once a second when the node is idle, as
//! memcached's LRU maintainer thread does.
//!
//! Why a thread of its own rather than a tokio task: a tokio timer fires only when a worker gets round to
//! checking it, so under load the walk would run late; and a thread that sleeps in the kernel and wakes is
//! a scheduling point. On a machine where the server's workers share cores with busy clients, the kernel
//! otherwise re-chooses which thread runs only at a wake-up or at its tick (4 ms at 250 Hz), so a reply
//! can wait a whole tick for its client to be scheduled. memcached gets the same effect from its LRU
//! maintainer; SERVER.md has the measurements (saturation p99 tracks the busy sleep) and the price: the extra
//! rescheduling costs about 3% of throughput at saturation (10% with more workers than cores), also with the
//! server and its clients pinned to different cores.
//!
//! Not here: what expiry removes and how the walk resumes ([`crate::store::Store::expire_some`]), and any
//! request serving. The pacing rules ([`Pacer`], [`ExpiryCredit`]) are pure and tested without threads.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::server::Node;

/// Default sleep between wake-ups while requests keep arriving (`--maintainer-sleep-us`).
pub fn default_busy_sleep() -> Duration {
    Duration::from_micros(2000)
}

/// The shortest sleep the pacer accepts: a zero sleep would make the thread spin on a core.
pub const MIN_SLEEP: Duration = Duration::from_micros(100);

/// Default longest sleep once idle (memcached's maintainer backs off to about a second too).
pub fn default_idle_sleep_max() -> Duration {
    Duration::from_secs(1)
}

/// Default expiry walk rate: item slots examined per second, whatever the wake-up rate.
pub fn default_expire_slots_per_sec() -> u64 {
    2560
}

/// How long the maintainer sleeps next: the busy sleep after a wake-up that saw new requests, else twice
/// the last sleep, up to the idle maximum (so an idle node wakes about once a second, not 500 times).
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Sleep while busy.
    busy: Duration,
    /// Upper bound of the doubling while idle.
    idle_max: Duration,
    /// The sleep to take next.
    next: Duration,
}

impl Pacer {
    /// Starts at the busy sleep. `busy` below [`MIN_SLEEP`] is raised to it, and `idle_max` below `busy` to
    /// `busy`.
    pub fn new(busy: Duration, idle_max: Duration) -> Self {
        let busy = busy.max(MIN_SLEEP);
        Pacer {
            busy,
            idle_max: idle_max.max(busy),
            next: busy,
        }
    }

    /// The sleep to take before the next wake-up.
    pub fn sleep(&self) -> Duration {
        self.next
    }

    /// Records whether the node served anything since the previous wake-up.
    pub fn woke(&mut self, busy: bool) {
        self.next = if busy {
            self.busy
        } else {
            (self.next * 2).min(self.idle_max)
        };
    }
}

/// The expiry walk's budget: `slots_per_sec` accrue with elapsed time and are spent at each wake-up, so the
/// walk's rate does not depend on how often the maintainer wakes. Unspent fractions carry over; at most one
/// second's worth accrues, so a stalled thread does not come back to a long walk under a shard lock.
#[derive(Debug, Clone)]
pub struct ExpiryCredit {
    /// Slots accrued per second.
    slots_per_sec: u64,
    /// The instant up to which accrued slots have been handed out.
    paid_until: Instant,
}

impl ExpiryCredit {
    /// Nothing accrued yet at `now`.
    pub fn new(slots_per_sec: u64, now: Instant) -> Self {
        ExpiryCredit {
            slots_per_sec,
            paid_until: now,
        }
    }

    /// Slots to examine at `now`.
    pub fn take(&mut self, now: Instant) -> usize {
        if self.slots_per_sec == 0 {
            return 0;
        }
        let cap = Duration::from_secs(1);
        let elapsed = now.saturating_duration_since(self.paid_until);
        if elapsed > cap {
            self.paid_until = now - cap;
        }
        let elapsed = now.saturating_duration_since(self.paid_until);
        let slots = elapsed.as_nanos() * u128::from(self.slots_per_sec) / 1_000_000_000;
        // Advance by exactly the time those slots stand for, keeping the remainder.
        let paid = Duration::from_nanos(
            u64::try_from(slots * 1_000_000_000 / u128::from(self.slots_per_sec))
                .unwrap_or(u64::MAX),
        );
        self.paid_until += paid;
        usize::try_from(slots).unwrap_or(usize::MAX)
    }
}

/// The running maintainer thread; [`Maintainer::stop`] ends and joins it.
pub struct Maintainer {
    /// Dropping it wakes the thread at once and tells it to end.
    stop: mpsc::Sender<()>,
    /// Joined at stop, so no walk runs after the server is gone.
    thread: JoinHandle<()>,
}

impl Maintainer {
    /// Starts the thread for `node`, paced by the node's config.
    pub fn start(node: Arc<Node>) -> io::Result<Maintainer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cache-node-maintainer".into())
            .spawn(move || run(&node, &stopped))?;
        Ok(Maintainer { stop, thread })
    }

    /// Ends the thread and waits for it (it is asleep or finishing a short walk).
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(node: &Node, stopped: &mpsc::Receiver<()>) {
    let config = &node.config;
    let mut pacer = Pacer::new(
        config.maintainer_busy_sleep,
        config.maintainer_idle_sleep_max,
    );
    let mut credit = ExpiryCredit::new(config.expire_slots_per_sec, Instant::now());
    let mut seen = node.counters.bytes_read();
    loop {
        match stopped.recv_timeout(pacer.sleep()) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        node.maintainer_wakeups.fetch_add(1, Ordering::Relaxed);
        let slots = credit.take(Instant::now());
        if slots > 0 {
            node.store.expire_some(slots);
        }
        // Every request adds to bytes_read (connections drain their counters once per read batch).
        let now_seen = node.counters.bytes_read();
        pacer.woke(now_seen != seen);
        seen = now_seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_backs_off_when_idle_and_snaps_back_when_busy() {
        let busy = Duration::from_millis(2);
        let mut p = Pacer::new(busy, Duration::from_millis(20));
        assert_eq!(p.sleep(), busy);
        p.woke(true);
        assert_eq!(p.sleep(), busy, "busy keeps the short sleep");
        let idle: Vec<u128> = (0..5)
            .map(|_| {
                p.woke(false);
                p.sleep().as_millis()
            })
            .collect();
        assert_eq!(
            idle,
            [4, 8, 16, 20, 20],
            "doubles, capped at the idle maximum"
        );
        p.woke(true);
        assert_eq!(p.sleep(), busy, "one busy wake-up is enough to come back");
    }

    #[test]
    fn pacer_idle_max_below_busy_is_raised() {
        let mut p = Pacer::new(Duration::from_millis(5), Duration::from_millis(1));
        p.woke(false);
        assert_eq!(p.sleep(), Duration::from_millis(5));
    }

    #[test]
    fn pacer_never_sleeps_zero() {
        let mut p = Pacer::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(p.sleep(), MIN_SLEEP);
        p.woke(false);
        assert_eq!(p.sleep(), MIN_SLEEP);
    }

    #[test]
    fn expiry_credit_keeps_the_rate_whatever_the_wakeup_period() {
        let start = Instant::now();
        // 2,560 slots a second, taken every 2 ms (5.12 slots each) or every 300 ms: 2,560 either way.
        for step_us in [2_000u64, 300_000] {
            let mut c = ExpiryCredit::new(2560, start);
            let mut total = 0;
            let mut t = start;
            while t < start + Duration::from_secs(3) {
                t += Duration::from_micros(step_us);
                total += c.take(t);
            }
            let elapsed = t - start;
            let expected = (elapsed.as_secs_f64() * 2560.0) as usize;
            assert!(
                total == expected || total + 1 == expected,
                "step {step_us} us: {total} slots for {expected}"
            );
        }
    }

    #[test]
    fn expiry_credit_caps_a_long_stall_at_one_second() {
        let start = Instant::now();
        let mut c = ExpiryCredit::new(1000, start);
        assert_eq!(c.take(start + Duration::from_secs(60)), 1000);
        assert_eq!(c.take(start + Duration::from_secs(60)), 0);
        assert_eq!(c.take(start + Duration::from_millis(60_010)), 10);
    }

    #[test]
    fn expiry_credit_zero_rate_walks_nothing() {
        let start = Instant::now();
        let mut c = ExpiryCredit::new(0, start);
        assert_eq!(c.take(start + Duration::from_secs(5)), 0);
    }
}
