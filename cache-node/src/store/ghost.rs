//! Ghost lists for the adaptive window: recently evicted keys, remembered by where they were
//! evicted from, so a miss on one of them says which part of the cache was too small.
//!
//! A key the admission filter turned away (or that fell out of the window) and that comes back
//! soon means the window, the recency part, should grow; a key evicted from the main space that
//! comes back means the main space, the frequency part, should grow (ARC's feedback, applied to
//! W-TinyLFU's window/main split). Each list remembers about one cache's worth of evictions.
//!
//! The window list also decides ghost admission (`shard.rs`), so it tracks every key, in a cache
//! of any size: 2 bytes per remembered eviction (a 16-bit fingerprint in buckets kept in insertion
//! order). The main list only moves the window (and measures cold victims), for which a sample is
//! enough: it tracks a hash-sampled subset of keys, at most [`MAX_TRACKED`], exactly (16 bytes and
//! a bit each), and each sampled hit counts for the sample rate. Both are allocated at the first eviction, so a cache that never
//! evicts pays nothing. This module does not decide what a ghost hit does; the shard does.

/// Most evictions the main list remembers (before sampling kicks in).
pub(crate) const MAX_TRACKED: usize = 2048;

const EMPTY: u32 = u32::MAX;
const TOMBSTONE: u32 = u32::MAX - 1;

/// The main list: a FIFO of the last `cap` sampled hashes in fixed memory (16 bytes and a bit per
/// entry): a ring of hashes and an open-addressing table (twice the ring's size) of ring positions
/// for membership. A hash found is consumed (`take`), so one eviction gives at most one signal.
struct GhostList {
    /// Entries remembered (the ring's length once allocated).
    cap: usize,
    /// Hashes in insertion order; 0 = empty or consumed. Empty until the first eviction, so a
    /// cache that never evicts pays nothing.
    ring: Vec<u64>,
    /// One bit per ring position: the eviction took a cold probation item instead of the LRU one
    /// (`shard.rs`, cold victims), so its return counts against that choice.
    cold: Vec<u64>,
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
            cold: Vec::new(),
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

    fn add(&mut self, h: u64, cold: bool) {
        if self.ring.is_empty() {
            self.ring = vec![0; self.cap];
            self.cold = vec![0; self.cap.div_ceil(64)];
            self.table = vec![EMPTY; 2 * self.cap];
        }
        let h = Self::norm(h);
        if self.find(h).is_some() {
            return;
        }
        let pos = self.head;
        let bit = 1u64 << (pos % 64);
        if cold {
            self.cold[pos / 64] |= bit;
        } else {
            self.cold[pos / 64] &= !bit;
        }
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

    /// Consumes `h` if remembered. Returns how recent its eviction was (0 for the latest, up to
    /// `cap - 1` for the oldest remembered) and whether it was a cold victim.
    fn take(&mut self, h: u64) -> Option<(usize, bool)> {
        let h = Self::norm(h);
        let slot = self.find(h)?;
        let pos = self.table[slot] as usize;
        self.ring[pos] = 0;
        self.unlink(slot);
        let n = self.ring.len();
        let cold = self.cold[pos / 64] & (1 << (pos % 64)) != 0;
        Some(((self.head + n - pos - 1) % n, cold))
    }

    /// True if an eviction `age` entries ago is in the list's most recent [`RECENT_SHARE`].
    fn is_recent(&self, age: usize) -> bool {
        age * RECENT_SHARE < self.ring.len()
    }

    fn bytes(&self) -> usize {
        (self.ring.capacity() + self.cold.capacity()) * 8 + self.table.capacity() * 4
    }
}

/// Entries per window-list bucket: a bucket is a small FIFO, so an entry lives for about `BUCKET`
/// x buckets evictions (the list's length), give or take a third at 8.
const BUCKET: usize = 8;

/// The window list: the last `entries` keys pushed out of the window or turned away by admission,
/// as 16-bit fingerprints (0 = free) in buckets kept in insertion order. An eviction goes to the
/// front of its key's bucket and pushes the bucket's oldest entry out. A key found is consumed,
/// so one eviction gives at most one signal. A key not evicted is found with probability about
/// `BUCKET` / 2^16 (0.01%): a fingerprint collision.
struct WindowList {
    /// Empty until the first eviction.
    buckets: Vec<[u16; BUCKET]>,
    /// Evictions remembered (the cache's capacity in items).
    entries: usize,
}

impl WindowList {
    fn new(entries: usize) -> WindowList {
        WindowList {
            buckets: Vec::new(),
            entries: entries.max(1),
        }
    }

