//! Server counters with memcached's `stats` names, plus lease counters.
//!
//! Each connection counts into a plain [`Counters`] (no atomics, no sharing on the hot path) and adds it to
//! the node's [`SharedCounters`] once per read batch. `stats` and the Prometheus endpoint read the shared
//! ones together with the store's own counters. This module does not format replies; `commands` and
//! `metrics` do.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

macro_rules! counters {
    ($($name:ident : $help:literal),* $(,)?) => {
        /// Per-connection counters, added to [`SharedCounters`] in batches.
        #[derive(Debug, Default, Clone)]
        pub struct Counters {
            $(#[doc = $help] pub $name: u64,)*
        }

        /// Node-wide counters.
        #[derive(Debug, Default)]
        pub struct SharedCounters {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl SharedCounters {
            /// Adds a connection's counts and zeroes them.
            pub fn drain_from(&self, c: &mut Counters) {
                $(if c.$name != 0 {
                    self.$name.fetch_add(c.$name, Ordering::Relaxed);
                    c.$name = 0;
                })*
            }

            /// Every counter as (memcached name, help text, value).
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Ordering::Relaxed)),)*]
            }

            /// Zeroes every counter (`stats reset`).
            pub fn reset(&self) {
                $(self.$name.store(0, Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    total_connections: "Connections opened since start.",
    rejected_connections: "Connections refused because -c was reached.",
    cmd_get: "Keys requested by get, gets, mg (but an mg whose T touched an item) and lease-get.",
    cmd_set: "Storage commands (set, add, replace, append, prepend, cas, ms, lease-set).",
    cmd_flush: "flush_all commands.",
    cmd_touch: "touch, gat and gats keys, and mg whose T touched an item (counted as touches only).",
    get_hits: "Retrievals that found a live item.",
    get_misses: "Retrievals that found nothing, or a lease placeholder (or, for text commands, a stale item).",
    delete_hits: "Deletes that removed an item (md I, which keeps it stale, is none).",
    delete_misses: "Deletes of absent keys, and md refused for a CAS mismatch.",
    incr_hits: "incr of numeric values (ma included; not ma N creating one).",
    incr_misses: "incr of absent keys.",
    decr_hits: "decr of numeric values (ma included; not ma N creating one).",
    decr_misses: "decr of absent keys.",
    cas_hits: "cas (or ms C in set/replace mode) that stored.",
    cas_misses: "cas (or ms C in set/replace mode) of absent keys.",
    cas_badval: "cas (or ms C in set/replace mode) refused because the CAS value differed.",
    touch_hits: "touch/gat/mg T of present keys.",
    touch_misses: "touch/gat of absent keys.",
    bytes_read: "Bytes read from clients.",
    bytes_written: "Bytes written to clients.",
    protocol_errors: "Requests answered with ERROR, CLIENT_ERROR or SERVER_ERROR.",
    lease_grants: "Leases handed out (mg W on a miss or stale item, lease-get token).",
    lease_hot_misses: "Readers told another client holds the lease (mg Z, lease-get token 1).",
    lease_stale_served: "Stale values served (mg X, lease-get on an invalidated item).",
    lease_sets_stored: "Lease refills stored (ms C or lease-set with a valid token).",
    lease_sets_refused: "Lease refills refused (token voided by a delete, invalidation or newer lease).",
    lease_invalidations: "Items marked stale by md I.",
}

/// Thread numbers handed out on first use, see [`thread_slot`].
static NEXT_THREAD_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's number, once it has counted something or [`set_thread_slot`] gave it one.
    static THREAD_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The calling thread's number: the one [`set_thread_slot`] gave it, or else the next free one, taken the
/// first time it counts. In the binary only the worker threads count, so they get 0, 1, 2, ... and each
/// its own slot; in a test process that runs many servers numbers wrap around the slot count and two
/// threads may share a slot, which costs speed, never a count (the slots are atomic).
fn thread_slot() -> usize {
    THREAD_SLOT.with(|slot| {
        slot.get().unwrap_or_else(|| {
            let n = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed);
            slot.set(Some(n));
            n
        })
    })
}

/// Gives the calling thread slot number `i` (a connection thread of memcached's model knows its number).
pub fn set_thread_slot(i: usize) {
    THREAD_SLOT.with(|slot| slot.set(Some(i)));
}

/// One [`SharedCounters`] per connection thread, each on its own cache lines, so threads never write to
/// the same line; readers (`stats`, metrics) sum them.
#[derive(Debug)]
pub struct CounterSlots {
    /// The per-thread counters.
    slots: Box<[Padded]>,
}

/// Keeps each slot on separate cache lines (128 bytes covers adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(SharedCounters);

impl CounterSlots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Self {
        CounterSlots {
            slots: (0..n.max(1)).map(|_| Padded::default()).collect(),
        }
    }

    /// The slot for thread number `i`.
    pub fn slot(&self, i: usize) -> &SharedCounters {
        &self.slots[i % self.slots.len()].0
    }

    /// The calling thread's slot. A connection is not tied to a worker (tokio's workers steal from each
    /// other), so the slot follows the thread that runs the batch, not the connection: two workers then
    /// never add to the same cache lines, where a slot per connection had both workers writing both.
    pub fn current(&self) -> &SharedCounters {
        self.slot(thread_slot())
    }

    /// Every counter summed over the slots, as (memcached name, help text, value).
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut total = self.slots[0].0.snapshot();
        for s in &self.slots[1..] {
            for (t, (_, _, v)) in total.iter_mut().zip(s.0.snapshot()) {
                t.2 += v;
            }
        }
        total
    }

    /// Bytes read from clients, summed over the slots: it moves whenever any request was served, which is
    /// how the maintainer tells a busy node from an idle one.
    pub fn bytes_read(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.bytes_read.load(Ordering::Relaxed))
            .sum()
    }

    /// Zeroes every counter (`stats reset`).
    pub fn reset(&self) {
        for s in self.slots.iter() {
            s.0.reset();
        }
    }
}
