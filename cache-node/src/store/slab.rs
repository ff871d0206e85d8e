//! Slab arena: items live in size-classed chunks of anonymous-mmap pages, addressed by `u32`
//! locators (page id and chunk index), so the hash index and the LRU links hold 4-byte numbers
//! instead of pointers, and an item costs no allocator header.
//!
//! Each item is one chunk laid out as a packed header ([`HEADER`] bytes, fields at the `OFF_*`
//! offsets, read unaligned), the client flags only when nonzero (a bit in the header says so,
//! as memcached's `ITEM_CFLAGS`), then the key and the value. A shard's pages are 64 KiB to 1 MiB
//! (it picks by its budget); in a shard under 512 MiB, classes of small chunks get smaller pages
//! (16 KiB and up), so a class that holds few items does not hold a large page. Size classes are
//! spaced 2^-k of their size apart (k from 2 to 8 with the count of small pages: 25% down to 0.4%;
//! chunks need no alignment), and an item whose class has no free chunk may take one up to 25%
//! larger, so fine classes waste little to rounding without every size that occurs needing pages
//! of its own. Items above a quarter of the shard's page get a dedicated mapping of their own. A
//! page whose last item is freed gives its memory back to the kernel, except one spare page kept
//! (and counted) for the next new page of its size; the shard's compaction and page eviction use
//! that to move memory between classes (memcached's slab rebalancing). It goes back with
//! `MADV_DONTNEED` and its address range is kept for a later page of the same size (up to about the
//! shard's budget of ranges, virtual memory only), so pages turning over do not map and unmap. A
//! large value arriving can be read straight into the mapping its item will have
//! ([`map_for_landing`], which resizes a spare large mapping with `mremap`, then [`Slab::adopt`]).
//!
//! Memory accounting ([`Slab::bytes`]) counts what each page has touched, in whole OS pages: the
//! chunks it has handed out (freed ones included) and, once reused, what it touched before. Anonymous
//! memory never touched is not resident, so this bounds the RSS the arena can hold from above
//! (huge pages are declined for the purpose) while a page's chunks that no item has wanted yet cost
//! nothing: with values of 100-10,000 B, that was 2.8 MiB of a 64 MiB budget counted while every
//! class kept a partly used page. A chunk never handed out is taken only where the budget has room
//! for its first touch ([`Slab::alloc_existing`]). This module knows nothing about eviction policy
//! or expiry.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Fixed header length: prev u32, next u32, cas u64, exptime u32, last_access u32 (its top bit is
/// [`LAST_ACCESS_PLACEHOLDER`]), lengths u32 (value length in the low 24 bits, key length in the
/// high 8), bits u8. When [`BIT_HAS_FLAGS`] is set the 32-bit client flags follow ([`FLAGS_LEN`]
/// bytes at [`OFF_FLAGS`]); when clear the flags are 0 and not stored (memcached's `ITEM_CFLAGS`),
/// so most items save 4 bytes. Then come the key and the value.
pub(crate) const HEADER: usize = 29;
pub(crate) const OFF_PREV: usize = 0;
pub(crate) const OFF_NEXT: usize = 4;
pub(crate) const OFF_CAS: usize = 8;
pub(crate) const OFF_EXPTIME: usize = 16;
pub(crate) const OFF_LAST_ACCESS: usize = 20;
pub(crate) const OFF_LENS: usize = 24;
pub(crate) const OFF_BITS: usize = 28;
/// Where the optional client flags are stored (right after the fixed header).
pub(crate) const OFF_FLAGS: usize = HEADER;
/// Bytes the client flags take when stored.
pub(crate) const FLAGS_LEN: usize = 4;
/// Largest value the 24-bit length field holds.
pub const MAX_VALUE_LEN: usize = (1 << 24) - 1;

/// Bits in the header's bits byte: live (cleared when the chunk is freed), the lease/stale bits
/// the server sets, fetched, which policy queue holds the item (two bits), whether the chunk
/// stores client flags, and whether ghost admission let the item in and it has not been read
/// since (the policy's evidence of whether ghost admission pays).
pub(crate) const BIT_LIVE: u8 = 1;
pub(crate) const BIT_STALE: u8 = 2;
pub(crate) const BIT_WIN_SENT: u8 = 4;
pub(crate) const BIT_FETCHED: u8 = 8;
/// Two bits: which policy queue holds the item.
pub(crate) const QUEUE_SHIFT: u8 = 4;
pub(crate) const QUEUE_MASK: u8 = 3 << QUEUE_SHIFT;
/// The chunk stores the client flags (nonzero) after the fixed header.
pub(crate) const BIT_HAS_FLAGS: u8 = 64;
/// Ghost admission let the item in and it has not been read since.
pub(crate) const BIT_GHOST_ADMITTED: u8 = 128;
/// The top bit of the last-access field marks a lease placeholder (the bits byte is full, and a
/// header byte more would cost every item). Last access is in clock seconds since start, which stay
/// below 2^31 for 68 years; larger values are stored as 2^31 - 1.
pub(crate) const LAST_ACCESS_PLACEHOLDER: u32 = 1 << 31;

/// Bytes of chunk an item takes: the fixed header, the flags if nonzero, key and value.
pub(crate) fn item_size(key_len: usize, value_len: usize, flags: u32) -> usize {
    HEADER + flags_len(flags) + key_len + value_len
}

/// Bytes the client flags take in the chunk: none for 0 (the common case).
fn flags_len(flags: u32) -> usize {
    if flags == 0 {
        0
    } else {
        FLAGS_LEN
    }
}

/// "No item" locator.
pub(crate) const NIL: u32 = u32::MAX;
/// "No page" page id (page ids stay below [`MAX_PAGES`]).
pub(crate) const NO_PAGE: u32 = u32::MAX;

/// Largest shared page (the shard picks its page size between [`MIN_PAGE_BYTES`] and this).
pub(crate) const MAX_PAGE_BYTES: usize = 1 << 20;
/// Smallest shared page.
pub(crate) const MIN_PAGE_BYTES: usize = 64 << 10;
/// Chunks a class's page is sized to hold at least ([`Slab::page_for`]).
const CHUNKS_PER_PAGE: usize = 16;
/// Emptied pages' address ranges kept for reuse, in shard pages: about as many as the shard's budget
/// holds (its page is 1/64 of the budget), virtual memory only. (Where overcommit is strict,
/// `vm.overcommit_memory = 2`, a kept range still counts in the commit charge, so a node may commit up
/// to twice its budget there.)
const RELEASED_PAGES: usize = 64;
/// Smallest page of a class of small chunks.
const SMALLEST_PAGE_BYTES: usize = 16 << 10;
/// A class's pages are at least the shard's budget divided by this (so a shard maps at most about
/// this many small pages).
const SMALL_PAGES_PER_BUDGET: usize = 512;
/// How much larger than its own class's a chunk an allocation may take when its class has none
/// free ([`Slab::alloc_existing`]). With classes a few percent apart, an item of a size that varies
/// would otherwise need pages in many classes, each partly used; 25% is memcached's class spacing.
const CLASS_SLACK_PERCENT: usize = 25;
/// Bits of a locator that index the chunk within its page.
const CHUNK_BITS: u32 = 15;
const CHUNK_MASK: u32 = (1 << CHUNK_BITS) - 1;
/// Page ids must stay below this so no locator equals [`NIL`].
const MAX_PAGES: usize = (1 << (32 - CHUNK_BITS)) - 1;
/// Smallest chunk: a fixed header and a one-byte key, rounded up (to what [`CHUNK_BITS`]
/// allows in the largest page).
const MIN_CHUNK: usize = 32;
pub(crate) const OS_PAGE: usize = 4096;
const DEDICATED: u32 = u32::MAX;
/// [`Slab::class_at`] where a chunk size has no class.
const NO_CLASS: u32 = u32::MAX;

const _: () = assert!(MAX_PAGE_BYTES / MIN_CHUNK <= (1 << CHUNK_BITS));

/// One mapping: a page of same-size chunks, or a dedicated mapping holding one large item.
struct Page {
    /// Start of the mapping (null when the page id is unused).
    ptr: *mut u8,
    /// Mapped length.
    bytes: usize,
    /// Bytes of the mapping counted against the budget: the chunks touched so far, rounded up to
    /// whole OS pages (anonymous memory never touched is not resident), or the whole mapping for a
    /// dedicated one.
    charged: usize,
    /// Chunk size.
    chunk: u32,
    /// Chunks that fit.
    cap: u32,
    /// Chunks handed out at least once (bump pointer; chunks above were never touched).
    hwm: u32,
    /// Head of the free-chunk list threaded through freed chunks (chunk index, or NIL).
    free_head: u32,
    /// Chunks in use.
    live: u32,
    /// Index into `Slab::classes`, or DEDICATED.
    class: u32,
    /// Whether the page is in its class's `partial` list.
    in_partial: bool,
    /// A mapped dedicated page's place in `Slab::dedicated` (so it leaves that list in O(1)).
    dedicated_at: u32,
}

