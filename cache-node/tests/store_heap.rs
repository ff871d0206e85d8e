//! The budget counts the store's heap: everything the store allocates besides its item pages (hash
//! index, sketch, ghost lists, the arena's tables) is in `stats().bytes`, measured here with a
//! counting allocator while a churn of mixed sizes makes the store grow, evict, empty pages and
//! release them. It does not measure the item pages themselves (they are mappings, not heap; the
//! memory bench measures their RSS).
//!
//! This file holds one test on purpose: the allocator counts per thread, and one test keeps the
//! thread's figures free of any other test's work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use cache_node::clock::ManualClock;
use cache_node::store::{NewItem, Store, StoreConfig};

/// The system allocator, counting the live bytes this thread allocated.
struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread. (A const-initialised `Cell` needs no
    /// allocation of its own, so the allocator may use it.)
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down may still free memory.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every call forwards to `System` unchanged; the counting touches only a thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The store's heap that its budget does not count: live heap bytes since before the store was
/// made, minus what `bytes` counts besides the item pages.
fn uncounted(store: &Store, live_before: isize) -> isize {
    let counted_pages = store.slab_classes().1 as isize;
    let st = store.stats();
    let counted_heap = st.bytes as isize - counted_pages - st.reserved_bytes as isize;
    live() - live_before - counted_heap
}

/// A cache-aside churn over sizes spread across many classes, so that memory keeps moving between
/// them (pages are emptied, released and reused), while items, index, sketch and ghost lists grow.
/// What the budget leaves out must stay the store's fixed part (shard structs, configuration), the
/// same at every step: a table that grows without being counted shows here as growth.
#[test]
fn the_budget_counts_every_heap_byte_the_store_grows_by() {
    // The test's own buffers first, so that the count from here on is the store's.
    let value = vec![b'v'; 20_000];
    let mut key = Vec::with_capacity(32);
    let live_before = live();
    let store = Store::new(
        StoreConfig {
            memory_limit_bytes: 16 << 20,
            shards: 4,
            ..StoreConfig::default()
        },
        Arc::new(ManualClock::new(0)),
    );
    let fixed = uncounted(&store, live_before);
    assert!(
        (0..64 << 10).contains(&fixed),
        "the store's fixed part is {fixed} B"
    );

    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut largest_drift = 0isize;
    let mut evictions_seen = 0;
    for round in 0..20 {
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Key popularity and value size both move with the round, so classes fill and drain.
            let id = (x % 30_000) + round * 5_000;
            let len = 50 + ((x >> 32) % (1_000 + 900 * (round % 7))) as usize;
            key.clear();
            key.extend_from_slice(b"key:");
            key.extend_from_slice(&id.to_le_bytes());
            store.with_entry(&key, |e| {
                if e.item().is_some() {
                    e.record_read();
                } else {
                    e.insert(NewItem::plain(&[&value[..len]]))
                        .expect("an item within the size limit fits");
                }
            });
        }
        let drift = uncounted(&store, live_before) - fixed;
        largest_drift = largest_drift.max(drift.abs());
        evictions_seen = store.stats().evictions;
    }
    let st = store.stats();
    assert_eq!(
        st.arena_bytes + st.index_bytes + st.policy_bytes + st.reserved_bytes,
        st.bytes,
        "the parts `stats` shows add up to `bytes`"
    );
    assert!(
        evictions_seen > 100_000,
        "the churn evicts: {evictions_seen}"
    );
    assert!(
        st.slabs_moved + st.slab_page_evictions > 0,
        "memory moved between classes"
    );
    assert!(
        largest_drift <= 256,
        "heap the budget does not count grew by up to {largest_drift} B beside the store's fixed \
         {fixed} B (counted now: {} B of tables, index and policy)",
        st.bytes - store.slab_classes().1
    );
}
