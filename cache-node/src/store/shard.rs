//! One shard: arena, index, W-TinyLFU policy and expiry state behind one lock.
//!
//! Policy (after Caffeine): new items enter an LRU *window*; an item pushed out of the window
//! becomes the admission *candidate* in the *probation* segment of a segmented LRU, and when room
//! is needed it duels the probation LRU *victim*: the candidate stays only if its sketch
//! frequency beats the victim's by more than the admission margin. A probation hit promotes to
//! *protected* (80% of main, overflow demoted back to probation). The window's share adapts:
//! by ghost feedback (default: a miss on a key the filter turned away very recently grows it, a
//! miss on a key evicted from main very recently shrinks it) or by Caffeine's hill climber (every
//! sample period, keep moving the size the way that last raised the hit rate). With ghost
//! feedback, a missed key found in the window's ghost list (turned away, and back soon) also
//! skips the window and the duel: it enters the protected segment directly (ghost admission),
//! while the keys let in that way are read more often than the main space's victims come back.
//! And while the window is large, a candidate facing a warm probation LRU item duels instead the
//! least recent probation item seen once (cold victims), while such victims come back no more
//! often than LRU victims do.
//!
//! The queues are intrusive doubly-linked lists threaded through the item headers as `u32`
//! locators; the queue an item is in is two bits of its header.

use super::ghost::{GhostFound, GhostHit, Ghosts};
use super::index::Index;
use super::sketch::Sketch;
use super::slab::*;
use super::{ItemMeta, ItemSummary, MetaUpdate, StoreError, WindowAdaptation};

pub(crate) const WINDOW: u8 = 0;
pub(crate) const PROBATION: u8 = 1;
pub(crate) const PROTECTED: u8 = 2;

const CLIMBER_RESTART_THRESHOLD: f64 = 0.05;
const CLIMBER_STEP_PERCENT: f64 = 0.0625;
const CLIMBER_STEP_DECAY: f64 = 0.98;
const ADMIT_HASHDOS_THRESHOLD: u8 = 6;
/// Weight of one outcome in the two averages that decide whether ghost admission pays (about the
/// last 1,000 outcomes count). 1/512 and 1/2048 gave the same mean gap to OPT on the six reference
/// traces within 0.01 and the same Zipf hit rates within 0.3 (STORE.md).
const GHOST_ADMISSION_EVIDENCE_WEIGHT: f64 = 1.0 / 1024.0;
/// While ghost admission does not pay, one returning key in this many is still let in that way,
/// so its yield keeps being measured and it comes back when the workload changes.
const GHOST_ADMISSION_PROBE_EVERY: u32 = 8;
/// Cold victims: when the probation LRU item's estimated frequency is at least
/// [`WARM_LRU_MIN_ESTIMATE`], the admission duel (and the eviction) takes instead the least recent
/// probation item whose estimate is at most [`COLD_VICTIM_MAX_ESTIMATE`], a key seen about once,
/// while the window holds at least [`COLD_VICTIMS_MIN_WINDOW`] of the cache (recency-driven
/// workloads; under a skewed popularity the window stays near 1% and nothing changes).
const COLD_VICTIM_MAX_ESTIMATE: u8 = 1;
const WARM_LRU_MIN_ESTIMATE: u8 = 3;
const COLD_VICTIMS_MIN_WINDOW: f64 = 0.05;
/// Probation items the cold-victim search examines per eviction at most. The search resumes where
/// it stopped (items it passed only get warmer until the sketch halves, when it restarts from the
/// LRU end), so each item is examined about once per halving period and this bounds only the worst
/// eviction. 8 and 16 gave sprite 86.57 / 86.61 (x16 86.52 / 86.53) without the yield test below.
const COLD_VICTIM_SEARCH_STEPS: usize = 16;
/// While cold victims do not pay, one chance in this many (a duel against a warm LRU item) is
/// still taken, so their return rate keeps being measured. (Testing the yield before the LRU item's
/// warmth, to spare declined duels a sketch lookup, saved about 4 ns per access on a phased trace but
/// lost up to 0.16 points elsewhere: the probes then fell on duels with nothing to try.)
const COLD_VICTIM_PROBE_EVERY: u32 = 32;
/// Weight of one eviction in the two return averages of cold victims.
const COLD_VICTIM_EVIDENCE_WEIGHT: f64 = 1.0 / 1024.0;
/// An allocation that finds the budget full compacts (moves the items of the sparsest page into
/// idle chunks elsewhere) instead of evicting while idle chunks hold at least 1/this of the shard's
/// budget. Filling 343 MiB (16 shards) with 100-2,000 B values kept 276,602 / 281,334 / 285,319 /
/// 285,008 items at 1/16, 1/32, 1/64 and 1/128, moving 485 / 2,725 / 6,607 / 10,485 pages (sweeps
/// run before the spare page; STORE.md, "Mixed sizes, session 9").
const COMPACT_ABOVE_IDLE_SHARE: usize = 64;
/// Pages one allocation may empty by compaction before it evicts instead (bounds the time one
/// insert spends copying).
const MAX_COMPACTIONS_PER_ALLOCATION: usize = 4;
/// How much larger than its own class's a chunk compaction may move an item into. An idle chunk
/// serves no one, so a moved item in one frees memory even when it fills it poorly: filling 343 MiB
/// with 100-10,000 B values moved 42 pages and kept 56,804 items at the slab's own 25%, 2,284 and
/// 58,682 at 100%, 6,246 and 59,645 at 300% (100-2,000 B: 279,480, 285,899, 285,319; sessions
/// 9-10, before the spare page). Since the spare page, the same fill keeps as many at 100% as at
/// 300% (61,393 and 61,254; 60,223 at 50%), and under churn a chunk filled poorly stays so while
/// items of its own size wait: cache-aside with log-uniform 100-10,000 B values in 64 MiB
/// (`examples/mixed_sizes.rs`, uniform / Zipf 0.9) hit 24.31% / 72.18% at 300%, 24.91% / 72.46% at
/// 100%, 25.48% / 72.62% at 50%, moving 802,584, 459,799 and 208,614 items (the run takes 15.5 s
/// at 300%, 12.6 s at 100%). Values uniform in 100-10,000 B (mostly large) lose a little at 100%:
/// 6.14% / 59.39% at 300%, 5.89% / 58.96% at 100% (10.5 against 8.2 s).
const COMPACTION_SLACK_PERCENT: usize = 100;
/// When memory has to move between size classes by emptying a page, the pages of this many of the
/// policy's next victims are candidates, and the one that loses the fewest items per byte it frees
/// goes. A page of small items holds hundreds of them and the policy's next victim is most likely
/// in such a page, so emptying that one threw out hundreds of items to make room for one: with
/// values log-uniform in 100-10,000 B under churn, a 64 MiB store kept 7.4% of the smallest tenth
/// of keys against 13.6% of the largest. The victims this far down are all about to go anyway;
/// among their pages, the one with the fewest items for its size costs the fewest. Uniform
/// popularity 10.90% -> 16.92% hits, Zipf 0.9 67.10% -> 70.29% (fixed sizes: the same); 64 looked
/// no better (`examples/mixed_sizes.rs`, STORE.md, "Mixed sizes under churn").
const PAGE_VICTIM_LOOKAHEAD: usize = 16;
/// How far into the main space's and the window's LRU ends [`Shard::evict_page`] looks for items
/// alone in their pages (large values, mostly), beyond the [`PAGE_VICTIM_LOOKAHEAD`] next victims.
const ALONE_LOOKAHEAD: usize = 256;
/// Most items with mappings of their own that size-aware eviction weighs per page eviction
/// ([`Shard::large_value_to_evict`]): each costs a look at its key and the sketch. A shard of a few
/// MiB holds fewer (a mapping of its own is above a quarter of a page, 1/64 of the budget).
const LARGE_VALUES_WEIGHED: usize = 64;
/// Policy evictions an allocation tries before it empties a page instead. Each frees one chunk of
/// the victim's size, which serves the new item only when the sizes are close; with mixed sizes
/// most of those chunks wait for an item of their own size while other items go, and the policy,
/// blind to size, loses small and large items alike. Emptying a page loses the fewest items per
/// byte of the pages in view ([`PAGE_VICTIM_LOOKAHEAD`]), so sooner means more small items kept.
/// Cache-aside, 64 MiB, 8 shards, values log-uniform in 100-10,000 B (`examples/mixed_sizes.rs`,
/// hit rates uniform / Zipf 0.9, compaction then up to 4 x): 64: 19.01 / 71.17; 48: 21.81 /
/// 71.72; 32: 24.31 / 72.18; 24: 25.49 / 72.27; 16: 27.87 / 71.95; 8: 21.02 / 66.86; 0: 11.84 /
/// 59.81. Below 16 pages go so often that the partly used pages they leave take the room (every
/// class a fresh page with a few items); 32 keeps clear of that. Fixed 1,000 B values: 82.14% at
/// any setting.
const POLICY_EVICTIONS_BEFORE_PAGE: usize = 32;