/// An emptied shared page's address range, its memory given back to the kernel.
struct Released {
    ptr: *mut u8,
    /// Mapped length.
    bytes: usize,
}

/// A page whose last item went, kept mapped for the next new page of its size.
#[derive(Clone, Copy)]
struct Spare {
    ptr: *mut u8,
    /// Mapped length.
    bytes: usize,
    /// Bytes of it that may be resident (touched while it was a page), counted in `Slab::bytes`.
    charged: usize,
    /// A large item's own mapping, not a shared page: a shared page that empties takes its place.
    dedicated: bool,
}

/// Offset of the key in a chunk whose bit byte is `bits`: after the fixed header and, if
/// stored, the flags.
#[inline]
fn body_start(bits: u8) -> usize {
    if bits & BIT_HAS_FLAGS != 0 {
        HEADER + FLAGS_LEN
    } else {
        HEADER
    }
}

/// Bytes of a mapping of `bytes` whose first `hwm` chunks of `chunk` bytes were touched: whole OS
/// pages, as the kernel makes them resident.
fn touched(bytes: usize, chunk: u32, hwm: u32) -> usize {
    (hwm as usize * chunk as usize)
        .next_multiple_of(OS_PAGE)
        .min(bytes)
}

impl Page {
    /// What handing out the next untouched chunk (index `hwm`) adds to the page's `charged`: the OS
    /// pages it reaches that no earlier chunk (or an earlier use of the mapping) touched.
    fn next_touch_cost(&self) -> usize {
        touched(self.bytes, self.chunk, self.hwm + 1).saturating_sub(self.charged)
    }
}

/// A size class: pages of one chunk size.
struct Class {
    chunk: u32,
    /// Pages of this class that have a free or untouched chunk.
    partial: Vec<u32>,
}

/// The arena of one shard.
pub(crate) struct Slab {
    pages: Vec<Page>,
    free_page_ids: Vec<u32>,
    classes: Vec<Class>,
    /// Class index by the chunk size's ordinal among the sizes the class resolution allows
    /// ([`Slab::ordinal`]), [`NO_CLASS`] where that size has no class yet: sizes in order, so an
    /// allocation finds the next larger classes in a contiguous run. Grown as classes are made.
    class_at: Vec<u32>,
    /// One bit per ordinal: set while that size's class has a page in its partial list. An
    /// allocation looks at up to [`CLASS_SLACK_PERCENT`] larger sizes, which at fine resolutions
    /// is dozens of ordinals and mostly classes with nothing to hand out; the bits skip those 64 at
    /// a time. (A `BTreeMap` by chunk size, walked over the same range, visited 15 classes per
    /// allocation under churn; `BTreeMap::range` alone was 2.3% of the server's CPU samples.)
    with_partial: Vec<u64>,
    /// Entries the classes' partial lists have room for, summed (for [`Slab::table_bytes`], which
    /// runs on every allocation and so does not walk the classes). Lists only grow.
    partial_capacity: usize,
    /// Bytes of the pages counted against the memory budget (the arena's share): each page's
    /// `charged`, the spare page's included.
    pub(crate) bytes: usize,
    /// A shared page whose last item went, kept mapped (and counted in `bytes`) for the next page of
    /// the same size: compaction empties a page and maps another at once. Unmapping and mapping
    /// afresh (mmap, munmap, a page fault per 4 KiB touched) put 25.6% of a skewed get-or-set load's
    /// `perf` samples in the kernel with 100-10,000 B values; 12.9% with the spare, 8.8% without
    /// compaction (STORE.md). Failing that, a large item's own mapping, for the next item of its
    /// size: a large value overwritten or appended to takes a new mapping before the old one goes,
    /// and mapping and faulting in each one afresh made 1 MB sets 0.47 of memcached's rate and
    /// appends to a growing value 10x slower (session 34's audit; STORE.md).
    spare: Option<Spare>,
    /// Address ranges of emptied pages whose memory went back to the kernel (`MADV_DONTNEED`) but
    /// whose mapping is kept for a later page of the same size. They count nothing in `bytes`
    /// (nothing of them is resident), and reusing one saves the `mmap`, `munmap` and
    /// `madvise(MADV_NOHUGEPAGE)` calls of a fresh page, and the address-space lock they take for
    /// writing (page faults on the other threads wait for it). Under a cache-aside churn of
    /// 100-10,000 B values these calls were 7-8% of the server's samples (STORE.md).
    released: Vec<Released>,
    /// Virtual bytes in `released`, held under [`RELEASED_PAGES`] shard pages' worth.
    released_bytes: usize,
    /// Bytes of the chunks in shared pages that hold no item (freed, or not handed out yet): room that
    /// only items of those pages' sizes can use. The shard compacts when it grows
    /// ([`Slab::page_to_compact`]).
    idle_bytes: usize,
    /// The shard's page size: classes of large chunks use pages of this size, smaller ones smaller
    /// pages ([`Slab::page_for`]); items above a quarter of it get a dedicated mapping.
    page_bytes: usize,
    /// Size classes per power of two, as a power of two.
    class_bits: u32,
    /// The smallest page a class of small chunks gets. A shard's classes each keep a partly used
    /// last page, and a shard of a few MiB has only a few dozen pages of `page_bytes`: with every
    /// class on full pages, values of 100-10,000 bytes in 64 shards of 5 MiB left the arena half
    /// empty (0.52 of memcached's items in the same memory; 0.77 with pages sized per class). A
    /// large shard has pages enough, and small pages there would only add page tails.
    smallest_page_bytes: usize,
    /// Ids of the mapped dedicated pages (one large item each), in no order: size-aware eviction's
    /// candidates ([`Slab::dedicated_items`]) without a walk over the page table, which in a shard of
    /// GiBs holds thousands of pages.
    dedicated: Vec<u32>,
}

// SAFETY: the slab exclusively owns its mappings; no raw pointer into them leaves this module
// (`ptr` is private), and the slices it hands out borrow `&self`.
unsafe impl Send for Slab {}

/// Chunk size for an item of `size` bytes (header included): `2^class_bits` classes per
/// power of two, or, above `max_slab_chunk`, the dedicated mapping size. Chunks need no
/// alignment (header fields are read unaligned), so the finest classes are 1 byte apart.
pub(crate) fn chunk_size(size: usize, class_bits: u32, max_slab_chunk: usize) -> usize {
    let size = size.max(MIN_CHUNK);
    if size > max_slab_chunk {
        return size.div_ceil(OS_PAGE) * OS_PAGE;
    }
    let octave = usize::BITS - 1 - size.leading_zeros(); // floor(log2(size))
    let step = 1usize << octave.saturating_sub(class_bits);
    size.div_ceil(step) * step
}

/// Class resolution for an arena of `pages` pages: fine classes (little rounding waste) when
/// there are pages enough for many classes, coarse ones (memcached-like, 25% apart) when few,
/// so a small budget is not split among more classes than it has pages.
pub(crate) fn class_bits_for(pages: usize) -> u32 {
    let bits = usize::BITS - 1 - (pages / 8).max(1).leading_zeros();
    bits.clamp(2, 8)
}

fn map(bytes: usize) -> Option<*mut u8> {
    // SAFETY: anonymous private mapping with no address hint; checked for failure below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // The budget counts only the touched part of a page (`Page::charged`). Where transparent huge
    // pages are `always` on, a fault (or khugepaged, which collapses a 2 MiB range holding a single
    // touched 4 KiB page) could make a whole huge page resident, untouched chunks and all, beyond
    // what the budget counts. Advice only: a kernel without THP refuses it, harmlessly.
    // SAFETY: `p`/`bytes` is the mapping just made.
    unsafe {
        libc::madvise(p, bytes, libc::MADV_NOHUGEPAGE);
    }
    Some(p.cast())
}

/// Makes `bytes` at `ptr` resident in one call instead of a fault per 4 KiB: for memory about to be
/// written whole that is counted already (read-through of values log-uniform in 16 B..500 KB into
/// `-m 64`: 9,457 -> 10,238 requests/s for large items' mappings, session 35). Advice only: a kernel
/// before 5.14 refuses it, harmlessly.
pub(crate) fn populate(ptr: *mut u8, bytes: usize) {
    // SAFETY: `ptr`/`bytes` lies within a mapping of ours, about to be written whole.
    unsafe {
        libc::madvise(ptr.cast(), bytes, libc::MADV_POPULATE_WRITE);
    }
}