    /// The key's bucket and fingerprint. The bucket comes from the hash's mixed bits (the shard's
    /// own bits are constant within a shard), the fingerprint from its top 16 bits.
    #[inline]
    fn place(&self, h: u64) -> (usize, u16) {
        let mixed = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32;
        let bucket = ((mixed * self.buckets.len() as u64) >> 32) as usize;
        (bucket, ((h >> 48) as u16).max(1))
    }

    fn add(&mut self, h: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![[0; BUCKET]; self.entries.div_ceil(BUCKET)];
        }
        let (b, fingerprint) = self.place(h);
        let bucket = &mut self.buckets[b];
        // Shift out the key's own older entry if it has one, else the first free slot, else
        // the oldest entry.
        let end = bucket
            .iter()
            .position(|&e| e == 0 || e == fingerprint)
            .unwrap_or(BUCKET - 1);
        bucket.copy_within(0..end, 1);
        bucket[0] = fingerprint;
    }

    /// Consumes `h`'s fingerprint if remembered. Returns its place in its bucket: 0 for the
    /// bucket's latest eviction, so about `place x buckets` evictions ago.
    fn take(&mut self, h: u64) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let (b, fingerprint) = self.place(h);
        let bucket = &mut self.buckets[b];
        let i = bucket.iter().position(|&e| e == fingerprint)?;
        // Close the gap: the bucket stays in insertion order with its free slots at the back.
        bucket.copy_within(i + 1.., i);
        bucket[BUCKET - 1] = 0;
        Some(i)
    }

    fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<[u16; BUCKET]>()
    }
}

/// The part of a list whose hits move the window: its most recent 1/`RECENT_SHARE` of evictions.
///
/// A hit there says one more slot in that part of the cache would have kept the key: the marginal
/// value of space, which is what the window/main split should balance. A hit anywhere in a list
/// says only that a much larger part would have, and the two lists disagree about that. Under a
/// skewed (Zipf) popularity the filter turns many keys away, and they come back at random
/// (window hits spread evenly over the list), while the main space's victims come back soon (its
/// hits crowd at the recent end). Counted over whole lists the window hits win and the window
/// grew to 10-30%, below moka on every Zipf trace measured; counted over the recent quarter,
/// the main hits win and the window stays at 0-5%. On recency-driven traces the window's recent
/// hits still win (STORE.md, "Off the reference traces").
pub(crate) const RECENT_SHARE: usize = 4;

/// A ghost hit: which list, how many keys it stands for, and whether the eviction was recent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GhostFound {
    pub(crate) list: GhostHit,
    /// Keys the hit stands for (the main list's sample rate; 1 for the window list).
    pub(crate) keys: u64,
    /// The eviction is among the list's most recent 1/[`RECENT_SHARE`].
    pub(crate) recent: bool,
    /// A main-space eviction that took a cold probation item instead of the LRU one.
    pub(crate) cold_victim: bool,
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
    window: WindowList,
    main: GhostList,
    /// One key in `sample_rate` (by hash) is tracked by the main list.
    sample_rate: u64,
    /// Evictions remembered by the main list (sampled).
    cap: usize,
}

impl Ghosts {
    pub(crate) fn new() -> Ghosts {
        Ghosts::with(1, 2)
    }

    fn with(sample_rate: u64, cap: usize) -> Ghosts {
        Ghosts {
            window: WindowList::new(cap * sample_rate as usize),
            main: GhostList::new(cap),
            sample_rate,
            cap,
        }
    }

    /// Sizes the lists for a cache of `capacity` items (each list remembers about `capacity`
    /// evictions, the main list sampled). Only grows, so a fluctuating item count does not keep
    /// clearing them.
    pub(crate) fn resize(&mut self, capacity: usize) {
        let rate = (capacity.div_ceil(MAX_TRACKED) as u64)
            .next_power_of_two()
            .max(self.sample_rate);
        let cap = (capacity / rate as usize).clamp(2, MAX_TRACKED);
        if rate != self.sample_rate || cap > self.cap {
            *self = Ghosts::with(rate, cap);
        }
    }

    #[inline]
    fn sampled(&self, h: u64) -> bool {
        (h >> 32) & (self.sample_rate - 1) == 0
    }

    /// Remembers an eviction; `cold_victim` marks a main-space one that took a cold probation item
    /// instead of the LRU one.
    pub(crate) fn record_eviction(&mut self, h: u64, from: GhostHit, cold_victim: bool) {
        match from {
            GhostHit::Window => self.window.add(h),
            GhostHit::Main if self.sampled(h) => self.main.add(h, cold_victim),
            GhostHit::Main => {}
        }
    }