/// Policy tuning, fixed at construction (defaults and meaning: [`super::StoreConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PolicyConfig {
    /// How the window size adapts.
    pub(crate) adaptation: WindowAdaptation,
    /// Window change per (unsampled) recent ghost hit, in items.
    pub(crate) ghost_step_items: f64,
    /// A miss on a key in the window's ghost list goes straight to protected, while that pays.
    pub(crate) ghost_admission: bool,
    /// Duels against a cold probation item rather than a warm LRU one, while that pays.
    pub(crate) cold_victims: bool,
    /// A new item with a mapping of its own that is worth less per byte than the page eviction
    /// would free next is kept only until the next eviction, unless read first.
    pub(crate) size_aware_admission: bool,
    /// A value with a mapping of its own that frees more room per item lost than the page of the
    /// policy's next victims, and is no more frequent than its items, is evicted instead of it.
    pub(crate) size_aware_eviction: bool,
    /// A candidate is admitted when its estimated frequency exceeds the victim's by more than
    /// this.
    pub(crate) admission_margin: u8,
    /// Initial (or fixed) window share of the capacity.
    pub(crate) window_percent: f64,
    /// Protected share of the main space.
    pub(crate) protected_percent: f64,
    /// Sketch counters per item of capacity.
    pub(crate) sketch_counters_per_item: usize,
    /// Sketch increments bump only the key's smallest counters.
    pub(crate) conservative_update: bool,
    /// Sketch halving period, in multiples of the capacity.
    pub(crate) sample_factor: usize,
    /// Climber sample period, in multiples of the capacity.
    pub(crate) climber_sample_factor: f64,
}

#[derive(Clone, Copy, Default)]
struct Queue {
    head: u32, // LRU end
    tail: u32, // MRU end
    len: usize,
}