/// A mapping of `bytes` for a large value arriving, and how many bytes from its start may be
/// resident: [`Slab::take_dedicated_spare`]'s `base` (mapping, length, resident bytes) resized when
/// there is one, else a new mapping with nothing resident. `mremap` keeps the resident pages of the
/// base and copies no data, where unmapping it and mapping afresh faults in and zeroes every page
/// again. None if the kernel refuses (the base is then unmapped).
pub(crate) fn map_for_landing(
    base: Option<(*mut u8, usize, usize)>,
    bytes: usize,
) -> Option<(*mut u8, usize)> {
    match base {
        Some((ptr, len, resident)) if len == bytes => Some((ptr, resident)),
        Some((ptr, len, resident)) => {
            // SAFETY: `ptr`/`len` is a mapping of ours that nothing else refers to.
            let moved = unsafe { libc::mremap(ptr.cast(), len, bytes, libc::MREMAP_MAYMOVE) };
            if moved == libc::MAP_FAILED {
                unmap(ptr, len);
                Some((map(bytes)?, 0))
            } else {
                Some((moved.cast(), resident.min(bytes)))
            }
        }
        None => Some((map(bytes)?, 0)),
    }
}

fn unmap(ptr: *mut u8, bytes: usize) {
    // SAFETY: `ptr`/`bytes` describe a mapping made by `map` and not yet unmapped.
    unsafe {
        libc::munmap(ptr.cast(), bytes);
    }
}

impl Slab {
    /// An empty arena for a budget of `budget` bytes: pages of about 1/64 of it (64 KiB to
    /// 1 MiB), smaller ones for classes of small chunks in a small shard, size classes as fine as
    /// the count of small pages allows.
    pub(crate) fn for_budget(budget: usize) -> Slab {
        let mut s = Slab::new(budget / 64);
        s.smallest_page_bytes = (budget / SMALL_PAGES_PER_BUDGET)
            .next_power_of_two()
            .clamp(SMALLEST_PAGE_BYTES, s.page_bytes);
        // As fine as the shard's count of small pages allows: a chunk may come from a class up to
        // CLASS_SLACK_PERCENT larger, so sizes that vary do not need a page in every fine class.
        s.class_bits = class_bits_for(budget / s.smallest_page_bytes);
        s
    }

    /// An empty arena with pages of `page_bytes` (clamped to the supported range, power of two).
    pub(crate) fn new(page_bytes: usize) -> Slab {
        let page_bytes = page_bytes
            .clamp(MIN_PAGE_BYTES, MAX_PAGE_BYTES)
            .next_power_of_two();
        Slab {
            class_bits: 8,
            pages: Vec::new(),
            free_page_ids: Vec::new(),
            classes: Vec::new(),
            class_at: Vec::new(),
            with_partial: Vec::new(),
            partial_capacity: 0,
            bytes: 0,
            spare: None,
            released: Vec::new(),
            released_bytes: 0,
            idle_bytes: 0,
            page_bytes,
            smallest_page_bytes: page_bytes,
            dedicated: Vec::new(),
        }
    }

    /// Size of a shared page.
    pub(crate) fn page_bytes(&self) -> usize {
        self.page_bytes
    }

    /// Size of the smallest page a class may get.
    pub(crate) fn smallest_page_bytes(&self) -> usize {
        self.smallest_page_bytes
    }

    fn max_slab_chunk(&self) -> usize {
        self.page_bytes / 4
    }

    fn chunk_for(&self, size: usize) -> usize {
        chunk_size(size, self.class_bits, self.max_slab_chunk())
    }

