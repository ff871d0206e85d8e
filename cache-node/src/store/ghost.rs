//! Ghost lists for the adaptive window: hashes of recently evicted keys, remembered by where
//! they were evicted from, so a miss on one of them says which part of the cache was too small.
//!
//! A key the admission filter turned away (or that fell out of the window) and that comes back
//! soon means the window, the recency part, should grow; a key evicted from the main space
//! that comes back means the main space, the frequency part, should grow (ARC's feedback,
//! applied to W-TinyLFU's window/main split). Only a hash-sampled subset of keys is tracked,
//! at most [`MAX_TRACKED`] per list, so the memory cost does not grow with the cache; each
//! sampled ghost hit counts for `sample_rate` keys.

use std::collections::{HashSet, VecDeque};

/// Most hashes remembered per list.
pub(crate) const MAX_TRACKED: usize = 2048;

/// One FIFO-bounded set of key hashes.
struct GhostList {
    set: HashSet<u64>,
    fifo: VecDeque<u64>,
}

impl GhostList {
    fn new() -> GhostList {
        GhostList {
            set: HashSet::new(),
            fifo: VecDeque::new(),
        }
    }

    fn add(&mut self, h: u64, cap: usize) {
        if self.set.insert(h) {
            self.fifo.push_back(h);
            while self.fifo.len() > cap {
                if let Some(old) = self.fifo.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn take(&mut self, h: u64) -> bool {
        // The FIFO keeps a stale copy until it ages out; `add` skips hashes still in `set`.
        self.set.remove(&h)
    }

    fn bytes(&self) -> usize {
        self.set.capacity() * 16 + self.fifo.capacity() * 8
    }
}

/// Where a ghost hit says the cache was too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GhostHit {
    /// The key was turned away by admission or fell out of the window: grow the window.
    Window,
    /// The key was evicted from the main space: grow the main space.
    Main,
}

/// The two ghost lists of a shard.
pub(crate) struct Ghosts {
    window: GhostList,
    main: GhostList,
    /// One key in `sample_rate` (by hash) is tracked.
    sample_rate: u64,
    /// Entries kept per list.
    cap: usize,
}

impl Ghosts {
    pub(crate) fn new() -> Ghosts {
        Ghosts {
            window: GhostList::new(),
            main: GhostList::new(),
            sample_rate: 1,
            cap: 1,
        }
    }

    /// Sizes the lists for a cache of `capacity` items (each list remembers about `capacity`
    /// evictions). The sample rate only grows, so a fluctuating item count does not keep
    /// clearing the lists.
    pub(crate) fn resize(&mut self, capacity: usize) {
        let rate = (capacity.div_ceil(MAX_TRACKED) as u64)
            .next_power_of_two()
            .max(self.sample_rate);
        if rate != self.sample_rate {
            *self = Ghosts::new();
            self.sample_rate = rate;
        }
        self.cap = (capacity / rate as usize).clamp(1, MAX_TRACKED);
    }

    /// How many keys one sampled ghost hit stands for.
    pub(crate) fn sample_rate(&self) -> u64 {
        self.sample_rate
    }

    #[inline]
    fn sampled(&self, h: u64) -> bool {
        (h >> 32) & (self.sample_rate - 1) == 0
    }

    /// Remembers an eviction.
    pub(crate) fn record_eviction(&mut self, h: u64, from: GhostHit) {
        if !self.sampled(h) {
            return;
        }
        match from {
            GhostHit::Window => self.window.add(h, self.cap),
            GhostHit::Main => self.main.add(h, self.cap),
        }
    }

    /// Checks a missed key against the lists (and forgets it).
    pub(crate) fn on_miss(&mut self, h: u64) -> Option<GhostHit> {
        if !self.sampled(h) {
            return None;
        }
        if self.window.take(h) {
            Some(GhostHit::Window)
        } else if self.main.take(h) {
            Some(GhostHit::Main)
        } else {
            None
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.window.bytes() + self.main.bytes()
    }

    pub(crate) fn clear(&mut self) {
        let (rate, cap) = (self.sample_rate, self.cap);
        *self = Ghosts::new();
        self.sample_rate = rate;
        self.cap = cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_evictions_by_origin() {
        let mut g = Ghosts::new();
        g.resize(4);
        g.record_eviction(1, GhostHit::Window);
        g.record_eviction(2, GhostHit::Main);
        assert_eq!(g.on_miss(1), Some(GhostHit::Window));
        assert_eq!(g.on_miss(1), None, "a ghost hit is consumed");
        assert_eq!(g.on_miss(2), Some(GhostHit::Main));
        for h in 10..20 {
            g.record_eviction(h, GhostHit::Main);
        }
        assert_eq!(g.on_miss(10), None, "old ghosts age out");
        assert_eq!(g.on_miss(19), Some(GhostHit::Main));
    }

    #[test]
    fn large_caches_are_sampled() {
        let mut g = Ghosts::new();
        g.resize(1 << 20);
        assert_eq!(g.sample_rate(), (1 << 20) / MAX_TRACKED as u64);
        let tracked = (0..100_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .filter(|&h| {
                g.record_eviction(h, GhostHit::Window);
                g.on_miss(h).is_some()
            })
            .count();
        assert!(tracked > 0 && tracked < 100_000 / 256, "{tracked}");
    }
}