impl Queue {
    const EMPTY: Queue = Queue {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Per-shard counters (summed into `StoreStats`).
#[derive(Default, Clone)]
pub(crate) struct ShardStats {
    pub(crate) total_items: u64,
    pub(crate) evictions: u64,
    pub(crate) expired_unfetched: u64,
    pub(crate) evicted_unfetched: u64,
    pub(crate) reclaimed: u64,
    pub(crate) crawler_reclaimed: u64,
    pub(crate) get_expired: u64,
    pub(crate) page_evictions: u64,
    /// Pages emptied by moving their items into other pages (memcached's `slabs_moved`).
    pub(crate) pages_compacted: u64,
    /// Items moved by compaction instead of being evicted (memcached's `slab_reassign_rescues`).
    pub(crate) items_moved: u64,
    /// Missed keys let into the protected segment by ghost admission.
    pub(crate) ghost_admissions: u64,
    /// Missed keys found in the window's ghost list but sent through the window, because ghost
    /// admission was not paying.
    pub(crate) ghost_admissions_declined: u64,
    /// Duels fought against a cold probation item instead of the LRU one and won by the candidate.
    pub(crate) cold_victims: u64,
    /// Duels against a warm LRU item not fought against a cold item, because cold victims were
    /// not paying.
    pub(crate) cold_victims_declined: u64,
    /// New items with mappings of their own put at the probation LRU end, worth less per byte than
    /// the next page eviction's victims.
    pub(crate) size_refusals: u64,
    /// Page evictions that took a value with a mapping of its own instead of the page of the
    /// policy's next victims ([`Shard::large_value_to_evict`]).
    pub(crate) size_evictions: u64,
    /// Items whose value was read straight into their own mapping ([`Shard::land`]) and stored
    /// there, without a copy.
    pub(crate) values_read_in_place: u64,
    /// Evictions by the victim's class ([`super::class_id`]; index = id), for `stats items`'
    /// `evicted` (memcached-tool's "Evicted" column). Inline, not on the heap, which the budget
    /// would have to count (`tests/store_heap.rs`).
    pub(crate) evictions_by_class: ClassCounts,
}

/// A counter per class id, 0 to [`super::MAX_CLASS_ID`].
#[derive(Clone)]
pub(crate) struct ClassCounts(pub(crate) [u64; super::MAX_CLASS_ID as usize + 1]);

impl Default for ClassCounts {
    fn default() -> Self {
        ClassCounts([0; super::MAX_CLASS_ID as usize + 1])
    }
}

pub(crate) struct Shard {
    /// Item memory.
    pub(crate) slab: Slab,
    /// Key hash -> item locator.
    index: Index,
    /// Access frequencies for admission.
    sketch: Sketch,
    /// Key hashing seed (the same in every shard).
    seed: u64,
    /// Window, probation and protected LRU lists (head = least recent).
    queues: [Queue; 3],
    /// Bytes this shard may hold (arena pages plus tables).
    budget: usize,
    /// Item bound (replay mode); `None` = bytes only.
    max_items: Option<usize>,
    policy: PolicyConfig,
    /// Window share of the capacity (moved by the adaptation).
    window_frac: f64,
    /// Protected share of the capacity.
    protected_frac: f64,
    /// The item most recently pushed out of the window: next admission candidate.
    candidate: u32,
    /// Hill climber: hits and misses in the current sample, the previous sample's hit rate,
    /// and the next step (a share of the capacity, signed).
    climber_hits: u64,
    climber_misses: u64,
    climber_prev_rate: f64,
    climber_step: f64,
    /// Deterministic random state for the hash-flooding admission escape.
    rng: u64,
    /// flush_all generation already applied to this shard.
    pub(crate) flush_gen: u32,
    /// Background expiry cursor: the page id and chunk to examine next.
    expire_page: usize,
    expire_chunk: u32,
    pub(crate) stats: ShardStats,
    /// Reused buffer for the locators of one page.
    scratch: Vec<u32>,
    /// The arena's idle bytes when compaction last failed to empty a page, or the lowest since (0
    /// after a success): the next attempt waits for a small page's worth more, so a shard whose idle
    /// chunks fit no page's items does not scan for the sparsest page on every insert.
    compaction_failed_at_idle: usize,
    /// Recently evicted keys, for the ghost-feedback window adaptation.
    ghosts: Ghosts,
    /// Moving average of ghost admission's yield: 1 for a key it let in that was read (or
    /// replaced) before eviction, 0 for one evicted unread.
    ghost_admitted_read: f64,
    /// Moving average, per main-space eviction, of evicted keys that came back (main-list ghost
    /// hits): how often the victim a ghost admission pushes out would have been used again.
    main_victims_returning: f64,
    /// Ghost-admissible misses turned down in a row while ghost admission does not pay.
    ghost_admission_skipped: u32,
    /// Where the cold-victim search resumes: a probation item, or NIL to start at the LRU end.
    cold_search: u32,
    /// Sketch halvings seen by the search (a halving restarts it: estimates only fall then).
    cold_search_halvings: u64,
    /// Moving averages, per main-space eviction of each kind, of victims that came back (main-list
    /// ghost hits): cold victims against probation LRU victims. Cold victims are taken only while
    /// they come back no more often than the LRU victims they spare. On sprite they come back 40%
    /// of the time against 47% (x16: 35 against 43%); on two phased synthetic traces 81-82% against
    /// 15-32%, because there the keys seen once are the new phase's (STORE.md).
    cold_victims_returning: f64,
    lru_victims_returning: f64,
    /// Chances passed up in a row while cold victims do not pay.
    cold_victims_skipped: u32,
    /// Bytes held for values still arriving on connections ([`Shard::reserve`]): counted in the
    /// budget like stored items, so buffers waiting for a large value cannot take memory beyond
    /// it (memcached reads a value straight into the item it allocated from the same budget).
    /// Since session 36 also the mappings of `landings`.
    reserved: usize,
    /// Mappings made for large values still arriving, each read straight into by its connection
    /// ([`Shard::land`]): an insert of exactly one of those values adopts the mapping as the item's
    /// ([`Shard::insert`]) instead of copying it. Outside the pages (compaction, expiry and eviction
    /// never see them), counted in `reserved`. One per connection receiving such a value, at most.
    landings: Vec<LandingSlot>,
    /// The id the next landing gets.
    next_landing_id: u64,
}

/// A mapping in [`Shard::landings`].
struct LandingSlot {
    /// What the connection's [`super::Landing`] knows it by (its address may be reused once it is
    /// adopted and freed, so the address alone would not do).
    id: u64,
    ptr: *mut u8,
    /// Mapped length, as the item's dedicated chunk.
    bytes: usize,
    /// Where the value starts: after the header, the flags if nonzero, and the key.
    value_at: usize,
    /// The value's length.
    value_len: usize,
    /// Bytes of it counted in `reserved`.
    held: usize,
    /// Bytes from its start that may be resident (populated, or a reused mapping's): the value may
    /// be written up to here.
    resident: usize,
    /// Bytes of it that count nothing while the value arrives ([`Shard::land`]).
    free: usize,
}

// SAFETY: a landing's mapping is the shard's until its connection gets its `LandingPlace`; from then
// on the connection alone writes its value part, and the shard touches the mapping only to adopt it
// (an insert by that connection, after its last write) or to unmap it (after the connection dropped
// it). No reference into it is held here.
unsafe impl Send for LandingSlot {}

/// A landing made by [`Shard::land`]: its id, its mapping, and where in it the value goes.
pub(crate) struct LandingPlace {
    pub(crate) id: u64,
    pub(crate) ptr: *mut u8,
    pub(crate) value_at: usize,
}

fn is_expired(exptime: u32, now: u32) -> bool {
    exptime != 0 && exptime <= now
}

impl Shard {
    pub(crate) fn new(
        seed: u64,
        budget: usize,
        max_items: Option<usize>,
        policy: PolicyConfig,
    ) -> Shard {
        let cap = max_items.unwrap_or(1024).max(1);
        let counters = (cap * policy.sketch_counters_per_item).max(64);
        let sample = (cap * policy.sample_factor) as u64;
        Shard {
            // About 64 pages per shard budget: small budgets stay fine-grained, large ones waste
            // little at page tails.
            slab: Slab::for_budget(budget),
            index: Index::new(),
            sketch: Sketch::new(counters, sample, policy.conservative_update),
            seed,
            queues: [Queue::EMPTY; 3],
            budget,
            max_items,
            policy,
            window_frac: policy.window_percent,
            protected_frac: policy.protected_percent * (1.0 - policy.window_percent),
            candidate: NIL,
            climber_hits: 0,
            climber_misses: 0,
            climber_prev_rate: 0.0,
            climber_step: -CLIMBER_STEP_PERCENT,
            rng: seed ^ 0x2545_F491_4F6C_DD1D,
            flush_gen: 0,
            expire_page: 0,
            expire_chunk: 0,
            stats: ShardStats::default(),
            scratch: Vec::new(),
            compaction_failed_at_idle: 0,
            ghosts: {
                let mut g = Ghosts::new();
                g.resize(cap);
                g
            },
            ghost_admitted_read: 0.5,
            main_victims_returning: 0.5,
            ghost_admission_skipped: 0,
            cold_search: NIL,
            cold_search_halvings: 0,
            cold_victims_returning: 0.0,
            lru_victims_returning: 0.0,
            cold_victims_skipped: 0,
            reserved: 0,
            landings: Vec::new(),
            next_landing_id: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether `bytes` more would fit the budget once eviction had emptied the arena: beside the
    /// tables and the room values in flight hold, which eviction does not free.
    fn fits_beside_an_emptied_arena(&self, bytes: usize) -> bool {
        self.bytes() - self.slab.bytes + bytes <= self.budget
    }

    /// Bytes accounted against the budget.
    pub(crate) fn bytes(&self) -> usize {
        self.arena_bytes()
            + self.index.bytes()
            + self.sketch.bytes()
            + self.ghosts.bytes()
            + self.reserved
    }

    /// The item pages, the arena's tables, and the buffer for one page's items (up to a page's
    /// chunks, 4 B each).
    fn arena_bytes(&self) -> usize {
        self.slab.bytes + self.slab.table_bytes() + self.scratch.capacity() * 4
    }

    /// (arena pages and tables, hash index, sketch and ghosts) bytes.
    pub(crate) fn bytes_breakdown(&self) -> (usize, usize, usize) {
        (
            self.arena_bytes(),
            self.index.bytes(),
            self.sketch.bytes() + self.ghosts.bytes(),
        )
    }

    pub(crate) fn queue_lens(&self) -> [usize; 3] {
        [self.queues[0].len, self.queues[1].len, self.queues[2].len]
    }

    pub(crate) fn window_frac(&self) -> f64 {
        self.window_frac
    }

    pub(crate) fn sketch_resets(&self) -> u64 {
        self.sketch.resets
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        super::hash_key(self.seed, key)
    }

    /// Capacity in items that the policy's shares refer to.
    fn capacity(&self) -> usize {
        self.max_items.unwrap_or(self.index.len()).max(1)
    }

    // ---- lookup ----

    pub(crate) fn find(&self, h: u64, key: &[u8]) -> Option<(usize, u32)> {
        let slab = &self.slab;
        self.index.find(h, |loc| slab.key(loc) == key)
    }

    pub(crate) fn meta(&self, loc: u32) -> ItemMeta {
        let bits = self.slab.get_u8(loc, OFF_BITS);
        let last_access = self.slab.get_u32(loc, OFF_LAST_ACCESS);
        ItemMeta {
            flags: self.slab.flags(loc),
            exptime: self.slab.get_u32(loc, OFF_EXPTIME),
            cas: self.slab.get_u64(loc, OFF_CAS),
            stale: bits & BIT_STALE != 0,
            win_sent: bits & BIT_WIN_SENT != 0,
            fetched: bits & BIT_FETCHED != 0,
            placeholder: last_access & LAST_ACCESS_PLACEHOLDER != 0,
            last_access: last_access & !LAST_ACCESS_PLACEHOLDER,
        }
    }

    /// Writes the metadata that can change in place: everything but the client flags, which
    /// [`Slab::init_item`] fixed (a flagless chunk has no room for them).
    pub(crate) fn update_meta(&mut self, loc: u32, m: &MetaUpdate) {
        let keep = self.slab.get_u8(loc, OFF_BITS)
            & (BIT_LIVE | QUEUE_MASK | BIT_HAS_FLAGS | BIT_GHOST_ADMITTED);
        let bits = keep
            | if m.stale { BIT_STALE } else { 0 }
            | if m.win_sent { BIT_WIN_SENT } else { 0 }
            | if m.fetched { BIT_FETCHED } else { 0 };
        self.slab.set_u8(loc, OFF_BITS, bits);
        self.slab.set_u32(loc, OFF_EXPTIME, m.exptime);
        self.slab.set_u64(loc, OFF_CAS, m.cas);
        let placeholder = if m.placeholder {
            LAST_ACCESS_PLACEHOLDER
        } else {
            0
        };
        let last_access = m.last_access.min(!LAST_ACCESS_PLACEHOLDER) | placeholder;
        self.slab.set_u32(loc, OFF_LAST_ACCESS, last_access);
    }

    /// Looks up a live item, removing it first if it has expired (counted as `get_expired`).
    pub(crate) fn lookup_live(&mut self, h: u64, key: &[u8], now: u32) -> Option<u32> {
        let (slot, loc) = self.find(h, key)?;
        if is_expired(self.slab.get_u32(loc, OFF_EXPTIME), now) {
            self.stats.get_expired += 1;
            self.stats.reclaimed += 1;
            self.reclaim_expired(slot, loc);
            return None;
        }
        Some(loc)
    }

    /// Removes an expired item, counting it (by the caller: `reclaimed` when found on access,
    /// `crawler_reclaimed` when the background walk found it; each once, as memcached's two
    /// counters count disjoint removals).
    fn reclaim_expired(&mut self, slot: usize, loc: u32) {
        if self.slab.get_u8(loc, OFF_BITS) & BIT_FETCHED == 0 {
            self.stats.expired_unfetched += 1;
        }
        self.remove_at(slot, loc);
    }

    // ---- queues ----

    pub(crate) fn queue_of(&self, loc: u32) -> u8 {
        (self.slab.get_u8(loc, OFF_BITS) & QUEUE_MASK) >> QUEUE_SHIFT
    }

    /// The queue and the links of the item at `loc`.
    #[inline]
    fn links(&self, loc: u32) -> (usize, u32, u32) {
        (
            self.queue_of(loc) as usize,
            self.slab.get_u32(loc, OFF_PREV),
            self.slab.get_u32(loc, OFF_NEXT),
        )
    }

    /// Points the links around an item of queue `q` whose neighbours are `prev` and `next`
    /// elsewhere: `prev` (or the queue's head) at `forward`, `next` (or the queue's tail) at `back`.
    #[inline]
    fn point_neighbours_at(&mut self, (q, prev, next): (usize, u32, u32), forward: u32, back: u32) {
        if prev == NIL {
            self.queues[q].head = forward;
        } else {
            self.slab.set_u32(prev, OFF_NEXT, forward);
        }
        if next == NIL {
            self.queues[q].tail = back;
        } else {
            self.slab.set_u32(next, OFF_PREV, back);
        }
    }

    fn unlink(&mut self, loc: u32) {
        let (q, prev, next) = self.links(loc);
        if loc == self.cold_search {
            // The search resumes after it, in the same queue (probation).
            self.cold_search = next;
        }
        self.point_neighbours_at((q, prev, next), next, prev);
        self.queues[q].len -= 1;
    }

    fn push_mru(&mut self, q: u8, loc: u32) {
        self.set_queue_bits(q, loc);
        let queue = &mut self.queues[q as usize];
        let tail = queue.tail;
        queue.tail = loc;
        if tail == NIL {
            queue.head = loc;
        }
        queue.len += 1;
        self.slab.set_u32(loc, OFF_PREV, tail);
        self.slab.set_u32(loc, OFF_NEXT, NIL);
        if tail != NIL {
            self.slab.set_u32(tail, OFF_NEXT, loc);
        }
    }

    /// Records in the item's header that queue `q` holds it.
    fn set_queue_bits(&mut self, q: u8, loc: u32) {
        let bits = self.slab.get_u8(loc, OFF_BITS) & !QUEUE_MASK;
        self.slab.set_u8(loc, OFF_BITS, bits | (q << QUEUE_SHIFT));
    }

    /// Puts `loc` at the LRU end of queue `q`: the next to go.
    fn push_lru(&mut self, q: u8, loc: u32) {
        self.set_queue_bits(q, loc);
        let queue = &mut self.queues[q as usize];
        let head = queue.head;
        queue.head = loc;
        if head == NIL {
            queue.tail = loc;
        }
        queue.len += 1;
        self.slab.set_u32(loc, OFF_PREV, NIL);
        self.slab.set_u32(loc, OFF_NEXT, head);
        if head != NIL {
            self.slab.set_u32(head, OFF_PREV, loc);
        }
    }

    fn move_to(&mut self, q: u8, loc: u32) {
        self.unlink(loc);
        self.push_mru(q, loc);
    }

    fn window_max(&self) -> usize {
        ((self.window_frac * self.capacity() as f64) as usize).max(1)
    }

    fn protected_max(&self) -> usize {
        (self.protected_frac * self.capacity() as f64) as usize
    }

    fn demote_from_protected(&mut self) {
        let max = self.protected_max();
        while self.queues[PROTECTED as usize].len > max {
            let loc = self.queues[PROTECTED as usize].head;
            self.move_to(PROBATION, loc);
        }
    }

    /// A read hit: sketch, queue position, climber sample.
    pub(crate) fn on_read(&mut self, h: u64, loc: u32) {
        self.sketch.increment(h);
        self.note_ghost_admitted_outcome(loc, true);
        self.climber_hits += 1;
        match self.queue_of(loc) {
            WINDOW => self.move_to(WINDOW, loc),
            PROBATION => {
                self.move_to(PROTECTED, loc);
                self.demote_from_protected();
            }
            _ => self.move_to(PROTECTED, loc),
        }
        self.climb();
    }

    // ---- insert / remove / evict ----

    /// Unlinks and frees the item at `loc` (index slot `slot`).
    pub(crate) fn remove_at(&mut self, slot: usize, loc: u32) {
        self.unlink(loc);
        if self.candidate == loc {
            self.candidate = NIL;
        }
        self.index.remove_slot(slot);
        self.slab.free(loc);
    }

    fn evict(&mut self, loc: u32) {
        let h = self.hash(self.slab.key(loc));
        let slot = self
            .index
            .find(h, |l| l == loc)
            .map(|(s, _)| s)
            .expect("a queued item is indexed");
        self.stats.evictions += 1;
        if self.slab.get_u8(loc, OFF_BITS) & BIT_FETCHED == 0 {
            self.stats.evicted_unfetched += 1;
        }
        self.stats.evictions_by_class.0
            [super::class_id(self.slab.chunk_len(loc) as u32) as usize] += 1;
        self.note_ghost_admitted_outcome(loc, false);
        self.remove_at(slot, loc);
    }

    /// Evicts `loc`, remembering it in the ghost list of `from`; `cold_victim` marks a main-space
    /// victim taken by the cold-victim search rather than at the probation LRU end.
    fn evict_noting(&mut self, loc: u32, from: GhostHit, cold_victim: bool) {
        if self.policy.adaptation == WindowAdaptation::Ghost {
            let h = self.hash(self.slab.key(loc));
            self.ghosts.record_eviction(h, from, cold_victim);
            if from == GhostHit::Main {
                self.main_victims_returning *= 1.0 - GHOST_ADMISSION_EVIDENCE_WEIGHT;
                let keep = 1.0 - COLD_VICTIM_EVIDENCE_WEIGHT;
                if cold_victim {
                    self.cold_victims_returning *= keep;
                } else {
                    self.lru_victims_returning *= keep;
                }
            }
        }
        self.evict(loc);
    }

    /// Counts a ghost-admitted item's first use (a read or a replacement), or its eviction unused,
    /// towards ghost admission's yield.
    #[inline]
    fn note_ghost_admitted_outcome(&mut self, loc: u32, used: bool) {
        let bits = self.slab.get_u8(loc, OFF_BITS);
        if bits & BIT_GHOST_ADMITTED != 0 {
            self.count_ghost_admitted_outcome(loc, bits, used);
        }
    }

    #[cold]
    fn count_ghost_admitted_outcome(&mut self, loc: u32, bits: u8, used: bool) {
        self.slab.set_u8(loc, OFF_BITS, bits & !BIT_GHOST_ADMITTED);
        let w = GHOST_ADMISSION_EVIDENCE_WEIGHT;
        self.ghost_admitted_read =
            self.ghost_admitted_read * (1.0 - w) + if used { w } else { 0.0 };
    }

    /// Whether a key found in the window's ghost list skips the window and the duel. It pushes
    /// the probation LRU item out unjudged, which pays only while the keys it lets in are read
    /// more often than the keys it pushes out come back. On recency-driven traces they are
    /// (ghost-admitted keys read before eviction: sprite 68%, web07 66%, multi2 82%, against
    /// main victims returning 34-47%); under a Zipf popularity they are not (49-57% against
    /// 54-61%), and admitting them anyway cost 1.2 points on Zipf 0.6 (STORE.md).
    fn ghost_admission_pays(&mut self) -> bool {
        if self.ghost_admitted_read >= self.main_victims_returning {
            return true;
        }
        self.ghost_admission_skipped += 1;
        if self.ghost_admission_skipped >= GHOST_ADMISSION_PROBE_EVERY {
            self.ghost_admission_skipped = 0;
            return true;
        }
        self.stats.ghost_admissions_declined += 1;
        false
    }

    /// Ghost feedback on a miss: a key evicted recently (in the latest quarter of its ghost
    /// list, [`super::ghost::RECENT_SHARE`]) grows the part of the cache that would have kept it.
    /// Returns the list the key was found in.
    fn ghost_feedback(&mut self, h: u64) -> Option<GhostHit> {
        if self.policy.adaptation != WindowAdaptation::Ghost {
            return None;
        }
        let GhostFound {
            list,
            keys,
            recent,
            cold_victim,
        } = self.ghosts.on_miss(h)?;
        if list == GhostHit::Main {
            self.main_victims_returning += GHOST_ADMISSION_EVIDENCE_WEIGHT * keys as f64;
            let returned = COLD_VICTIM_EVIDENCE_WEIGHT * keys as f64;
            if cold_victim {
                self.cold_victims_returning += returned;
            } else {
                self.lru_victims_returning += returned;
            }
        }
        if recent {
            let step = keys as f64 * self.policy.ghost_step_items / self.capacity() as f64;
            match list {
                GhostHit::Window => self.increase_window(step),
                GhostHit::Main => self.decrease_window(step),
            }
        }
        Some(list)
    }

    /// The probation item the duel should be fought against instead of the LRU one, if any: the
    /// least recent probation item seen about once, when the LRU item has a history (estimates
    /// [`COLD_VICTIM_MAX_ESTIMATE`] and [`WARM_LRU_MIN_ESTIMATE`]), while the window is large and
    /// cold victims pay. A candidate with an estimate of 3 or 4 then gets in at the expense of a
    /// key seen once instead of losing to a warm LRU item, and a stronger candidate spares the warm
    /// item. (Without the window and yield conditions it raised sprite from 86.33 to 86.57-86.66 but
    /// cost phased traces up to 0.7 points: STORE.md.)
    ///
    /// Returns the item with its estimate; `lru_estimate` is the LRU item's, which the duel needs
    /// anyway (so it is looked up once).
    fn cold_victim(&mut self, lru: u32, lru_estimate: u8, candidate: u32) -> Option<(u32, u8)> {
        if !self.policy.cold_victims
            || self.policy.adaptation != WindowAdaptation::Ghost
            || self.window_frac < COLD_VICTIMS_MIN_WINDOW
            || lru_estimate < WARM_LRU_MIN_ESTIMATE
        {
            return None;
        }
        if self.cold_victims_returning > self.lru_victims_returning {
            self.cold_victims_skipped += 1;
            if self.cold_victims_skipped < COLD_VICTIM_PROBE_EVERY {
                self.stats.cold_victims_declined += 1;
                return None;
            }
        }
        self.cold_victims_skipped = 0;
        if self.sketch.resets != self.cold_search_halvings {
            self.cold_search_halvings = self.sketch.resets;
            self.cold_search = NIL;
        }
        let mut loc = if self.cold_search == NIL {
            lru
        } else {
            self.cold_search
        };
        for _ in 0..COLD_VICTIM_SEARCH_STEPS {
            if loc == NIL {
                break;
            }
            let estimate = self.estimate(loc);
            if estimate <= COLD_VICTIM_MAX_ESTIMATE {
                self.cold_search = loc;
                return (loc != lru && loc != candidate).then_some((loc, estimate));
            }
            loc = self.slab.get_u32(loc, OFF_NEXT);
        }
        self.cold_search = loc;
        None
    }

    /// Whether the item at `loc` is a lease placeholder (see [`Shard::meta`]).
    fn is_placeholder(&self, loc: u32) -> bool {
        self.slab.get_u32(loc, OFF_LAST_ACCESS) & LAST_ACCESS_PLACEHOLDER != 0
    }

    /// The sketch's estimate of the frequency of the item at `loc`.
    fn estimate(&self, loc: u32) -> u8 {
        self.sketch.frequency(self.hash(self.slab.key(loc)))
    }

    /// Whether `candidate` beats a victim whose estimate is `vf`.
    fn admit(&mut self, candidate: u32, vf: u8) -> bool {
        let cf = self.estimate(candidate);
        if cf > vf + self.policy.admission_margin {
            true
        } else if cf > ADMIT_HASHDOS_THRESHOLD {
            // Escape hatch against an attacker pinning hot victims: admit a warm candidate
            // now and then. xorshift, seeded, so replays stay deterministic.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng & 127 == 0
        } else {
            false
        }
    }

    /// Evicts one item chosen by the policy. False if the shard is empty.
    fn evict_one(&mut self) -> bool {
        let lru = self.queues[PROBATION as usize].head;
        let candidate = std::mem::replace(&mut self.candidate, NIL);
        if candidate != NIL
            && lru != NIL
            && candidate != lru
            && self.queue_of(candidate) == PROBATION
        {
            let lru_estimate = self.estimate(lru);
            let cold = self.cold_victim(lru, lru_estimate, candidate);
            let (victim, victim_estimate) = cold.unwrap_or((lru, lru_estimate));
            // A lease placeholder is admitted whatever its frequency: it stands for a refill that
            // is on its way, and evicting it throws that refill away (the winner's set finds no
            // lease) and lets the next reader win and go to the database again. By frequency it
            // lost most duels, so a lease on a lukewarm key outlived only about a window's worth of
            // inserts (session 31: 65 of 200 leases lost to 50 KB of other sets in 16 MiB, none in
            // memcached). Placeholders are small and end with their lease.
            if self.is_placeholder(candidate) || self.admit(candidate, victim_estimate) {
                self.stats.cold_victims += u64::from(cold.is_some());
                self.evict_noting(victim, GhostHit::Main, cold.is_some());
            } else {
                self.evict_noting(candidate, GhostHit::Window, false);
            }
            return true;
        }
        for q in [PROBATION, PROTECTED, WINDOW] {
            let loc = self.queues[q as usize].head;
            if loc != NIL {
                let from = if q == WINDOW {
                    GhostHit::Window
                } else {
                    GhostHit::Main
                };
                self.evict_noting(loc, from, false);
                return true;
            }
        }
        false
    }

    /// Fights the admission duel of the item the window last pushed out ([`Shard::evict_one`]), if
    /// it is still waiting for one: the loser goes. True if there was one. Room made by emptying
    /// pages ([`Shard::reserve`], [`Shard::grow_landing`]) calls this first: the duel is otherwise
    /// fought only by [`Shard::allocate`]'s policy evictions, and a candidate that none reached before
    /// the next insert replaced it entered the main space unjudged. Large values make most of their
    /// room by pages, so the sketch judged few newcomers on such a load (sizes log-uniform in 16
    /// B..500 KB, `examples/mixed_sizes`: 5.27% -> 8.52% of hits, Zipf 0.9 50.21% -> 52.82%; STORE.md,
    /// session 36).
    fn judge_candidate(&mut self) -> bool {
        self.candidate != NIL && self.evict_one()
    }

    /// Whether an item the window pushed out still waits for its admission duel.
    #[cfg(test)]
    pub(crate) fn has_candidate(&self) -> bool {
        self.candidate != NIL
    }

    /// Frees a page by evicting everything in it, the way memory moves between size classes once
    /// the budget is full: of the pages holding the policy's next [`PAGE_VICTIM_LOOKAHEAD`] victims
    /// (in its first non-empty queue, from the LRU end), the one with the fewest items per byte it
    /// gives back to the budget (pages of small chunks are smaller: by count alone, a 16 KiB page
    /// of 5 items would go before a 128 KiB page of 6, which frees eight times the room; 16.92% ->
    /// 19.01% of hits with log-uniform 100-10,000 B values, uniform popularity, 70.29% -> 71.17% at
    /// Zipf 0.9), or instead a large value elsewhere that costs less ([`Shard::page_to_evict`]).
    fn evict_page(&mut self) -> bool {
        let Some((page, by_size)) = self.page_to_evict(NIL) else {
            return false;
        };
        self.stats.size_evictions += u64::from(by_size);
        let mut locs = std::mem::take(&mut self.scratch);
        self.slab.live_in_page(page, &mut locs);
        for &loc in &locs {
            self.evict(loc);
        }
        self.scratch = locs;
        self.stats.page_evictions += 1;
        true
    }

    /// The page [`Shard::evict_page`] empties next, and whether size-aware eviction chose it
    /// ([`Shard::large_value_to_evict`], never `except`'s page); `None` when the shard holds no item.
    fn page_to_evict(&self, except: u32) -> Option<(usize, bool)> {
        let victim = self.next_victim()?;
        let next_page = self
            .run_from(victim, PAGE_VICTIM_LOOKAHEAD)
            .map(Slab::page_of)
            .min_by(|&a, &b| self.items_per_byte(a, b))?;
        if let Some(large) = self.large_value_to_evict(next_page, except) {
            return Some((Slab::page_of(large), true));
        }
        // Also in view: items alone in their pages (a large value's own mapping, mostly) among the
        // next ALONE_LOOKAHEAD of the main space and of the window, which is sized in items, so a
        // few large values stored once and never read could hold most of the budget there while
        // the main space's small values went a page of them at a time (session 34: 50,000 values of
        // 100 B read twice, then 200 sets of 400 KB into 64 MiB kept 17,697 of the small ones, now
        // all 50,000 as memcached, which evicts within the large values' class; log-uniform
        // 100-10,000 B values, `examples/mixed_sizes.rs`: 27.44% -> 27.33% uniform, 73.43% ->
        // 73.48% Zipf 0.9, where no page holds one item alone for long).
        let window = self.queues[WINDOW as usize].head;
        let window = if window == victim { NIL } else { window };
        let alone = |&loc: &u32| self.slab.live_count(Slab::page_of(loc)) == 1;
        // `next_page` is the first of the next victims' best pages, so it wins a tie as before.
        let alone_further = self
            .run_from(victim, ALONE_LOOKAHEAD)
            .skip(PAGE_VICTIM_LOOKAHEAD)
            .filter(alone)
            .take(PAGE_VICTIM_LOOKAHEAD)
            .chain(
                self.run_from(window, ALONE_LOOKAHEAD)
                    .filter(alone)
                    .take(PAGE_VICTIM_LOOKAHEAD),
            );
        std::iter::once(next_page)
            .chain(alone_further.map(Slab::page_of))
            .min_by(|&a, &b| self.items_per_byte(a, b))
            .map(|page| (page, false))
    }

    /// Size-aware eviction ([`super::StoreConfig::size_aware_eviction`]): when `next_page`, the page
    /// of the policy's next victims with the fewest items per byte, holds several items,
    /// the item with a mapping of its own, other than `except`, that frees the most room per item
    /// lost, counting it as its estimated frequency plus one items, if it frees more than that page
    /// and is no more frequent than the page's items on average (its estimate less the admission
    /// margin, which discounts its latest access: [`Shard::worth_less_than_next_victims`]'s test).
    ///
    /// The main space keeps items by count, so a large value read a second time went to protected
    /// and held the room of thousands of small values there, while pages of small values were
    /// emptied for each newcomer: with values log-uniform in 16 B..500 KB, read through at uniform
    /// popularity (`examples/mixed_sizes`), 8.12% -> 15.57% of hits; at Zipf 0.9 52.15% -> 58.74%,
    /// the bytes hit and the largest tenth's hits about the same (39.97% -> 39.31%, 36.98% ->
    /// 35.21%). The frequency test is what keeps those: without it a large value read often went
    /// too (Zipf 58.56% of hits but 25.39% of the bytes, the largest tenth 12.74%). Up to
    /// [`LARGE_VALUES_WEIGHED`] of them are weighed, from a place that moves with each eviction.
    fn large_value_to_evict(&self, next_page: usize, except: u32) -> Option<u32> {
        if !self.policy.size_aware_eviction
            || !self.slab.has_dedicated()
            || self.slab.live_count(next_page) <= 1
        {
            return None;
        }
        let (victims, victims_estimates) = self.page_estimates(next_page);
        let margin = u64::from(self.policy.admission_margin);
        let bytes = |loc: u32| self.slab.page_charged(Slab::page_of(loc)) as u64;
        let start = self.stats.evictions as usize;
        let (large, weight) = self
            .slab
            .dedicated_items(start, LARGE_VALUES_WEIGHED)
            .filter(|&loc| loc != except)
            .filter_map(|loc| {
                let estimate = u64::from(self.estimate(loc));
                (estimate.saturating_sub(margin) * victims <= victims_estimates)
                    .then_some((loc, estimate + 1))
            })
            .min_by(|&(a, wa), &(b, wb)| (wa * bytes(b)).cmp(&(wb * bytes(a))))?;
        let next_bytes = self.slab.page_charged(next_page) as u64;
        (weight * next_bytes < victims * bytes(large)).then_some(large)
    }

    /// The live items of `page` and the sum of their estimated frequencies.
    fn page_estimates(&self, page: usize) -> (u64, u64) {
        self.slab.live_items(page).fold((0, 0), |(n, sum), loc| {
            (n + 1, sum + u64::from(self.estimate(loc)))
        })
    }

    /// The policy's next victim: the LRU item of the first non-empty queue of probation,
    /// protected and window.
    fn next_victim(&self) -> Option<u32> {
        [PROBATION, PROTECTED, WINDOW]
            .iter()
            .map(|&q| self.queues[q as usize].head)
            .find(|&l| l != NIL)
    }

    /// Up to `len` items of a queue from `head` on, towards its MRU end.
    fn run_from(&self, head: u32, len: usize) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(head).filter(|&l| l != NIL), |&loc| {
            Some(self.slab.get_u32(loc, OFF_NEXT)).filter(|&next| next != NIL)
        })
        .take(len)
    }

    /// Orders pages by live items per byte of budget they hold, compared as cross products
    /// (live_a / len_a < live_b / len_b). `min_by` keeps the first of equals, so the next victim's
    /// page wins a tie.
    fn items_per_byte(&self, a: usize, b: usize) -> std::cmp::Ordering {
        let cost = |lost: usize, freed: usize| {
            self.slab.live_count(lost) as usize * self.slab.page_charged(freed)
        };
        cost(a, b).cmp(&cost(b, a))
    }

    /// Whether the new item at `loc` (key hash `h`), which has a mapping of its own, should give way
    /// to the items the next page eviction would free: it is worth less per byte of the budget (its
    /// estimated frequency plus one per byte of its mapping, against the sum of theirs per byte of
    /// their page) and is no more frequent than they are on average. A key read more often than those
    /// is let in whatever its size: refusing it would send each of its reads to the database.
    fn worth_less_than_next_victims(&mut self, loc: u32, h: u64) -> bool {
        let Some((page, _)) = self.page_to_evict(loc) else {
            return false;
        };
        let (victims, victims_estimates) = self.page_estimates(page);
        let estimate = u64::from(self.sketch.frequency(h));
        let own_bytes = self.slab.page_charged(Slab::page_of(loc)) as u64;
        let victims_bytes = self.slab.page_charged(page) as u64;
        // The estimate counts the insert itself; the margin discounts it, as in `admit`.
        let margin = u64::from(self.policy.admission_margin);
        estimate.saturating_sub(margin) * victims <= victims_estimates
            && (estimate + 1) * victims_bytes < (victims_estimates + victims) * own_bytes
    }

    /// Empties the page with the fewest bytes of items (if at most half full) by moving them into
    /// idle chunks of other pages, of their own size or up to [`COMPACTION_SLACK_PERCENT`] larger,
    /// so the page's memory can serve another size class without evicting anything (memcached's
    /// slab rebalancer rescues items the same way). False, with nothing moved, when one of its items
    /// finds no chunk.
    fn compact_one(&mut self) -> bool {
        let Some(pid) = self.slab.page_to_compact() else {
            return false;
        };
        let mut locs = std::mem::take(&mut self.scratch);
        self.slab.live_in_page(pid as usize, &mut locs);
        // Chunks for every item first: a page that cannot be emptied is left as it was, rather than
        // having some of its items moved into larger chunks for nothing.
        let mut chunks = Vec::with_capacity(locs.len());
        // Chunks never handed out may be touched for up to what emptying the page gives back (if it
        // cannot be emptied after all, they stay counted, as freed chunks the next items can take).
        let limit = self.budget + self.slab.page_charged(pid as usize);
        for &from in &locs {
            let room = limit.saturating_sub(self.bytes());
            match self.slab.alloc_existing_outside(
                self.slab.item_len(from),
                pid,
                COMPACTION_SLACK_PERCENT,
                room,
            ) {
                Some(to) => chunks.push(to),
                None => break,
            }
        }
        let emptied = chunks.len() == locs.len();
        if emptied {
            for (&from, &to) in locs.iter().zip(&chunks) {
                self.relocate(from, to);
            }
        } else {
            // Never filled: freeing them only puts them on their pages' free lists.
            for &to in &chunks {
                self.slab.free(to);
            }
        }
        self.scratch = locs;
        self.stats.pages_compacted += u64::from(emptied);
        emptied
    }

    /// Compacts one page ([`Shard::compact_one`]) if idle chunks hold at least
    /// 1/[`COMPACT_ABOVE_IDLE_SHARE`] of the budget; after a failure, only once a small page's worth
    /// more is idle than at the lowest point since. True if a page was emptied.
    fn compact_if_idle(&mut self) -> bool {
        let idle = self.slab.idle_bytes();
        self.compaction_failed_at_idle = self.compaction_failed_at_idle.min(idle);
        if idle < self.budget / COMPACT_ABOVE_IDLE_SHARE
            || idle < self.compaction_failed_at_idle + self.slab.smallest_page_bytes()
        {
            return false;
        }
        if self.compact_one() {
            self.compaction_failed_at_idle = 0;
            true
        } else {
            self.compaction_failed_at_idle = idle;
            false
        }
    }

    /// Moves the item at `from` into the free chunk `to`: bytes, queue links, index entry, candidate.
    fn relocate(&mut self, from: u32, to: u32) {
        let h = self.hash(self.slab.key(from));
        let (slot, _) = self
            .index
            .find(h, |l| l == from)
            .expect("a live item is indexed");
        self.slab.move_item(from, to);
        self.index.set_loc(slot, to);
        // The copy kept its links and queue bits; its neighbours still point at `from`.
        self.point_neighbours_at(self.links(to), to, to);
        if self.cold_search == from {
            self.cold_search = to;
        }
        if self.candidate == from {
            self.candidate = to;
        }
        self.stats.items_moved += 1;
    }

    /// Panics unless the queues, the index and the arena agree: every queued item is live, indexed
    /// under its key and linked both ways; the queue lengths add up to the index's count; the arena's
    /// idle-byte count matches its pages. For tests.
    #[cfg(test)]
    pub(crate) fn check_consistency(&self) {
        let mut queued = 0;
        for (q, queue) in self.queues.iter().enumerate() {
            let (mut loc, mut prev, mut len) = (queue.head, NIL, 0);
            while loc != NIL {
                assert!(
                    self.slab.get_u8(loc, OFF_BITS) & BIT_LIVE != 0,
                    "queued item not live"
                );
                assert_eq!(self.queue_of(loc) as usize, q, "queue bits");
                assert_eq!(self.slab.get_u32(loc, OFF_PREV), prev, "back link");
                let key = self.slab.key(loc);
                assert_eq!(
                    self.find(self.hash(key), key).map(|(_, l)| l),
                    Some(loc),
                    "index"
                );
                (prev, loc) = (loc, self.slab.get_u32(loc, OFF_NEXT));
                len += 1;
            }
            assert_eq!(queue.tail, prev, "queue tail");
            assert_eq!(queue.len, len, "queue length");
            queued += len;
        }
        assert_eq!(queued, self.index.len(), "every indexed item is queued");
        if self.cold_search != NIL {
            assert!(
                self.slab.get_u8(self.cold_search, OFF_BITS) & BIT_LIVE != 0
                    && self.queue_of(self.cold_search) == PROBATION,
                "the cold-victim search resumes at a live probation item"
            );
        }
        let (idle, lists_agree) = self.slab.recount_idle();
        assert_eq!(self.slab.idle_bytes(), idle, "idle bytes");
        assert!(lists_agree, "partial lists");
        let (bytes, covered) = self.slab.recount_bytes();
        assert_eq!(self.slab.bytes, bytes, "arena bytes");
        assert!(covered, "every touched chunk is counted");
        assert!(
            self.slab.dedicated_list_agrees(),
            "the list of dedicated pages"
        );
        let landed: usize = self.landings.iter().map(|l| l.held).sum();
        assert!(
            landed <= self.reserved,
            "landings held beyond what is reserved"
        );
        for l in &self.landings {
            assert!(
                l.held <= l.bytes && l.resident <= l.bytes,
                "a landing past its mapping"
            );
        }
    }

    /// Gets a chunk for `size` bytes within the budget, evicting as needed.
    fn allocate(&mut self, size: usize) -> Result<u32, StoreError> {
        let mut evicted = 0usize;
        let mut compacted = 0usize;
        loop {
            // The tables (index, sketch, ghosts) may have grown past the budget since the last
            // insert; then a free chunk is no excuse: give up the spare page, then evict until the
            // shard is within budget. (Kept while over budget, the spare made free chunks unusable:
            // 25% fewer items after a switch from 100 B to 5,000 B values in one 21 MiB shard;
            // `store_eviction.rs::memory_moves_to_larger_values_without_losing_room`.)
            let bytes = self.bytes();
            if bytes > self.budget && self.slab.drop_spare() {
                continue;
            }
            let within = bytes <= self.budget;
            if within {
                if let Some(loc) = self.slab.alloc_existing(size, self.budget - bytes) {
                    return Ok(loc);
                }
            }
            if within && bytes + self.slab.new_page_cost(size) <= self.budget {
                return self
                    .slab
                    .alloc_new_page(size)
                    .ok_or(StoreError::OutOfMemory);
            }
            // Over budget: frees chunks of this class or empties a page.
            if !self.free_room(&mut compacted, &mut evicted) {
                return Err(StoreError::OutOfMemory);
            }
        }
    }

    /// One step of making room for an allocation (`compacted` and `evicted` count the steps taken
    /// so far): compaction while idle chunks of other sizes allow (nothing evicted), else a policy
    /// eviction, up to [`POLICY_EVICTIONS_BEFORE_PAGE`] of them, else a whole page emptied. False
    /// when nothing is left to evict.
    fn free_room(&mut self, compacted: &mut usize, evicted: &mut usize) -> bool {
        if *compacted < MAX_COMPACTIONS_PER_ALLOCATION && self.compact_if_idle() {
            *compacted += 1;
            return true;
        }
        if *evicted < POLICY_EVICTIONS_BEFORE_PAGE {
            *evicted += 1;
            self.evict_one()
        } else {
            self.evict_page()
        }
    }

    /// Holds `bytes` more of the budget for a value still arriving, compacting or else emptying the
    /// policy's victim pages until they fit. `whole` (at least `bytes`) is what this hold may still
    /// come to: when even that would not fit beside the tables and the other holds, it is refused
    /// before anything is evicted. `OutOfMemory` if nothing is left to evict, which happens only
    /// when other reservations hold the room; `TooLarge` for more than an item may take. Give it
    /// back with [`Shard::release`].
    pub(crate) fn reserve(&mut self, bytes: usize, whole: usize) -> Result<(), StoreError> {
        debug_assert!(bytes <= whole);
        let max = self.max_item_size();
        if whole > max {
            return Err(StoreError::TooLarge { size: whole, max });
        }
        self.hold_more(bytes, whole)
    }

    /// Holds `bytes` more of the budget for a value arriving (a reservation or a landing) that may
    /// still come to `whole` more, making room as [`Shard::reserve`] describes.
    fn hold_more(&mut self, bytes: usize, whole: usize) -> Result<(), StoreError> {
        // Eviction frees arena pages and nothing else: when the tables and the other holds leave
        // no room even in an empty arena, refuse now instead of evicting every item for nothing.
        if !self.fits_beside_an_emptied_arena(whole) {
            return Err(StoreError::OutOfMemory);
        }
        // Room comes from the spare page first, then from pages emptied by compaction (which
        // become the spare), and only then from evicting whole pages.
        let mut compacted = 0;
        while self.bytes() + bytes > self.budget {
            if self.slab.drop_spare() {
                continue;
            }
            if compacted < MAX_COMPACTIONS_PER_ALLOCATION && self.compact_if_idle() {
                compacted += 1;
                continue;
            }
            if !self.judge_candidate() && !self.evict_page() {
                return Err(StoreError::OutOfMemory);
            }
        }
        self.reserved += bytes;
        Ok(())
    }

    /// Evicts until the shard is within its budget, as [`Shard::allocate`] makes room: the spare
    /// page, compaction, the policy's victims, then whole pages.
    fn fit_budget(&mut self) {
        let (mut compacted, mut evicted) = (0, 0);
        while self.bytes() > self.budget {
            if !self.slab.drop_spare() && !self.free_room(&mut compacted, &mut evicted) {
                break;
            }
        }
    }

    /// Bytes held by [`Shard::reserve`] now.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Gives back bytes held by [`Shard::reserve`].
    pub(crate) fn release(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.reserved);
        self.reserved -= bytes.min(self.reserved);
    }

    /// The size of an item of a `key_len`-byte key, `value_len` bytes of value and client flags
    /// `flags`; `TooLarge` if the shard takes no item that large or the value is over
    /// [`MAX_VALUE_LEN`] (the header's 24-bit length).
    fn sized_item(
        &self,
        key_len: usize,
        value_len: usize,
        flags: u32,
    ) -> Result<usize, StoreError> {
        let size = item_size(key_len, value_len, flags);
        let max = self.max_item_size();
        if size > max || value_len > MAX_VALUE_LEN {
            return Err(StoreError::TooLarge {
                size,
                max: max.min(item_size(key_len, MAX_VALUE_LEN, flags)),
            });
        }
        Ok(size)
    }

    /// Maps the memory an item of a `key_len`-byte key, `value_len` bytes of value and client flags
    /// `flags` will have, for its connection to read the value into before the item exists:
    /// memcached reads a value straight into the item it allocated, where a read buffer and then a
    /// copy into a fresh mapping put a third of the server's time in page faults (STORE.md, "Large
    /// values beside small ones"). Only address space is taken here (a large item's spare mapping is
    /// resized for it rather than unmapped, its resident part held); [`Shard::grow_landing`] holds
    /// the budget and makes the pages resident as the value arrives, as [`Shard::reserve`] does for a
    /// value arriving in a buffer, of which the first `free` bytes count nothing (they stand for the
    /// buffer a connection reads into anyway). `Ok(None)` when such an item would go in a shared page
    /// (read it into the buffer under a reservation instead); `TooLarge`, and `OutOfMemory` when
    /// values in flight hold so much of the shard that this one would not fit. [`Shard::insert`] of
    /// exactly this value adopts the mapping; give it back otherwise with [`Shard::drop_landing`].
    pub(crate) fn land(
        &mut self,
        key_len: usize,
        value_len: usize,
        flags: u32,
        free: usize,
    ) -> Result<Option<LandingPlace>, StoreError> {
        let size = self.sized_item(key_len, value_len, flags)?;
        let Some(bytes) = self.slab.dedicated_chunk(size) else {
            return Ok(None);
        };
        if !self.fits_beside_an_emptied_arena(bytes) {
            return Err(StoreError::OutOfMemory);
        }
        let base = self.slab.take_dedicated_spare();
        let (ptr, resident) = map_for_landing(base, bytes).ok_or(StoreError::OutOfMemory)?;
        // The spare's resident part stays counted, now as this landing's.
        self.reserved += resident;
        let id = self.next_landing_id;
        self.next_landing_id += 1;
        let value_at = size - value_len;
        self.landings.push(LandingSlot {
            id,
            ptr,
            bytes,
            value_at,
            value_len,
            held: resident,
            resident,
            free,
        });
        Ok(Some(LandingPlace { id, ptr, value_at }))
    }

    /// Lets the first `arrivable` bytes of landing `id`'s value arrive: holds them in the budget
    /// (less the landing's `free` bytes), evicting as [`Shard::reserve`] does, and makes their pages
    /// resident in one call instead of a fault per 4 KiB. Returns how many bytes of the value may now
    /// be written (whole OS pages, so possibly more than asked). Errors as `reserve`, and then
    /// nothing more is held.
    pub(crate) fn grow_landing(&mut self, id: u64, arrivable: usize) -> Result<usize, StoreError> {
        let at = self.landing_at(id);
        let l = &self.landings[at];
        let (value_at, bytes, held, resident) = (l.value_at, l.bytes, l.held, l.resident);
        let to_resident = (value_at + arrivable.min(l.value_len))
            .next_multiple_of(OS_PAGE)
            .min(bytes)
            .max(resident);
        let to_hold = to_resident.saturating_sub(l.free).max(held);
        self.hold_more(to_hold - held, bytes - held)?;
        let l = &mut self.landings[at];
        l.held = to_hold;
        if to_resident > resident {
            // SAFETY: `resident..to_resident` is within the landing's mapping.
            populate(unsafe { l.ptr.add(resident) }, to_resident - resident);
            l.resident = to_resident;
        }
        Ok((to_resident - value_at).min(l.value_len))
    }

    /// Gives back the mapping of landing `id` if no insert adopted it: kept as the spare mapping
    /// for the next large value, or unmapped.
    pub(crate) fn drop_landing(&mut self, id: u64) {
        if let Some(at) = self.landings.iter().position(|l| l.id == id) {
            let l = self.landings.swap_remove(at);
            self.reserved -= l.held;
            self.slab.keep_or_unmap(l.ptr, l.bytes, l.resident);
        }
    }

    fn landing_at(&self, id: u64) -> usize {
        self.landings
            .iter()
            .position(|l| l.id == id)
            .expect("a landing not yet dropped or adopted")
    }

    /// Which of the landings `parts` was read into, if it is one whole value laid out as in an item
    /// of `size` bytes (after the header, the flags and the key).
    fn find_landing(&self, parts: &[&[u8]], size: usize) -> Option<usize> {
        // A set's value comes as the block and an empty part (`commands.rs`).
        let mut nonempty = parts.iter().filter(|part| !part.is_empty());
        let (Some(value), None) = (nonempty.next(), nonempty.next()) else {
            return None;
        };
        self.landings.iter().position(|l| {
            // SAFETY: `value_at` is within the mapping (`land` made it so).
            std::ptr::eq(value.as_ptr(), unsafe { l.ptr.add(l.value_at) })
                && value.len() == l.value_len
                && size - value.len() == l.value_at
                && self.slab.dedicated_chunk(size) == Some(l.bytes)
        })
    }

    /// A chunk for an item of `size` bytes: the landing at `landing` ([`Shard::find_landing`])
    /// adopted, or else one [`Shard::allocate`] finds.
    fn chunk_for_item(&mut self, landing: Option<usize>, size: usize) -> Result<u32, StoreError> {
        let Some(at) = landing else {
            return self.allocate(size);
        };
        let mut l = self.landings.swap_remove(at);
        // Now all of it counts (the part never held stood for a connection's buffer), and room is
        // made for the rest as `allocate` makes it, compaction and the policy first: the landing is
        // not a page yet, so nothing here can take it.
        self.reserved += l.bytes - l.held;
        l.held = l.bytes;
        self.fit_budget();
        match self.slab.adopt(l.ptr, l.bytes) {
            Some(loc) => {
                self.reserved -= l.bytes;
                self.stats.values_read_in_place += 1;
                Ok(loc)
            }
            None => {
                self.landings.push(l);
                Err(StoreError::OutOfMemory)
            }
        }
    }

    /// Stores a new item for `key`, replacing any existing one.
    pub(crate) fn insert(
        &mut self,
        h: u64,
        key: &[u8],
        parts: &[&[u8]],
        meta: &ItemMeta,
        new_item: bool,
    ) -> Result<(), StoreError> {
        let vlen: usize = parts.iter().map(|p| p.len()).sum();
        let size = self.sized_item(key.len(), vlen, meta.flags)?;
        if self.index.needs_rebuild() {
            let (slab, seed) = (&self.slab, self.seed);
            self.index.rebuild(|l| super::hash_key(seed, slab.key(l)));
        }
        self.maybe_resize_sketch();
        self.maybe_shrink_tables();
        // Values in flight (`reserve`) can hold so much of the budget that even an emptied arena
        // would have no page for this item. Then fail before the old item is touched, so a failed
        // cas, replace, append, prepend or incr keeps it, as memcached's do; past this check the
        // allocation below succeeds, evicting what it must.
        let old = self.find(h, key);
        // A value read into a landing has its memory held already.
        let landing = self.find_landing(parts, size);
        let page = self.slab.new_page_cost(size) + self.slab.spare_bytes();
        if landing.is_none()
            && !self.fits_beside_an_emptied_arena(page)
            && !self.slab.has_existing(size)
            && !old.is_some_and(|(_, loc)| self.slab.chunk_serves(loc, size))
        {
            return Err(StoreError::OutOfMemory);
        }
        // A replacement keeps the key's standing: it counts as an access, not as a miss. Except
        // the refill of a lease placeholder in probation: admitted there without a duel
        // (`evict_one`), its value stays in probation, where a read promotes it as usual, rather
        // than going to protected; else every key a lease client missed and filled slowly would
        // bypass admission.
        let mut queue = None;
        let mut refills_placeholder = false;
        if let Some((slot, old)) = old {
            queue = Some(self.queue_of(old));
            refills_placeholder = self.is_placeholder(old);
            self.note_ghost_admitted_outcome(old, true);
            self.remove_at(slot, old);
        }
        let loc = self.chunk_for_item(landing, size)?;
        self.slab.init_item(loc, key, parts, meta.flags);
        self.update_meta(loc, &MetaUpdate::from(meta));
        self.index.insert(h, loc);
        self.stats.total_items += u64::from(new_item);
        self.sketch.increment(h);
        match queue {
            Some(WINDOW) => self.push_mru(WINDOW, loc),
            Some(PROBATION) if refills_placeholder => self.push_mru(PROBATION, loc),
            Some(_) => {
                self.push_mru(PROTECTED, loc);
                self.demote_from_protected();
            }
            None => {
                self.climber_misses += 1;
                let ghost = self.ghost_feedback(h);
                if self.policy.size_aware_admission
                    && self.slab.is_dedicated(loc)
                    && self.worth_less_than_next_victims(loc, h)
                {
                    self.push_lru(PROBATION, loc);
                    self.stats.size_refusals += 1;
                } else if ghost == Some(GhostHit::Window)
                    && self.policy.ghost_admission
                    && self.ghost_admission_pays()
                {
                    // Turned away (or pushed out of the window) and back within a ghost
                    // list's length of evictions: proven reuse, so it joins the protected
                    // segment at once, no duel (LIRS's rule: a returning non-resident key
                    // whose reuse distance is short becomes LIR). The protected LRU item is
                    // demoted to probation, and the probation LRU item makes room.
                    self.push_mru(PROTECTED, loc);
                    self.stats.ghost_admissions += 1;
                    let bits = self.slab.get_u8(loc, OFF_BITS);
                    self.slab.set_u8(loc, OFF_BITS, bits | BIT_GHOST_ADMITTED);
                    self.demote_from_protected();
                } else {
                    self.push_mru(WINDOW, loc);
                }
            }
        }
        // Window overflow: its LRU item becomes the admission candidate in probation.
        let wmax = self.window_max();
        while self.queues[WINDOW as usize].len > wmax {
            let c = self.queues[WINDOW as usize].head;
            self.move_to(PROBATION, c);
            self.candidate = c;
        }
        if let Some(max) = self.max_items {
            while self.index.len() > max {
                if !self.evict_one() {
                    break;
                }
            }
        }
        if queue.is_none() {
            self.climb();
        }
        Ok(())
    }

    /// The largest item (header, key and value) this shard accepts.
    pub(crate) fn max_item_size(&self) -> usize {
        (self.budget / 4)
            .max(self.slab.page_bytes() / 2)
            .min(self.budget)
    }

    /// In bytes-only mode the sketch follows the item count: grown by a quarter when the shard
    /// holds more items than it was sized for, by an eighth (counts restart, a few dozen times
    /// while a large cache fills; never once the item count is steady).
    fn maybe_resize_sketch(&mut self) {
        if self.max_items.is_some() {
            return;
        }
        let per = self.policy.sketch_counters_per_item;
        if (self.index.len() + 1) * per > self.sketch.counters() {
            let items = ((self.index.len() + 1) * 9 / 8).max(1024);
            let sample = (items * self.policy.sample_factor) as u64;
            self.sketch = self.sketch.resized(items * per, sample);
            self.ghosts.resize(items);
        }
    }

    /// In bytes-only mode the tables (hash index, sketch, ghost lists) grow with the item count and
    /// count against the budget; once the shard holds a small fraction of the items they were sized
    /// for, they are rebuilt for the items it holds, so that room goes back to items. Without it a
    /// phase of many small items left its tables for good: 1.5M empty values, then 2,000-byte ones,
    /// left 21 MB of `-m 64` in tables and the node kept 31% fewer items than a fresh one (session
    /// 32's memory audit; `store_eviction.rs::tables_sized_for_many_small_items_give_their_room_back`).
    /// The ghosts' history restarts, as when they grow; the sketch keeps its counts
    /// ([`Sketch::resized`]).
    fn maybe_shrink_tables(&mut self) {
        if self.max_items.is_some() {
            return;
        }
        if self.index.oversized() {
            let (slab, seed) = (&self.slab, self.seed);
            self.index.shrink(|l| super::hash_key(seed, slab.key(l)));
        }
        let items = ((self.index.len() + 1) * 2).max(1024);
        let per = self.policy.sketch_counters_per_item;
        if self.sketch.counters() > 4 * items * per {
            let sample = (items * self.policy.sample_factor) as u64;
            self.sketch = self.sketch.resized(items * per, sample);
        }
        if self.ghosts.capacity() > 4 * items {
            self.ghosts.shrink_to(items);
        }
    }

    // ---- adaptive window ----

    fn climb(&mut self) {
        if self.policy.adaptation != WindowAdaptation::HillClimber {
            return;
        }
        let cap = self.capacity();
        let n = self.climber_hits + self.climber_misses;
        if (n as f64) < cap as f64 * self.policy.climber_sample_factor {
            return;
        }
        // Only a full cache can learn anything from resizing its window.
        if let Some(max) = self.max_items {
            if self.index.len() < max {
                return;
            }
        }
        let rate = self.climber_hits as f64 / n as f64;
        let change = rate - self.climber_prev_rate;
        let amount = if change >= 0.0 {
            self.climber_step
        } else {
            -self.climber_step
        };
        self.climber_step = if change.abs() >= CLIMBER_RESTART_THRESHOLD {
            CLIMBER_STEP_PERCENT * amount.signum()
        } else {
            CLIMBER_STEP_DECAY * amount
        };
        self.climber_prev_rate = rate;
        self.climber_hits = 0;
        self.climber_misses = 0;
        if amount > 0.0 {
            self.increase_window(amount);
        } else if amount < 0.0 {
            self.decrease_window(-amount);
        }
    }

    fn increase_window(&mut self, amount: f64) {
        let quota = amount.min(self.protected_frac);
        if quota <= 0.0 {
            return;
        }
        self.protected_frac -= quota;
        self.window_frac += quota;
        self.demote_from_protected();
        let cap = self.capacity();
        let mut items = (quota * cap as f64) as usize;
        while items > 0 {
            let mut loc = self.queues[PROBATION as usize].head;
            if loc == NIL {
                loc = self.queues[PROTECTED as usize].head;
            }
            if loc == NIL {
                break;
            }
            self.move_to(WINDOW, loc);
            items -= 1;
        }
    }

    fn decrease_window(&mut self, amount: f64) {
        let cap = self.capacity() as f64;
        let quota = amount.min((self.window_frac - 1.0 / cap).max(0.0));
        if quota <= 0.0 {
            return;
        }
        self.protected_frac += quota;
        self.window_frac -= quota;
        let wmax = self.window_max();
        while self.queues[WINDOW as usize].len > wmax {
            let loc = self.queues[WINDOW as usize].head;
            self.move_to(PROBATION, loc);
        }
    }

    /// Calls `f` for the live items from chunk `from.1` of page `from.0` on, in pages whose
    /// reported class ([`super::class_id`]) `wanted` takes, expired ones and lease placeholders left
    /// out, until it returns false; then returns the (page, chunk) just after that item, where a
    /// later call resumes. `None`: the walk reached the shard's end.
    pub(crate) fn visit_items(
        &mut self,
        from: (usize, u32),
        now: u32,
        wanted: &impl Fn(u32) -> bool,
        f: &mut impl FnMut(&ItemSummary<'_>) -> bool,
    ) -> Option<(usize, u32)> {
        /// Chunks looked at per step, so a page of small items is not collected all at once.
        const STEP_CHUNKS: usize = 1024;
        let mut locs = std::mem::take(&mut self.scratch);
        let mut resume = None;
        'pages: for pid in from.0..self.slab.page_count() {
            if !self.slab.page_class(pid).is_some_and(wanted) {
                continue;
            }
            let mut next = Some(if pid == from.0 { from.1 } else { 0 });
            while let Some(chunk) = next {
                next = self.slab.live_in_range(pid, chunk, STEP_CHUNKS, &mut locs);
                for &loc in &locs {
                    let meta = self.meta(loc);
                    if is_expired(meta.exptime, now) || meta.placeholder {
                        continue;
                    }
                    let item = ItemSummary {
                        key: self.slab.key(loc),
                        value_len: self.slab.value(loc).len(),
                        meta,
                        class: super::class_id(self.slab.chunk_len(loc) as u32),
                        size: self.slab.item_len(loc),
                    };
                    if !f(&item) {
                        resume = Some((pid, Slab::chunk_index(loc) + 1));
                        break 'pages;
                    }
                }
            }
        }
        self.scratch = locs;
        resume
    }

    // ---- expiry / flush ----

    /// Examines up to `budget` chunks from the background cursor; removes expired items.
    pub(crate) fn expire_some(&mut self, now: u32, budget: usize) -> (usize, usize) {
        let mut examined = 0;
        let mut removed = 0;
        let pages = self.slab.page_count();
        let mut locs = std::mem::take(&mut self.scratch);
        let mut visited_pages = 0;
        while examined < budget && visited_pages <= pages && pages > 0 {
            if self.expire_page >= pages {
                self.expire_page = 0;
                self.expire_chunk = 0;
            }
            let from = self.expire_chunk;
            let next =
                self.slab
                    .live_in_range(self.expire_page, from, budget - examined, &mut locs);
            match next {
                Some(chunk) => {
                    examined += (chunk - from) as usize;
                    self.expire_chunk = chunk;
                }
                None => {
                    // Page done (or unused): count at least one so an empty sweep ends.
                    examined += locs.len().max(1);
                    self.expire_page += 1;
                    self.expire_chunk = 0;
                    visited_pages += 1;
                }
            }
            for &loc in &locs {
                if is_expired(self.slab.get_u32(loc, OFF_EXPTIME), now) {
                    let h = self.hash(self.slab.key(loc));
                    let slot = self.index.find(h, |l| l == loc).map(|(s, _)| s);
                    if let Some(slot) = slot {
                        self.stats.crawler_reclaimed += 1;
                        self.reclaim_expired(slot, loc);
                        removed += 1;
                    }
                }
            }
        }
        self.scratch = locs;
        self.maybe_shrink_tables();
        (examined, removed)
    }

    /// Drops every item (flush_all reached this shard).
    pub(crate) fn clear(&mut self) {
        self.stats.reclaimed += self.index.len() as u64;
        self.slab.clear();
        self.index.clear();
        self.queues = [Queue::EMPTY; 3];
        self.cold_search = NIL;
        self.candidate = NIL;
        self.expire_page = 0;
        self.expire_chunk = 0;
        self.compaction_failed_at_idle = 0;
        self.ghosts.clear();
    }
}