    /// Bytes of the arena's bookkeeping (page table, class tables, partial lists, the lists of
    /// released ranges and of dedicated pages), for the budget.
    pub(crate) fn table_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Page>()
            + self.free_page_ids.capacity() * 4
            + self.partial_capacity * 4
            + self.classes.capacity() * std::mem::size_of::<Class>()
            + self.class_at.capacity() * 4
            + self.with_partial.capacity() * 8
            + self.released.capacity() * std::mem::size_of::<Released>()
            + self.dedicated.capacity() * 4
    }

    #[inline]
    fn split(loc: u32) -> (usize, u32) {
        ((loc >> CHUNK_BITS) as usize, loc & CHUNK_MASK)
    }

    /// The start of chunk `loc`. Locators come from the index and the queues, which hold live
    /// items only; checked in debug builds. (Checked in release builds as well, as in session 33's
    /// hardening, it cost 1.125 x the server's user CPU per request at saturation: this runs for
    /// every header field read, `tools/ab_servers.py`, 40 rounds, session 34. The slices handed out,
    /// [`Slab::key_and_value`], stay checked.)
    #[inline]
    fn ptr(&self, loc: u32) -> *mut u8 {
        let (p, c) = Self::split(loc);
        let page = &self.pages[p];
        debug_assert!(c < page.hwm, "stale locator {loc:#x}");
        // SAFETY: c < hwm <= cap (the caller's live locator), so the chunk lies inside the mapping.
        unsafe { page.ptr.add(c as usize * page.chunk as usize) }
    }

    /// The start and size of chunk `loc`, checked in release builds too to be a touched chunk of
    /// a live page: a stale locator (a freed page's id, whose `hwm` is 0, and whose mapping may be
    /// gone) panics here, before any of its header is read.
    #[inline]
    fn live_chunk(&self, loc: u32) -> (*const u8, usize) {
        let (p, c) = Self::split(loc);
        let page = &self.pages[p];
        assert!(c < page.hwm, "stale locator {loc:#x}");
        let chunk = page.chunk as usize;
        // SAFETY: c < hwm <= cap, so the chunk lies inside the mapping.
        (unsafe { page.ptr.add(c as usize * chunk) }, chunk)
    }

    /// The key and the value of the item at `loc`, read through [`Slab::live_chunk`] and checked
    /// in release builds too to lie inside its chunk: lengths from a header overwritten by a stray
    /// write panic here instead of making a slice reach into the next chunk or past the mapping.
    #[inline]
    fn key_and_value(&self, loc: u32) -> (&[u8], &[u8]) {
        let (start, chunk) = self.live_chunk(loc);
        // SAFETY: the header lies inside the live chunk (checked above).
        let (lens, bits) = unsafe {
            (
                start.add(OFF_LENS).cast::<u32>().read_unaligned(),
                *start.add(OFF_BITS),
            )
        };
        let (klen, vlen) = ((lens >> 24) as usize, (lens & 0xff_ffff) as usize);
        let at = body_start(bits);
        assert!(
            at + klen + vlen <= chunk,
            "item {loc:#x} overruns its chunk"
        );
        // SAFETY: both slices lie inside the live chunk (checked above) and borrow `&self`, so no
        // `&mut self` write can alias them.
        unsafe {
            (
                std::slice::from_raw_parts(start.add(at), klen),
                std::slice::from_raw_parts(start.add(at + klen), vlen),
            )
        }
    }

    #[inline]
    pub(crate) fn get_u32(&self, loc: u32, off: usize) -> u32 {
        // SAFETY: header fields lie inside the chunk.
        unsafe { self.ptr(loc).add(off).cast::<u32>().read_unaligned() }
    }
    #[inline]
    pub(crate) fn set_u32(&mut self, loc: u32, off: usize, v: u32) {
        // SAFETY: as above; `&mut self` gives exclusive access.
        unsafe { self.ptr(loc).add(off).cast::<u32>().write_unaligned(v) }
    }
    #[inline]
    pub(crate) fn get_u64(&self, loc: u32, off: usize) -> u64 {
        // SAFETY: as above.
        unsafe { self.ptr(loc).add(off).cast::<u64>().read_unaligned() }
    }
    #[inline]
    pub(crate) fn set_u64(&mut self, loc: u32, off: usize, v: u64) {
        // SAFETY: as above.
        unsafe { self.ptr(loc).add(off).cast::<u64>().write_unaligned(v) }
    }
    #[inline]
    pub(crate) fn get_u8(&self, loc: u32, off: usize) -> u8 {
        // SAFETY: as above.
        unsafe { *self.ptr(loc).add(off) }
    }
    #[inline]
    pub(crate) fn set_u8(&mut self, loc: u32, off: usize, v: u8) {
        // SAFETY: as above.
        unsafe { *self.ptr(loc).add(off) = v }
    }

    /// Offset of the key: after the fixed header and, if stored, the flags.
    #[inline]
    fn body_offset(&self, loc: u32) -> usize {
        body_start(self.get_u8(loc, OFF_BITS))
    }

    #[inline]
    pub(crate) fn key(&self, loc: u32) -> &[u8] {
        self.key_and_value(loc).0
    }

    #[inline]
    pub(crate) fn value(&self, loc: u32) -> &[u8] {
        self.key_and_value(loc).1
    }

    /// The client flags (0 when the chunk stores none).
    #[inline]
    pub(crate) fn flags(&self, loc: u32) -> u32 {
        if self.get_u8(loc, OFF_BITS) & BIT_HAS_FLAGS != 0 {
            self.get_u32(loc, OFF_FLAGS)
        } else {
            0
        }
    }

    /// Fills a freshly allocated chunk (sized by [`item_size`] for the same key, parts and
    /// flags): lengths, bits (live, flags present; queue and the rest cleared), flags, key and
    /// value parts.
    pub(crate) fn init_item(&mut self, loc: u32, key: &[u8], parts: &[&[u8]], flags: u32) {
        let vlen: usize = parts.iter().map(|p| p.len()).sum();
        // Checked in release builds, as the writes below trust them: lengths that overflow their
        // header fields, or a chunk too small, would write past the item.
        assert!(key.len() <= 255 && vlen <= MAX_VALUE_LEN, "item lengths");
        self.set_u32(loc, OFF_LENS, ((key.len() as u32) << 24) | vlen as u32);
        let has_flags = if flags == 0 { 0 } else { BIT_HAS_FLAGS };
        self.set_u8(loc, OFF_BITS, BIT_LIVE | has_flags);
        if flags != 0 {
            self.set_u32(loc, OFF_FLAGS, flags);
        }
        let p = self.ptr(loc);
        let mut at = self.body_offset(loc);
        assert!(
            at + key.len() + vlen <= self.chunk_len(loc),
            "item larger than its chunk"
        );
        // SAFETY: the caller sized the chunk by `item_size(key.len(), vlen, flags)`, which is
        // exactly `at + key.len() + vlen` (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(at), key.len());
            at += key.len();
            for part in parts {
                // A value read straight into its item's mapping ([`Slab::adopt`]) is in place.
                if !std::ptr::eq(part.as_ptr(), p.add(at)) {
                    std::ptr::copy_nonoverlapping(part.as_ptr(), p.add(at), part.len());
                }
                at += part.len();
            }
        }
    }

    /// Whether the item at `loc` has a mapping of its own (it is above a quarter of a page).
    pub(crate) fn is_dedicated(&self, loc: u32) -> bool {
        self.pages[Self::page_of(loc)].class == DEDICATED
    }

    /// Size of the chunk at `loc` (its class size, or its dedicated mapping's).
    pub(crate) fn chunk_len(&self, loc: u32) -> usize {
        self.pages[Self::split(loc).0].chunk as usize
    }

    /// Page size for a class of `chunk`-byte chunks: the smallest power of two that holds
    /// [`CHUNKS_PER_PAGE`] of them, between the shard's smallest class page and its page size.
    fn page_for(&self, chunk: usize) -> usize {
        (chunk * CHUNKS_PER_PAGE)
            .next_power_of_two()
            .clamp(self.smallest_page_bytes, self.page_bytes)
    }

    /// Bytes a new page for an item of `size` would add ([`Slab::alloc_new_page`] reuses the
    /// spare page or releases it, so its bytes count as given back).
    pub(crate) fn new_page_cost(&self, size: usize) -> usize {
        let c = self.chunk_for(size);
        let mapping = if c > self.max_slab_chunk() {
            c
        } else {
            self.page_for(c)
        };
        touched(mapping, c as u32, 1).saturating_sub(self.spare_bytes())
    }

    /// Gives the spare page's memory back ([`Slab::release`]; a kept mapping is unmapped), if
    /// there is one. True if there was.
    pub(crate) fn drop_spare(&mut self) -> bool {
        match self.spare.take() {
            Some(spare) => {
                self.give_back(spare.ptr, spare.bytes, spare.dedicated);
                self.bytes -= spare.charged;
                true
            }
            None => false,
        }
    }

    /// Gives an emptied page's memory back: a large item's own mapping (`dedicated`, sized for that
    /// item) is unmapped, a shared page released ([`Slab::release`]).
    fn give_back(&mut self, ptr: *mut u8, bytes: usize, dedicated: bool) {
        if dedicated {
            unmap(ptr, bytes);
        } else {
            self.release(ptr, bytes);
        }
    }

    /// Gives an emptied shared page's memory back to the kernel, keeping its address range for a
    /// later page of its size while [`RELEASED_PAGES`] allows; unmaps it otherwise.
    fn release(&mut self, ptr: *mut u8, bytes: usize) {
        if self.released_bytes + bytes <= RELEASED_PAGES * self.page_bytes
            // SAFETY: `ptr`/`bytes` is a mapping made by `map`, no longer used by any page.
            && unsafe { libc::madvise(ptr.cast(), bytes, libc::MADV_DONTNEED) } == 0
        {
            self.released.push(Released { ptr, bytes });
            self.released_bytes += bytes;
        } else {
            unmap(ptr, bytes);
        }
    }

    /// The position of chunk size `chunk` (one [`Slab::chunk_for`] gives, or any size when rounding
    /// down) among the sizes the class resolution allows, counting from 0: sizes below
    /// `2^(class_bits + 1)` are their own ordinal; above, each octave has `2^class_bits` sizes.
    /// Monotonic, so a range of sizes is a range of ordinals; a size that is not a class size gets
    /// the ordinal of the largest class size below it.
    fn ordinal(&self, chunk: u32) -> usize {
        let bits = self.class_bits;
        let octave = u32::BITS - 1 - chunk.max(1).leading_zeros();
        if octave <= bits {
            return chunk as usize;
        }
        let shift = octave - bits;
        ((shift as usize) << bits) + (chunk >> shift) as usize
    }

    /// Indexes of the classes with a page in their partial list whose chunk size is in `range`,
    /// smallest first.
    fn classes_with_partial(&self, range: RangeInclusive<u32>) -> impl Iterator<Item = u32> + '_ {
        // Ordinals past the bitset have no class yet.
        let end = (self.ordinal(*range.end()) + 1).min(self.with_partial.len() * 64);
        let mut at = self.ordinal(*range.start());
        std::iter::from_fn(move || {
            while at < end {
                let word = self.with_partial[at / 64] >> (at % 64);
                if word == 0 {
                    at = (at / 64 + 1) * 64;
                    continue;
                }
                let found = at + word.trailing_zeros() as usize;
                if found >= end {
                    return None;
                }
                at = found + 1;
                return Some(self.class_at[found]);
            }
            None
        })
    }

    /// Adds page `pid` to the end of class `class`'s partial list.
    fn push_partial(&mut self, class: u32, pid: u32) {
        let partial = &mut self.classes[class as usize].partial;
        let room = partial.capacity();
        partial.push(pid);
        self.partial_capacity += partial.capacity() - room;
        if partial.len() == 1 {
            let ordinal = self.ordinal(self.classes[class as usize].chunk);
            self.with_partial[ordinal / 64] |= 1 << (ordinal % 64);
        }
    }

    /// Removes the entry at `at` from class `class`'s partial list.
    fn remove_partial(&mut self, class: u32, at: usize) {
        let partial = &mut self.classes[class as usize].partial;
        partial.remove(at);
        if partial.is_empty() {
            let ordinal = self.ordinal(self.classes[class as usize].chunk);
            self.with_partial[ordinal / 64] &= !(1 << (ordinal % 64));
        }
    }

    /// A chunk for an item of `size` bytes from existing pages, if one is free: of its own class,
    /// else of the next larger class with one free, up to [`CLASS_SLACK_PERCENT`] larger. A chunk
    /// never handed out is taken only if what its first touch adds to [`Slab::bytes`] is at most
    /// `room` (a freed chunk adds nothing).
    pub(crate) fn alloc_existing(&mut self, size: usize, room: usize) -> Option<u32> {
        self.alloc_existing_outside(size, NO_PAGE, CLASS_SLACK_PERCENT, room)
    }

    /// Whether page `pid` can hand out a chunk that adds at most `room` to [`Slab::bytes`]: a freed
    /// one (it adds nothing), or its next untouched one if that one's first touch adds no more.
    fn can_hand_out(&self, pid: u32, room: usize) -> bool {
        let page = &self.pages[pid as usize];
        page.free_head != NIL || page.next_touch_cost() <= room
    }

    /// The chunk sizes an item of `size` bytes may take from existing pages: its own class's, up to
    /// `slack_percent` larger; `None` for an item that gets a dedicated mapping.
    fn chunk_range(&self, size: usize, slack_percent: usize) -> Option<RangeInclusive<u32>> {
        let c = self.chunk_for(size);
        (c <= self.max_slab_chunk()).then(|| c as u32..=(c + c * slack_percent / 100) as u32)
    }

    /// Whether [`Slab::alloc_existing`] would find a chunk for `size` now without adding to
    /// [`Slab::bytes`] (nothing is allocated).
    pub(crate) fn has_existing(&self, size: usize) -> bool {
        self.chunk_range(size, CLASS_SLACK_PERCENT)
            .is_some_and(|range| {
                self.classes_with_partial(range).any(|k| {
                    let partial = &self.classes[k as usize].partial;
                    partial.iter().any(|&pid| self.can_hand_out(pid, 0))
                })
            })
    }

    /// Whether the chunk at `loc`, once freed, is one [`Slab::alloc_existing`] would take for `size`.
    pub(crate) fn chunk_serves(&self, loc: u32, size: usize) -> bool {
        self.chunk_range(size, CLASS_SLACK_PERCENT)
            .is_some_and(|range| range.contains(&(self.chunk_len(loc) as u32)))
    }

    /// Bytes the spare page kept mapped for the next new page counts in [`Slab::bytes`] (0
    /// without one).
    pub(crate) fn spare_bytes(&self) -> usize {
        self.spare.map_or(0, |spare| spare.charged)
    }

    /// As [`Slab::alloc_existing`], but never from page `avoid` (the page being emptied by
    /// compaction; [`NO_PAGE`] for none) and up to `slack_percent` larger.
    pub(crate) fn alloc_existing_outside(
        &mut self,
        size: usize,
        avoid: u32,
        slack_percent: usize,
        room: usize,
    ) -> Option<u32> {
        // Its own class first, then the next larger ones up to `slack_percent` larger; within a
        // class the page that last became partial (the end of its list).
        let range = self.chunk_range(size, slack_percent)?;
        let (class, at) = self.classes_with_partial(range).find_map(|k| {
            let partial = &self.classes[k as usize].partial;
            partial
                .iter()
                .rposition(|&p| p != avoid && self.can_hand_out(p, room))
                .map(|at| (k, at))
        })?;
        let pid = self.classes[class as usize].partial[at];
        let page = &mut self.pages[pid as usize];
        let idx = if page.free_head != NIL {
            let idx = page.free_head;
            // SAFETY: free chunks below hwm store the next free index in their first 4 bytes.
            let next = unsafe {
                page.ptr
                    .add(idx as usize * page.chunk as usize)
                    .cast::<u32>()
                    .read_unaligned()
            };
            // Checked in release builds: those bytes are also a live item's `OFF_PREV`, so a stray
            // link write into a freed chunk would otherwise hand out a chunk past the mapping.
            assert!(next == NIL || next < page.hwm, "corrupt free list");
            page.free_head = next;
            idx
        } else {
            // A page is in its class's partial list only while it has a free or untouched chunk;
            // checked in release builds, as the chunk at `cap` lies past the mapping.
            assert!(page.hwm < page.cap, "full page in a partial list");
            let added = page.next_touch_cost();
            page.charged += added;
            self.bytes += added;
            page.hwm += 1;
            page.hwm - 1
        };
        page.live += 1;
        self.idle_bytes -= page.chunk as usize;
        if page.free_head == NIL && page.hwm == page.cap {
            page.in_partial = false;
            self.remove_partial(class, at);
        }
        Some((pid << CHUNK_BITS) | idx)
    }

    /// An unused page id, or None when locators have no room for more pages.
    fn new_page_id(&mut self) -> Option<u32> {
        if let Some(id) = self.free_page_ids.pop() {
            return Some(id);
        }
        if self.pages.len() >= MAX_PAGES {
            return None;
        }
        self.pages.push(Page {
            ptr: std::ptr::null_mut(),
            bytes: 0,
            charged: 0,
            chunk: 0,
            cap: 0,
            hwm: 0,
            free_head: NIL,
            live: 0,
            class: DEDICATED,
            in_partial: false,
            dedicated_at: 0,
        });
        Some((self.pages.len() - 1) as u32)
    }

    /// The size of the mapping of its own an item of `size` bytes gets, or None if it goes in a
    /// shared page.
    pub(crate) fn dedicated_chunk(&self, size: usize) -> Option<usize> {
        let c = self.chunk_for(size);
        (c > self.max_slab_chunk()).then_some(c)
    }

    /// Takes the spare page if it is a large item's own mapping, for a value arriving to be read
    /// into ([`map_for_landing`] resizes it): its bytes leave [`Slab::bytes`], for the caller to
    /// count. A shared spare stays (compaction needs it).
    pub(crate) fn take_dedicated_spare(&mut self) -> Option<(*mut u8, usize, usize)> {
        let spare = self.spare.filter(|spare| spare.dedicated)?;
        self.spare = None;
        self.bytes -= spare.charged;
        Some((spare.ptr, spare.bytes, spare.charged))
    }

    /// Makes `ptr`/`bytes`, a mapping from [`map_for_landing`] whose item is now complete, the
    /// dedicated page of one item, counted whole in [`Slab::bytes`], and returns the item's locator
    /// (fill it with [`Slab::init_item`], which leaves a value already in place where it is). None
    /// if locators have no room for another page (the mapping stays the caller's).
    pub(crate) fn adopt(&mut self, ptr: *mut u8, bytes: usize) -> Option<u32> {
        debug_assert!(self.dedicated_chunk(bytes) == Some(bytes));
        let pid = self.new_page_id()?;
        self.bytes += bytes;
        self.pages[pid as usize] = Page {
            ptr,
            bytes,
            charged: bytes,
            chunk: bytes as u32,
            cap: 1,
            hwm: 1,
            free_head: NIL,
            live: 1,
            class: DEDICATED,
            in_partial: false,
            dedicated_at: 0,
        };
        self.track_dedicated(pid);
        Some(pid << CHUNK_BITS)
    }

    /// Takes back a mapping from [`map_for_landing`] whose value was not stored, `resident` bytes
    /// of it from the start possibly resident: kept as the spare (those counted in
    /// [`Slab::bytes`]) if there is none, unmapped otherwise.
    pub(crate) fn keep_or_unmap(&mut self, ptr: *mut u8, bytes: usize, resident: usize) {
        self.bytes += resident;
        self.keep_as_spare(Spare {
            ptr,
            bytes,
            charged: resident,
            dedicated: true,
        });
    }

    /// Keeps an emptied mapping, counted in [`Slab::bytes`], as the spare if there is none; else gives
    /// its memory back ([`Slab::give_back`]) and its bytes leave the count.
    fn keep_as_spare(&mut self, emptied: Spare) {
        if self.spare.is_none() {
            self.spare = Some(emptied);
        } else {
            self.give_back(emptied.ptr, emptied.bytes, emptied.dedicated);
            self.bytes -= emptied.charged;
        }
    }

    /// Maps a new page (or a dedicated mapping) and takes a chunk from it.
    pub(crate) fn alloc_new_page(&mut self, size: usize) -> Option<u32> {
        let c = self.chunk_for(size);
        let (bytes, chunk, cap, class) = if c > self.max_slab_chunk() {
            (c, c as u32, 1, DEDICATED)
        } else {
            let ordinal = self.ordinal(c as u32);
            if ordinal >= self.class_at.len() {
                self.class_at.resize(ordinal + 1, NO_CLASS);
                self.with_partial.resize(ordinal / 64 + 1, 0);
            }
            let class = match self.class_at[ordinal] {
                NO_CLASS => {
                    let k = self.classes.len() as u32;
                    self.classes.push(Class {
                        chunk: c as u32,
                        partial: Vec::new(),
                    });
                    self.class_at[ordinal] = k;
                    k
                }
                k => k,
            };
            debug_assert_eq!(self.classes[class as usize].chunk, c as u32);
            let page_bytes = self.page_for(c);
            (page_bytes, c as u32, (page_bytes / c) as u32, class)
        };
        let pid = self.new_page_id()?;
        // A dedicated mapping is a whole number of OS pages, so this is all of it.
        let first = touched(bytes, chunk, 1);
        let reused = match self.spare {
            Some(spare) if spare.bytes == bytes => {
                self.spare = None;
                Some(spare)
            }
            _ => {
                self.drop_spare();
                None
            }
        };
        let (ptr, charged) = match reused {
            Some(spare) => {
                let charged = first.max(spare.charged);
                self.bytes += charged - spare.charged;
                (spare.ptr, charged)
            }
            None => {
                let ptr = match self.released.iter().rposition(|r| r.bytes == bytes) {
                    Some(at) => {
                        self.released_bytes -= bytes;
                        Some(self.released.swap_remove(at).ptr)
                    }
                    None => map(bytes),
                };
                let Some(ptr) = ptr else {
                    self.free_page_ids.push(pid);
                    return None;
                };
                if class == DEDICATED {
                    // Its item is copied in at once, all of it.
                    populate(ptr, bytes);
                }
                self.bytes += first;
                (ptr, first)
            }
        };
        self.idle_bytes += (cap as usize - 1) * chunk as usize;
        let in_partial = cap > 1;
        self.pages[pid as usize] = Page {
            ptr,
            bytes,
            charged,
            chunk,
            cap,
            hwm: 1,
            free_head: NIL,
            live: 1,
            class,
            in_partial,
            dedicated_at: 0,
        };
        if in_partial {
            self.push_partial(class, pid);
        }
        if class == DEDICATED {
            self.track_dedicated(pid);
        }
        Some(pid << CHUNK_BITS)
    }

    /// Frees the chunk at `loc`. When that was its page's last item the page goes: kept as the spare
    /// if it is a shared page and there is none, else released (a shared page) or unmapped (a
    /// dedicated mapping, whose size is the item's own).
    pub(crate) fn free(&mut self, loc: u32) {
        self.set_u8(loc, OFF_BITS, 0);
        let (pid, idx) = Self::split(loc);
        let page = &mut self.pages[pid];
        page.live -= 1;
        if page.live == 0 {
            let (ptr, bytes, charged, class, in_partial) = (
                page.ptr,
                page.bytes,
                page.charged,
                page.class,
                page.in_partial,
            );
            self.idle_bytes -= (page.cap as usize - 1) * page.chunk as usize;
            page.ptr = std::ptr::null_mut();
            page.in_partial = false;
            page.hwm = 0;
            page.cap = 0;
            let dedicated = class == DEDICATED;
            if dedicated {
                let at = page.dedicated_at as usize;
                self.dedicated.swap_remove(at);
                if let Some(&moved) = self.dedicated.get(at) {
                    self.pages[moved as usize].dedicated_at = at as u32;
                }
            }
            // A shared page displaces a kept mapping (compaction needs the page more).
            if !dedicated && self.spare.is_some_and(|spare| spare.dedicated) {
                self.drop_spare();
            }
            self.keep_as_spare(Spare {
                ptr,
                bytes,
                charged,
                dedicated,
            });
            if in_partial {
                let partial = &self.classes[class as usize].partial;
                if let Some(at) = partial.iter().rposition(|&p| p as usize == pid) {
                    self.remove_partial(class, at);
                }
            }
            self.free_page_ids.push(pid as u32);
            return;
        }
        // SAFETY: idx < hwm; the freed chunk stores the next free index in its first 4 bytes.
        unsafe {
            page.ptr
                .add(idx as usize * page.chunk as usize)
                .cast::<u32>()
                .write_unaligned(page.free_head);
        }
        page.free_head = idx;
        self.idle_bytes += page.chunk as usize;
        if !page.in_partial {
            page.in_partial = true;
            let class = page.class;
            self.push_partial(class, pid as u32);
        }
    }

    /// Number of page ids (used and unused), for scanning.
    pub(crate) fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Items living in page `pid` (0 for an unused id).
    pub(crate) fn live_count(&self, pid: usize) -> u32 {
        self.pages[pid].live
    }

    /// Bytes page `pid` counts against the budget, which emptying it gives back (an unused id keeps
    /// its last mapping's count).
    pub(crate) fn page_charged(&self, pid: usize) -> usize {
        self.pages[pid].charged
    }

    /// Locators of the live items in page `pid` (empty for an unused id).
    pub(crate) fn live_in_page(&self, pid: usize, out: &mut Vec<u32>) {
        self.live_in_range(pid, 0, usize::MAX, out);
    }

    /// Locators of the live items among up to `max_chunks` chunks of page `pid` starting at
    /// chunk `from`. Returns the next chunk to look at, or `None` when the page is done.
    pub(crate) fn live_in_range(
        &self,
        pid: usize,
        from: u32,
        max_chunks: usize,
        out: &mut Vec<u32>,
    ) -> Option<u32> {
        out.clear();
        let page = &self.pages[pid];
        if page.ptr.is_null() {
            return None;
        }
        let end = page
            .hwm
            .min(from.saturating_add(u32::try_from(max_chunks).unwrap_or(u32::MAX)));
        out.extend(self.live_between(pid, from, end));
        (end < page.hwm).then_some(end)
    }

    /// Locators of the live items in page `pid` (none for an unused id), without collecting them.
    pub(crate) fn live_items(&self, pid: usize) -> impl Iterator<Item = u32> + '_ {
        let page = &self.pages[pid];
        let end = if page.ptr.is_null() { 0 } else { page.hwm };
        self.live_between(pid, 0, end)
    }

    /// Locators of the live items among chunks `from..end` of a mapped page `pid`.
    fn live_between(&self, pid: usize, from: u32, end: u32) -> impl Iterator<Item = u32> + '_ {
        (from..end)
            .map(move |idx| ((pid as u32) << CHUNK_BITS) | idx)
            .filter(move |&loc| self.get_u8(loc, OFF_BITS) & BIT_LIVE != 0)
    }

    /// Locators of up to `max` items in mappings of their own (values above a quarter of the page
    /// size; one item each), from the `start`th (modulo their count) on, wrapping around: all of them
    /// when there are at most `max`. Touches no item's memory.
    pub(crate) fn dedicated_items(
        &self,
        start: usize,
        max: usize,
    ) -> impl Iterator<Item = u32> + '_ {
        let n = self.dedicated.len();
        let start = if n == 0 { 0 } else { start % n };
        self.dedicated[start..]
            .iter()
            .chain(&self.dedicated[..start])
            .take(max)
            .map(|&pid| pid << CHUNK_BITS)
    }

    /// Whether any item has a mapping of its own.
    pub(crate) fn has_dedicated(&self) -> bool {
        !self.dedicated.is_empty()
    }

    /// Enters the new dedicated page `pid` in `dedicated`.
    fn track_dedicated(&mut self, pid: u32) {
        self.pages[pid as usize].dedicated_at = self.dedicated.len() as u32;
        self.dedicated.push(pid);
    }

    /// Adds this arena's pages to `classes`, by reported class id ([`super::class_id`], which groups
    /// chunk sizes). A dedicated mapping is a page of one chunk, its size above every shared
    /// class's, so it lands in the class of its size (memcached puts such items in its largest
    /// classes): `stats items` and `stats cachedump` see every item.
    pub(crate) fn add_class_usage(&self, classes: &mut BTreeMap<u32, super::SlabClass>) {
        for page in &self.pages {
            if page.ptr.is_null() {
                continue;
            }
            let id = super::class_id(page.chunk);
            let class = classes.entry(id).or_insert(super::SlabClass {
                id,
                ..super::SlabClass::default()
            });
            class.chunk_size = class.chunk_size.max(page.chunk);
            class.chunks_per_page = class.chunks_per_page.max(page.cap);
            class.total_pages += 1;
            class.total_chunks += u64::from(page.cap);
            class.used_chunks += u64::from(page.live);
            class.free_chunks += u64::from(page.hwm - page.live);
            class.free_chunks_end += u64::from(page.cap - page.hwm);
        }
    }

    /// Bytes of chunks in shared pages that hold no item.
    pub(crate) fn idle_bytes(&self) -> usize {
        self.idle_bytes
    }

    /// The page to compact: of the shared pages with a free or untouched chunk, the one whose items
    /// take the fewest bytes, if they take at most half of it (moving more would copy most of a page
    /// to free one; in a skewed get-or-set load of 100-10,000 B values the limit moved 13% fewer
    /// items and hit 72.28% against 72.13% of accesses).
    pub(crate) fn page_to_compact(&self) -> Option<u32> {
        let live_bytes = |pid: u32| {
            let page = &self.pages[pid as usize];
            page.live as usize * page.chunk as usize
        };
        self.classes
            .iter()
            .flat_map(|class| class.partial.iter().copied())
            .min_by_key(|&pid| live_bytes(pid))
            .filter(|&pid| 2 * live_bytes(pid) <= self.pages[pid as usize].bytes)
    }

    /// Bytes the item at `loc` takes in its chunk: header, flags if stored, key and value.
    pub(crate) fn item_len(&self, loc: u32) -> usize {
        let lens = self.get_u32(loc, OFF_LENS);
        self.body_offset(loc) + (lens >> 24) as usize + (lens & 0xff_ffff) as usize
    }

    /// Copies the item at `from` into the chunk `to` (taken for at least [`Slab::item_len`] bytes)
    /// and frees `from` ([`Slab::free`]: its page goes when that was the page's last item). The
    /// item's links, index slot and any other reference to `from` are the caller's to update.
    pub(crate) fn move_item(&mut self, from: u32, to: u32) {
        let len = self.item_len(from);
        debug_assert!(len <= self.chunk_len(to) && from != to);
        // SAFETY: two distinct chunks (`to` already taken, `from` live), each at least `len` bytes
        // long (`ptr` checks both are touched chunks of live pages).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(from), self.ptr(to), len) };
        self.free(from);
    }

    /// [`Slab::idle_bytes`] recounted from the pages, and whether every page with an idle chunk is
    /// in its class's partial list (and no other page is), each class is found under its size's
    /// ordinal, its bit in `with_partial` says whether its list has a page, and `partial_capacity`
    /// adds up, for consistency checks in tests.
    #[cfg(test)]
    pub(crate) fn recount_idle(&self) -> (usize, bool) {
        let mut idle = 0;
        let mut lists_agree = true;
        for (pid, page) in self.pages.iter().enumerate() {
            if page.ptr.is_null() || page.class == DEDICATED {
                continue;
            }
            let free = (page.cap - page.live) as usize;
            idle += free * page.chunk as usize;
            let listed = self.classes[page.class as usize]
                .partial
                .contains(&(pid as u32));
            lists_agree &= listed == (free > 0) && listed == page.in_partial;
        }
        for (k, class) in self.classes.iter().enumerate() {
            let ordinal = self.ordinal(class.chunk);
            let has_partial = self.with_partial[ordinal / 64] >> (ordinal % 64) & 1 == 1;
            lists_agree &= self.class_at[ordinal] == k as u32;
            lists_agree &= has_partial != class.partial.is_empty();
        }
        let capacity: usize = self.classes.iter().map(|c| c.partial.capacity()).sum();
        lists_agree &= capacity == self.partial_capacity;
        (idle, lists_agree)
    }

    /// [`Slab::bytes`] recounted from the pages and the spare page, and whether every page counts at
    /// least the OS pages its handed-out chunks touched (which is what bounds the RSS) and at most
    /// its mapping, for consistency checks in tests.
    #[cfg(test)]
    pub(crate) fn recount_bytes(&self) -> (usize, bool) {
        let mut bytes = self.spare_bytes();
        let mut covered = true;
        for page in self.pages.iter().filter(|page| !page.ptr.is_null()) {
            bytes += page.charged;
            covered &= page.charged >= touched(page.bytes, page.chunk, page.hwm)
                && page.charged <= page.bytes;
        }
        (bytes, covered)
    }

    /// Whether the list of dedicated pages holds exactly the mapped dedicated pages, each at its
    /// recorded place, for consistency checks in tests.
    #[cfg(test)]
    pub(crate) fn dedicated_list_agrees(&self) -> bool {
        let mapped = self
            .pages
            .iter()
            .filter(|page| page.class == DEDICATED && !page.ptr.is_null())
            .count();
        mapped == self.dedicated.len()
            && self.dedicated.iter().enumerate().all(|(at, &pid)| {
                let page = &self.pages[pid as usize];
                page.class == DEDICATED && !page.ptr.is_null() && page.dedicated_at as usize == at
            })
    }

    /// Page id of a locator.
    pub(crate) fn page_of(loc: u32) -> usize {
        Self::split(loc).0
    }

    /// The index of chunk `loc` in its page.
    pub(crate) fn chunk_index(loc: u32) -> u32 {
        Self::split(loc).1
    }

    /// The reported class ([`super::class_id`]) of page `pid`, or None for an unused id.
    pub(crate) fn page_class(&self, pid: usize) -> Option<u32> {
        let page = &self.pages[pid];
        (!page.ptr.is_null()).then(|| super::class_id(page.chunk))
    }

    /// Unmaps everything.
    pub(crate) fn clear(&mut self) {
        for page in &mut self.pages {
            if !page.ptr.is_null() {
                unmap(page.ptr, page.bytes);
                page.ptr = std::ptr::null_mut();
            }
        }
        self.drop_spare();
        for range in self.released.drain(..) {
            unmap(range.ptr, range.bytes);
        }
        self.released_bytes = 0;
        self.pages = Vec::new();
        self.free_page_ids = Vec::new();
        self.classes = Vec::new();
        self.class_at = Vec::new();
        self.with_partial = Vec::new();
        self.partial_capacity = 0;
        self.bytes = 0;
        self.idle_bytes = 0;
        self.dedicated = Vec::new();
        // page_bytes stays.
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_tight() {
        let max = MAX_PAGE_BYTES / 4;
        assert_eq!(chunk_size(165, 8, max), 165);
        assert_eq!(chunk_size(1107, 8, max), 1108);
        assert_eq!(chunk_size(5000, 8, max), 5008);
        assert!(chunk_size(9000, 8, max) - 9000 < 9000 / 256 + 1);
        assert_eq!(chunk_size(max + 1, 8, max) % OS_PAGE, 0);
        // Coarse classes: 4 per power of two.
        assert_eq!(chunk_size(1108, 2, max), 1280);
        assert_eq!(chunk_size(100, 2, max), 112);
        assert_eq!(class_bits_for(32), 2);
        assert_eq!(class_bits_for(64), 3);
        assert_eq!(class_bits_for(4096), 8);
    }

    /// Every class size gets its own ordinal, in size order with no gaps, and a size between two
    /// class sizes gets the lower one's, at every class resolution: the allocation's walk over
    /// `with_partial` relies on both.
    #[test]
    fn class_sizes_map_to_consecutive_ordinals() {
        for bits in 2..=8 {
            let mut s = Slab::new(MAX_PAGE_BYTES);
            s.class_bits = bits;
            let max = s.max_slab_chunk();
            let mut previous: Option<(usize, usize)> = None;
            for size in MIN_CHUNK..=max {
                let chunk = s.chunk_for(size);
                if chunk > max || previous.is_some_and(|(c, _)| c == chunk) {
                    continue;
                }
                let ordinal = s.ordinal(chunk as u32);
                if let Some((last_chunk, last)) = previous {
                    assert_eq!(ordinal, last + 1, "bits {bits}: {last_chunk} then {chunk}");
                    for between in last_chunk + 1..chunk {
                        assert_eq!(s.ordinal(between as u32), last, "bits {bits}: {between}");
                    }
                }
                previous = Some((chunk, ordinal));
            }
        }
    }

    #[test]
    fn alloc_free_reuses_and_unmaps() {
        let mut s = Slab::new(MIN_PAGE_BYTES);
        assert_eq!(s.alloc_existing(100, usize::MAX), None, "no class yet");
        let a = s.alloc_new_page(100).unwrap();
        assert_eq!(
            s.bytes, OS_PAGE,
            "a new page counts the OS page its first chunk touched"
        );
        let b = s.alloc_existing(100, usize::MAX).unwrap();
        assert_ne!(a, b);
        s.set_u8(a, OFF_BITS, BIT_LIVE);
        s.set_u8(b, OFF_BITS, BIT_LIVE);
        s.free(b);
        assert_eq!(
            s.alloc_existing(100, usize::MAX),
            Some(b),
            "freed chunk is reused"
        );
        s.free(b);
        s.free(a);
        assert_eq!(
            s.bytes, OS_PAGE,
            "an empty page is kept as the spare, its touched part counted"
        );
        assert_eq!(
            s.new_page_cost(100),
            0,
            "a page of its size costs nothing more"
        );
        let again = s.alloc_new_page(100).unwrap();
        assert_eq!(s.bytes, OS_PAGE, "the spare is reused, not mapped anew");
        s.set_u8(again, OFF_BITS, BIT_LIVE);
        s.free(again);
        let big = s.alloc_new_page(1 << 20).unwrap();
        assert!(
            s.bytes >= 1 << 20 && s.bytes < (1 << 20) + MIN_PAGE_BYTES,
            "the spare of another size is unmapped"
        );
        s.set_u8(big, OFF_BITS, BIT_LIVE);
        let big_bytes = s.bytes;
        let big_ptr = s.ptr(big);
        s.free(big);
        // Kept (and counted) for the next item of its size: a large value overwritten takes a new
        // mapping before the old one goes (session 34: mapping and faulting in each afresh made
        // 1 MB sets 0.47 of memcached's rate).
        assert_eq!(
            s.bytes, big_bytes,
            "a dedicated mapping is kept as the spare"
        );
        let big = s.alloc_new_page(1 << 20).unwrap();
        assert_eq!(s.ptr(big), big_ptr, "and reused for an item of its size");
        assert_eq!(s.bytes, big_bytes);
        assert_eq!(s.recount_bytes(), (big_bytes, true));
        // A shared page that empties displaces it: compaction needs the spare more.
        let small = s.alloc_new_page(100).unwrap();
        s.set_u8(small, OFF_BITS, BIT_LIVE);
        s.set_u8(big, OFF_BITS, BIT_LIVE);
        s.free(big);
        s.free(small);
        assert_eq!(
            s.bytes, OS_PAGE,
            "the mapping unmapped, the shared page kept"
        );
        assert_eq!(s.recount_bytes(), (OS_PAGE, true));
        assert!(s.drop_spare());
        assert_eq!(s.bytes, 0);
    }

    /// The checks the unsafe code trusts hold in release builds too: a locator whose page was
    /// emptied, a free list whose link was overwritten, and a header whose lengths overrun the
    /// chunk each panic instead of touching memory that is not an item's (before session 33 they
    /// were `debug_assert!`s: a release build read the freed page's null pointer plus an offset,
    /// handed out a chunk past the mapping, or sliced into the next chunk).
    #[test]
    fn stale_locators_and_corrupt_links_panic_instead_of_reaching_past_an_item() {
        fn panic_text(f: impl FnOnce()) -> String {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let message = caught.expect_err("the check panics");
            message
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }
        // A locator kept after its page was emptied and released.
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let a = s.alloc_new_page(100).unwrap();
        s.init_item(a, b"k", &[b"v"], 0);
        assert_eq!(s.key(a), b"k");
        s.free(a);
        s.drop_spare();
        let text = panic_text(|| {
            s.key(a);
        });
        assert!(text.contains("stale locator"), "{text}");

        // Item lengths that overrun the chunk (a header overwritten by a stray write).
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let a = s.alloc_new_page(100).unwrap();
        s.init_item(a, b"a", &[b"1"], 0);
        s.set_u32(a, OFF_LENS, (1 << 24) | 5_000);
        let text = panic_text(|| {
            s.value(a);
        });
        assert!(text.contains("overruns its chunk"), "{text}");

        // A stray link write into a freed chunk: its first four bytes are the free list's next
        // index, the same bytes as a live item's `OFF_PREV`.
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let a = s.alloc_new_page(100).unwrap();
        let b = s.alloc_existing(100, usize::MAX).unwrap();
        s.init_item(a, b"a", &[b"1"], 0);
        s.init_item(b, b"b", &[b"2"], 0);
        s.free(a);
        let page = &s.pages[Slab::page_of(a)];
        let at = (a & CHUNK_MASK) as usize * page.chunk as usize + OFF_PREV;
        // SAFETY: chunk `a` was touched and its page is still mapped (it holds `b`); this is the
        // raw store a bug elsewhere would make, which `set_u32` would refuse for a free chunk.
        unsafe { page.ptr.add(at).cast::<u32>().write_unaligned(page.cap + 5) };
        let text = panic_text(|| {
            s.alloc_existing(100, usize::MAX);
        });
        assert!(text.contains("corrupt free list"), "{text}");
    }

    /// OS pages of `bytes` at `ptr` that are resident, or None when the range is not mapped.
    fn resident_pages(ptr: *mut u8, bytes: usize) -> Option<usize> {
        let mut vec = vec![0u8; bytes.div_ceil(OS_PAGE)];
        // SAFETY: `vec` has one byte per OS page of the range; mincore only writes into it.
        let r = unsafe { libc::mincore(ptr.cast(), bytes, vec.as_mut_ptr()) };
        (r == 0).then(|| vec.iter().filter(|&&b| b & 1 == 1).count())
    }

    /// A page emptied while the spare is taken gives its memory back to the kernel but keeps its
    /// address range, and the next new page of its size is made in that range without a new
    /// mapping; past [`RELEASED_PAGES`] shard pages' worth, emptied pages are unmapped.
    #[test]
    fn an_emptied_page_goes_back_to_the_kernel_and_its_range_is_reused() {
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let page_bytes = s.page_for(s.chunk_for(100));
        // Pages full of items, every chunk written, so each page is resident.
        let fill = |s: &mut Slab| -> Vec<u32> {
            let first = s.alloc_new_page(100).unwrap();
            let mut locs = vec![first];
            while let Some(loc) = s.alloc_existing(100, usize::MAX) {
                if Slab::page_of(loc) != Slab::page_of(first) {
                    s.free(loc);
                    break;
                }
                locs.push(loc);
            }
            for &loc in &locs {
                s.set_u8(loc, OFF_BITS, BIT_LIVE);
            }
            locs
        };
        let spare_to_be = fill(&mut s);
        let released_to_be = fill(&mut s);
        let range = s.pages[Slab::page_of(released_to_be[0])].ptr;
        assert_eq!(
            resident_pages(range, page_bytes),
            Some(page_bytes / OS_PAGE),
            "a page whose every chunk was handed out is resident"
        );
        let before = s.bytes;
        for loc in spare_to_be {
            s.free(loc);
        }
        assert_eq!(
            s.bytes, before,
            "the first emptied page is the spare, still counted"
        );
        for loc in released_to_be {
            s.free(loc);
        }
        assert_eq!(
            s.bytes,
            before - page_bytes,
            "the second is no longer counted"
        );
        assert_eq!(
            resident_pages(range, page_bytes),
            Some(0),
            "its range stays mapped and none of it is resident"
        );
        s.alloc_new_page(100).unwrap(); // takes the spare
        let reused = s.alloc_new_page(100).unwrap();
        assert_eq!(
            s.pages[Slab::page_of(reused)].ptr,
            range,
            "the next page of its size is made in the released range"
        );
        assert_eq!(s.get_u8(reused, OFF_BITS), 0, "and reads as fresh memory");
        assert_eq!(s.recount_bytes(), (s.bytes, true));

        // Many pages emptied at once: ranges are kept up to the limit, the rest unmapped. (Whether
        // an unmapped range is still mapped cannot be asked reliably: other tests map pages too.)
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let pages: Vec<Vec<u32>> = (0..RELEASED_PAGES + 8).map(|_| fill(&mut s)).collect();
        for locs in pages {
            for loc in locs {
                s.free(loc);
            }
        }
        assert_eq!(s.released.len(), RELEASED_PAGES);
        assert_eq!(s.released_bytes, RELEASED_PAGES * s.page_bytes);
        assert!(s
            .released
            .iter()
            .all(|r| resident_pages(r.ptr, r.bytes) == Some(0)));
        assert_eq!(s.bytes, page_bytes, "only the spare is counted");
        s.clear();
        assert!(s.released.is_empty() && s.released_bytes == 0);
    }

    /// A chunk may come from a larger class when its own has none free, up to 25% larger; its own
    /// class comes first.
    #[test]
    fn a_chunk_may_come_from_a_slightly_larger_class() {
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let large = s.alloc_new_page(120).unwrap();
        s.set_u8(large, OFF_BITS, BIT_LIVE);
        assert_eq!(s.chunk_len(large), 120);
        let from_larger = s
            .alloc_existing(100, usize::MAX)
            .expect("a free 120-byte chunk serves 100 bytes");
        assert_eq!(s.chunk_len(from_larger), 120);
        assert_eq!(
            s.alloc_existing(90, usize::MAX),
            None,
            "120 is more than 25% above 90"
        );
        let own = s.alloc_new_page(100).unwrap();
        assert_eq!(s.chunk_len(own), 100);
        let next = s.alloc_existing(100, usize::MAX).unwrap();
        assert_eq!(s.chunk_len(next), 100, "its own class first");
    }

    /// In a small shard each class gets pages sized for it: at least 16 of its chunks, between
    /// 1/512 of the shard's budget (and 16 KiB) and the shard's page size; a large shard keeps full
    /// pages.
    #[test]
    fn pages_are_sized_per_class_in_small_shards() {
        let s = Slab::for_budget(32 << 20);
        assert_eq!(s.page_bytes(), 512 << 10);
        assert_eq!(s.page_for(100), 64 << 10, "1/512 of the budget");
        assert_eq!(
            s.page_for(5000),
            128 << 10,
            "16 chunks, rounded up to a power of two"
        );
        assert_eq!(s.page_for(40 << 10), 512 << 10, "at most the shard's page");
        let tiny = Slab::for_budget(4 << 20);
        assert_eq!(tiny.page_for(100), SMALLEST_PAGE_BYTES);
        let large = Slab::for_budget(1 << 30);
        assert_eq!(
            large.page_for(100),
            MAX_PAGE_BYTES,
            "a large shard keeps full pages"
        );
        let mut s = Slab::for_budget(32 << 20);
        s.alloc_new_page(100).unwrap();
        s.alloc_new_page(40 << 10).unwrap();
        assert_eq!(
            s.bytes,
            OS_PAGE + s.chunk_for(40 << 10).next_multiple_of(OS_PAGE),
            "each page counts the OS pages its one chunk touched"
        );
    }

    /// The budget counts what a page's chunks have touched, in whole OS pages (anonymous memory
    /// never touched is not resident), up to the whole page; a spare page that is reused keeps
    /// counting what it touched before.
    #[test]
    fn a_page_counts_the_os_pages_its_chunks_touched() {
        let mut s = Slab::new(MIN_PAGE_BYTES);
        let chunk = s.chunk_for(1000);
        let mut locs = vec![s.alloc_new_page(1000).unwrap()];
        while locs.len() * chunk <= OS_PAGE {
            locs.push(s.alloc_existing(1000, usize::MAX).unwrap());
        }
        assert_eq!(
            s.bytes,
            2 * OS_PAGE,
            "the chunk that crossed into a second OS page"
        );
        for &loc in &locs {
            s.set_u8(loc, OFF_BITS, BIT_LIVE);
        }
        s.free(locs[1]);
        assert_eq!(s.alloc_existing(1000, usize::MAX), Some(locs[1]));
        assert_eq!(
            s.bytes,
            2 * OS_PAGE,
            "a freed chunk reused touches nothing new"
        );
        for &loc in &locs {
            s.free(loc);
        }
        assert_eq!(s.bytes, 2 * OS_PAGE, "the spare counts what it touched");
        let again = s.alloc_new_page(1000).unwrap();
        assert_eq!(s.bytes, 2 * OS_PAGE, "and keeps counting it once reused");
        s.set_u8(again, OFF_BITS, BIT_LIVE);
        while let Some(loc) = s.alloc_existing(1000, usize::MAX) {
            s.set_u8(loc, OFF_BITS, BIT_LIVE);
        }
        assert_eq!(s.bytes, MIN_PAGE_BYTES, "a full page counts all of it");
    }
}
