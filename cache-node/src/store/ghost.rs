//! Ghost lists for the adaptive window: hashes of recently evicted keys, remembered by where
//! they were evicted from, so a miss on one of them says which part of the cache was too small.
//!
//! A key the admission filter turned away (or that fell out of the window) and that comes back
//! soon means the window, the recency part, should grow; a key evicted from the main space
//! that comes back means the main space, the frequency part, should grow (ARC's feedback,
//! applied to W-TinyLFU's window/main split). Each list is a FIFO in fixed memory (16 bytes per
//! remembered eviction, allocated at the first eviction);
//! only a hash-sampled subset of keys is tracked, at most [`MAX_TRACKED`] per list, so the
//! memory cost does not grow with the cache; each sampled ghost hit counts for `sample_rate`
//! keys.

/// Most evictions remembered per list (before sampling kicks in).
pub(crate) const MAX_TRACKED: usize = 2048;

const EMPTY: u32 = u32::MAX;
const TOMBSTONE: u32 = u32::MAX - 1;

/// A FIFO of the last `cap` hashes in fixed memory (16 bytes per entry): a ring of hashes and an
/// open-addressing table (twice the ring's size) of ring positions for membership. A hash found
/// is consumed (`take`), so one eviction gives at most one signal.
struct GhostList {
    /// Entries remembered (the ring's length once allocated).
    cap: usize,
    /// Hashes in insertion order; 0 = empty or consumed. Empty until the first eviction, so a
    /// cache that never evicts pays nothing.
    ring: Vec<u64>,
    /// Next ring position to overwrite.
    head: usize,
    /// Ring positions, or EMPTY / TOMBSTONE.
    table: Vec<u32>,
    tombstones: usize,
    live: usize,
}

impl GhostList {
    fn new(cap: usize) -> GhostList {
        GhostList {
            cap: cap.max(1),
            ring: Vec::new(),
            head: 0,
            table: Vec::new(),
            tombstones: 0,
            live: 0,
        }
    }

    #[inline]
    fn norm(h: u64) -> u64 {
        h.max(1)
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        let x = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((u128::from(x) * self.table.len() as u128) >> 64) as usize
    }

    /// Table slot holding `h`'s ring position.
    fn find(&self, h: u64) -> Option<usize> {
        let n = self.table.len();
        if n == 0 {
            return None;
        }
        let mut i = self.home(h);
        loop {
            match self.table[i] {
                EMPTY => return None,
                TOMBSTONE => {}
                p if self.ring[p as usize] == h => return Some(i),
                _ => {}
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }

    fn unlink(&mut self, slot: usize) {
        self.table[slot] = TOMBSTONE;
        self.tombstones += 1;
        self.live -= 1;
    }

    fn add(&mut self, h: u64) {
        if self.ring.is_empty() {
            self.ring = vec![0; self.cap];
            self.table = vec![EMPTY; 2 * self.cap];
        }
        let h = Self::norm(h);
        if self.find(h).is_some() {
            return;
        }
        let pos = self.head;
        self.head = (self.head + 1) % self.ring.len();
        let old = self.ring[pos];
        if old != 0 {
            if let Some(slot) = self.find(old) {
                self.unlink(slot);
            }
        }
        self.ring[pos] = h;
        if self.live + self.tombstones + 1 > self.table.len() * 3 / 4 {
            self.rebuild();
        }
        let n = self.table.len();
        let mut i = self.home(h);
        while self.table[i] != EMPTY && self.table[i] != TOMBSTONE {
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        if self.table[i] == TOMBSTONE {
            self.tombstones -= 1;
        }
        self.table[i] = pos as u32;
        self.live += 1;
    }

    /// Re-indexes the ring without tombstones (same memory).
    fn rebuild(&mut self) {
        self.table.iter_mut().for_each(|t| *t = EMPTY);
        self.tombstones = 0;
        self.live = 0;
        let n = self.table.len();
        for pos in 0..self.ring.len() {
            let h = self.ring[pos];
            if h == 0 {
                continue;
            }
            let mut i = self.home(h);
            while self.table[i] != EMPTY {
                i = if i + 1 == n { 0 } else { i + 1 };
            }
            self.table[i] = pos as u32;
            self.live += 1;
        }
    }

    fn take(&mut self, h: u64) -> bool {
        let h = Self::norm(h);
        match self.find(h) {
            Some(slot) => {
                let pos = self.table[slot] as usize;
                self.ring[pos] = 0;
                self.unlink(slot);
                true
            }
            None => false,
        }
    }

    fn bytes(&self) -> usize {
        self.ring.capacity() * 8 + self.table.capacity() * 4
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
    /// Evictions remembered per list.
    cap: usize,
}

impl Ghosts {
    pub(crate) fn new() -> Ghosts {
        Ghosts::with(1, 2)
    }

    fn with(sample_rate: u64, cap: usize) -> Ghosts {
        Ghosts {
            window: GhostList::new(cap),
            main: GhostList::new(cap),
            sample_rate,
            cap,
        }
    }

    /// Sizes the lists for a cache of `capacity` items (each list remembers about `capacity`
    /// evictions, sampled). Only grows, so a fluctuating item count does not keep clearing them.
    pub(crate) fn resize(&mut self, capacity: usize) {
        let rate = (capacity.div_ceil(MAX_TRACKED) as u64)
            .next_power_of_two()
            .max(self.sample_rate);
        let cap = (capacity / rate as usize).clamp(2, MAX_TRACKED);
        if rate != self.sample_rate || cap > self.cap {
            *self = Ghosts::with(rate, cap);
        }
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
            GhostHit::Window => self.window.add(h),
            GhostHit::Main => self.main.add(h),
        }
    }

    /// Checks a missed key against the lists.
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
        *self = Ghosts::with(self.sample_rate, self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> u64 {
        i.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1
    }

    #[test]
    fn remembers_recent_evictions_by_origin() {
        let mut g = Ghosts::new();
        g.resize(100);
        g.record_eviction(h(1), GhostHit::Window);
        g.record_eviction(h(2), GhostHit::Main);
        g.record_eviction(h(3), GhostHit::Window);
        g.record_eviction(h(3), GhostHit::Main);
        assert_eq!(g.on_miss(h(1)), Some(GhostHit::Window));
        assert_eq!(g.on_miss(h(1)), None, "a ghost hit is consumed");
        assert_eq!(g.on_miss(h(2)), Some(GhostHit::Main));
        assert_eq!(
            g.on_miss(h(3)),
            Some(GhostHit::Window),
            "the window list is asked first"
        );
        assert_eq!(g.on_miss(h(4)), None);
        for i in 10..120 {
            g.record_eviction(h(i), GhostHit::Main);
        }
        assert_eq!(g.on_miss(h(2)), None, "old ghosts age out");
        assert_eq!(g.on_miss(h(119)), Some(GhostHit::Main));
        assert_eq!(
            (1000..11_000)
                .filter(|&i| g.on_miss(h(i)).is_some())
                .count(),
            0
        );
        // Heavy churn with consumption keeps working (tombstones are swept).
        for i in 0..100_000 {
            g.record_eviction(h(i), GhostHit::Window);
            if i % 3 == 0 {
                assert_eq!(g.on_miss(h(i)), Some(GhostHit::Window));
            }
        }
        assert_eq!(g.on_miss(h(99_998)), Some(GhostHit::Window));
        assert_eq!(g.on_miss(h(50_000)), None);
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
        assert!(
            tracked > 100_000 / 512 && tracked < 100_000 / 128,
            "{tracked}"
        );
    }
}