    /// Checks a missed key against the lists (the window list first), consuming what it finds.
    pub(crate) fn on_miss(&mut self, h: u64) -> Option<GhostFound> {
        if let Some(place) = self.window.take(h) {
            Some(GhostFound {
                list: GhostHit::Window,
                keys: 1,
                recent: place * RECENT_SHARE < BUCKET,
                cold_victim: false,
            })
        } else if self.sampled(h) {
            let (age, cold_victim) = self.main.take(h)?;
            Some(GhostFound {
                list: GhostHit::Main,
                keys: self.sample_rate,
                recent: self.main.is_recent(age),
                cold_victim,
            })
        } else {
            None
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.window.bytes() + self.main.bytes()
    }

    /// Evictions the lists are sized to remember.
    pub(crate) fn capacity(&self) -> usize {
        self.cap * self.sample_rate as usize
    }

    /// Sizes the lists anew, emptied, for a cache of `capacity` items, smaller ones included (see
    /// `Shard::maybe_shrink_tables`; `resize` only grows).
    pub(crate) fn shrink_to(&mut self, capacity: usize) {
        let rate = (capacity.div_ceil(MAX_TRACKED) as u64).next_power_of_two();
        let cap = (capacity / rate as usize).clamp(2, MAX_TRACKED);
        *self = Ghosts::with(rate, cap);
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

    /// The list and key count of a ghost hit.
    fn found(g: &mut Ghosts, h: u64) -> Option<(GhostHit, u64)> {
        g.on_miss(h).map(|f| (f.list, f.keys))
    }

    /// Only hits on recent evictions move the window (`RECENT_SHARE`): in the main list, exactly
    /// the latest quarter of its length; in the window list, the first quarter of a bucket, which
    /// is the latest quarter on average.
    #[test]
    fn a_hit_says_whether_the_eviction_was_recent() {
        let mut g = Ghosts::new();
        g.resize(1_024);
        for i in 0..1_024 {
            g.record_eviction(h(i), GhostHit::Main, false);
        }
        let recent_main: Vec<u64> = (0..1_024)
            .filter(|&i| g.on_miss(h(i)).is_some_and(|f| f.recent))
            .collect();
        assert_eq!(recent_main, (768..1_024).collect::<Vec<u64>>());

        let mut g = Ghosts::new();
        g.resize(1 << 16);
        for i in 0..1 << 16 {
            g.record_eviction(h(i), GhostHit::Window, false);
        }
        let recent = |range: std::ops::Range<u64>, g: &mut Ghosts| {
            range
                .filter(|&i| g.on_miss(h(i)).is_some_and(|f| f.recent))
                .count()
        };
        let (old, new) = (recent(0..16_384, &mut g), recent(49_152..65_536, &mut g));
        assert!(
            old < 500 && new > 8_000,
            "recent among the oldest quarter {old}, newest {new}"
        );
    }

    #[test]
    fn remembers_recent_evictions_by_origin() {
        let mut g = Ghosts::new();
        g.resize(100);
        assert_eq!(found(&mut g, h(1)), None, "nothing evicted yet");
        g.record_eviction(h(1), GhostHit::Window, false);
        g.record_eviction(h(2), GhostHit::Main, false);
        g.record_eviction(h(3), GhostHit::Window, false);
        g.record_eviction(h(3), GhostHit::Main, false);
        assert_eq!(found(&mut g, h(1)), Some((GhostHit::Window, 1)));
        assert_eq!(found(&mut g, h(1)), None, "a ghost hit is consumed");
        assert_eq!(found(&mut g, h(2)), Some((GhostHit::Main, 1)));
        assert_eq!(
            found(&mut g, h(3)),
            Some((GhostHit::Window, 1)),
            "the window list is asked first"
        );
        assert_eq!(found(&mut g, h(3)), Some((GhostHit::Main, 1)));
        g.record_eviction(h(1), GhostHit::Window, false);
        g.record_eviction(h(2), GhostHit::Main, false);
        for i in 10..1_010 {
            g.record_eviction(h(i), GhostHit::Window, false);
            g.record_eviction(h(i), GhostHit::Main, false);
        }
        assert_eq!(
            found(&mut g, h(1)),
            None,
            "old ghosts age out of the window list"
        );
        assert_eq!(found(&mut g, h(2)), None, "and out of the main list");
        assert_eq!(found(&mut g, h(1_009)), Some((GhostHit::Window, 1)));
        assert_eq!(found(&mut g, h(1_009)), Some((GhostHit::Main, 1)));
        // Keys never evicted are found only by a fingerprint collision in the window list: 8
        // entries of 16 bits per bucket, so about 10,000 x 8 / 65,536 = 1.2 of these.
        let false_hits = (100_000..110_000)
            .filter(|&i| found(&mut g, h(i)).is_some())
            .count();
        assert!(false_hits <= 8, "{false_hits} false ghost hits");
        // Heavy churn with consumption keeps working (freed slots are reused, tombstones swept).
        for i in 0..100_000 {
            g.record_eviction(h(i), GhostHit::Window, false);
            g.record_eviction(h(i), GhostHit::Main, false);
            if i % 3 == 0 {
                assert_eq!(found(&mut g, h(i)), Some((GhostHit::Window, 1)));
                assert_eq!(found(&mut g, h(i)), Some((GhostHit::Main, 1)));
            }
        }
        assert_eq!(found(&mut g, h(99_998)), Some((GhostHit::Window, 1)));
        assert_eq!(found(&mut g, h(50_000)), None);
    }

    /// Ghost admission needs every returning key recognised, whatever the cache size: a window
    /// list that sampled one key in N (as the main list does) would admit only that share of
    /// them, and a large cache would lose what a small one gains (`COPIES=16` in the hit-rate
    /// bench). Each key is remembered for about one cache's worth of evictions, at 2 bytes.
    /// With the window list sampled like the main list, none of the 2,000 keys is found.
    #[test]
    fn the_window_list_remembers_every_key_for_about_a_capacity_of_evictions() {
        let capacity = 1 << 20;
        let mut g = Ghosts::new();
        g.resize(capacity);
        let found_after = |g: &mut Ghosts, later: usize| {
            let probes: Vec<u64> = (0..2_000u64).map(|i| h(i << 40 | 7)).collect();
            for &p in &probes {
                g.record_eviction(p, GhostHit::Window, false);
            }
            for i in 0..later as u64 {
                g.record_eviction(h((later as u64) << 32 | i), GhostHit::Window, false);
            }
            probes
                .iter()
                .filter(|&&p| found(g, p) == Some((GhostHit::Window, 1)))
                .count()
        };
        assert_eq!(found_after(&mut g, 0), 2_000, "every key tracked");
        // An entry leaves when its bucket has had 8 newer ones: after n evictions that is a
        // Poisson count with mean 8n / capacity, at least 8 with probability 5% at n = capacity / 2
        // and below 8 with probability 1% at n = 2 x capacity.
        let half = found_after(&mut g, capacity / 2);
        assert!(half >= 1_850, "{half} of 2,000 found after half a capacity");
        let twice = found_after(&mut g, 2 * capacity);
        assert!(twice <= 50, "{twice} of 2,000 found after two capacities");
        assert_eq!(g.window.bytes(), capacity * 2);
    }

    /// A main-list hit says whether the eviction was marked as a cold victim, also once the ring
    /// has wrapped and positions that held marked evictions hold unmarked ones.
    #[test]
    fn a_main_hit_says_whether_it_was_a_cold_victim() {
        let mut g = Ghosts::new();
        g.resize(100);
        let cold_of = |g: &mut Ghosts, i: u64| g.on_miss(h(i)).map(|f| f.cold_victim);
        for round in 0..3u64 {
            for i in 0..100 {
                let key = round * 1_000 + i;
                g.record_eviction(h(key), GhostHit::Main, (key + round) % 3 == 0);
            }
            for i in 0..100 {
                let key = round * 1_000 + i;
                assert_eq!(
                    cold_of(&mut g, key),
                    Some((key + round) % 3 == 0),
                    "round {round}, key {key}"
                );
            }
        }
        g.record_eviction(h(5), GhostHit::Window, false);
        assert_eq!(
            cold_of(&mut g, 5),
            Some(false),
            "window hits are never cold"
        );
    }

    #[test]
    fn the_main_list_of_a_large_cache_is_sampled() {
        let mut g = Ghosts::new();
        g.resize(1 << 20);
        let rate = (1 << 20) / MAX_TRACKED as u64;
        let tracked: Vec<u64> = (0..100_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .filter_map(|h| {
                g.record_eviction(h, GhostHit::Main, false);
                found(&mut g, h).map(|(list, keys)| {
                    assert_eq!(list, GhostHit::Main);
                    keys
                })
            })
            .collect();
        assert!(tracked.iter().all(|&keys| keys == rate));
        assert!(
            tracked.len() > 100_000 / 512 && tracked.len() < 100_000 / 128,
            "{}",
            tracked.len()
        );
        // 16 bytes an entry (ring and table) and a bit (cold victims).
        assert!(g.main.bytes() <= (32 << 10) + MAX_TRACKED / 8);
    }
}
