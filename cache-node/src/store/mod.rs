//! The cache-node store: a sharded, memory-bounded key/value store with W-TinyLFU eviction.
//!
//! What it does: keeps items (key, value, flags, exptime, 64-bit CAS, lease bits) within a memory
//! budget, expires them lazily on access and incrementally in the background
//! ([`Store::expire_some`]), implements `flush_all` with a delay, and hands out CAS values.
//! What it does not do: parse the protocol, hand out lease tokens or decide command semantics;
//! the server builds those on [`Store::with_entry`], which gives exclusive access to one key's slot
//! for a read-modify-write.
//!
//! ```
//! use std::sync::Arc;
//! use cache_node::clock::ManualClock;
//! use cache_node::store::{NewItem, Store, StoreConfig};
//!
//! let clock = Arc::new(ManualClock::new(1_700_000_000));
//! let store = Store::new(StoreConfig::default(), clock.clone());
//! let cas = store.next_cas();
//! store.with_entry(b"user:1", |e| {
//!     e.insert(NewItem { value: &[b"hello ", b"world"], flags: 7, exptime: 10, cas, stale: false, win_sent: false })
//! }).unwrap();
//! let got = store.with_entry(b"user:1", |e| {
//!     e.record_read();
//!     e.item().map(|it| (it.value().to_vec(), it.meta().flags, it.meta().cas))
//! });
//! assert_eq!(got, Some((b"hello world".to_vec(), 7, cas)));
//! clock.advance(10); // exptime reached: the item is gone
//! assert!(store.with_entry(b"user:1", |e| e.item().is_none()));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::Clock;

/// Store configuration. Build with struct update syntax over [`StoreConfig::default`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Memory budget in bytes for items and the store's own tables.
    pub memory_limit_bytes: usize,
    /// Number of independently locked shards (rounded up to a power of two).
    pub shards: usize,
    /// Optional bound on the number of items (used by trace replay); `None` = bytes only.
    pub max_items: Option<usize>,
    /// Seed for key hashing, so eviction decisions are the same on every run.
    pub hash_seed: u64,
}

/// Default memory budget: 64 MiB, memcached's default.
pub fn default_memory_limit_bytes() -> usize {
    64 << 20
}
/// Default shard count.
pub fn default_shards() -> usize {
    16
}
/// Default hash seed.
pub fn default_hash_seed() -> u64 {
    0x5eed_cafe_f00d_d00d
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memory_limit_bytes: default_memory_limit_bytes(),
            shards: default_shards(),
            max_items: None,
            hash_seed: default_hash_seed(),
        }
    }
}

/// Errors from store writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The item cannot fit in a shard's share of the budget (memcached: "object too large").
    #[error("item of {size} bytes is too large for the store (max {max})")]
    TooLarge { size: usize, max: usize },
    /// The key is empty or longer than 250 bytes.
    #[error("key length {0} is out of range 1..=250")]
    BadKey(usize),
}

/// Per-item metadata, as seen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemMeta {
    /// Opaque client flags.
    pub flags: u32,
    /// Expiry in clock seconds; 0 = never.
    pub exptime: u32,
    /// CAS unique value.
    pub cas: u64,
    /// Marked stale (meta `md ... I`): served with a win/stale indication.
    pub stale: bool,
    /// A win (lease) token has been handed out for this item.
    pub win_sent: bool,
    /// Fetched at least once since stored.
    pub fetched: bool,
    /// Clock second of the last read access (or of the store if never read).
    pub last_access: u32,
}

/// A new value to store. `value` parts are concatenated, so append/prepend need no extra copy.
#[derive(Debug, Clone, Copy)]
pub struct NewItem<'a> {
    /// Value parts, concatenated in order.
    pub value: &'a [&'a [u8]],
    /// Client flags.
    pub flags: u32,
    /// Expiry in clock seconds; 0 = never.
    pub exptime: u32,
    /// CAS value; 0 means "assign [`Store::next_cas`]".
    pub cas: u64,
    /// Stale bit.
    pub stale: bool,
    /// Win-sent (lease) bit.
    pub win_sent: bool,
}

/// Counters, named after memcached's `stats` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Items currently stored (expired ones not yet reclaimed included).
    pub curr_items: u64,
    /// Items stored since start.
    pub total_items: u64,
    /// Bytes accounted against the budget (item memory and tables).
    pub bytes: u64,
    /// The budget.
    pub limit_maxbytes: u64,
    /// Items evicted to make room.
    pub evictions: u64,
    /// Expired items reclaimed that were never fetched.
    pub expired_unfetched: u64,
    /// Evicted items that were never fetched.
    pub evicted_unfetched: u64,
    /// Expired or flushed items reclaimed (lazily or in the background).
    pub reclaimed: u64,
    /// Items reclaimed by the background pass ([`Store::expire_some`]).
    pub crawler_reclaimed: u64,
    /// Lookups that found an expired item.
    pub get_expired: u64,
    /// Lookups that found an item killed by flush_all.
    pub get_flushed: u64,
}

/// The store. `Send + Sync`; share it with an `Arc`.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    clock: Arc<dyn Clock>,
    cas: AtomicU64,
    /// Pending or applied flush_all time (0 = none).
    flush_at: AtomicU32,
    config: StoreConfig,
    expire_cursor: AtomicU64,
}

struct NaiveItem {
    meta: ItemMeta,
    value: Box<[u8]>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, NaiveItem>,
    bytes: usize,
    budget: usize,
    max_items: usize,
    flushed_for: u32,
    stats: StoreStats,
}

impl Shard {
    fn apply_flush(&mut self, flush_at: u32, now: u32) {
        if flush_at != 0 && now >= flush_at && self.flushed_for != flush_at {
            self.flushed_for = flush_at;
            let n = self.map.len() as u64;
            self.map.clear();
            self.bytes = 0;
            self.stats.reclaimed += n;
        }
    }
}

/// Exclusive access to one key's slot, handed to the closure of [`Store::with_entry`].
pub struct Entry<'a> {
    shard: &'a mut Shard,
    key: &'a [u8],
    now: u32,
    next_cas: &'a AtomicU64,
}

/// A live item borrowed from an [`Entry`].
pub struct ItemRef<'a> {
    meta: ItemMeta,
    value: &'a [u8],
}

impl ItemRef<'_> {
    /// The value bytes.
    pub fn value(&self) -> &[u8] {
        self.value
    }
    /// The item's metadata.
    pub fn meta(&self) -> &ItemMeta {
        &self.meta
    }
}

impl Entry<'_> {
    /// The key this entry is for.
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// The current clock second, as seen when the entry was locked.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// The live item, if any. An expired item is removed here and counted in `get_expired`.
    pub fn item(&mut self) -> Option<ItemRef<'_>> {
        let expired = match self.shard.map.get(self.key) {
            None => return None,
            Some(it) => it.meta.exptime != 0 && it.meta.exptime <= self.now,
        };
        if expired {
            self.shard.stats.get_expired += 1;
            self.remove_inner(true);
            return None;
        }
        self.shard.map.get(self.key).map(|it| ItemRef {
            meta: it.meta,
            value: &it.value,
        })
    }

    /// Records a read access: feeds the admission sketch and the LRU, sets `fetched` and
    /// `last_access`.
    pub fn record_read(&mut self) {
        let now = self.now;
        if let Some(it) = self.shard.map.get_mut(self.key) {
            it.meta.fetched = true;
            it.meta.last_access = now;
        }
    }

    /// Stores `item`, replacing any existing one.
    pub fn insert(&mut self, item: NewItem<'_>) -> Result<(), StoreError> {
        if self.key.is_empty() || self.key.len() > 250 {
            return Err(StoreError::BadKey(self.key.len()));
        }
        let len: usize = item.value.iter().map(|p| p.len()).sum();
        let size = len + self.key.len() + 48;
        if size > self.shard.budget {
            return Err(StoreError::TooLarge {
                size,
                max: self.shard.budget,
            });
        }
        self.remove_inner(false);
        while self.shard.bytes + size > self.shard.budget
            || self.shard.map.len() >= self.shard.max_items
        {
            let k = match self.shard.map.keys().next() {
                Some(k) => k.clone(),
                None => break,
            };
            let it = self.shard.map.remove(&k).expect("present");
            self.shard.bytes -= it.value.len() + k.len() + 48;
            self.shard.stats.evictions += 1;
            if !it.meta.fetched {
                self.shard.stats.evicted_unfetched += 1;
            }
        }
        let mut value = Vec::with_capacity(len);
        for p in item.value {
            value.extend_from_slice(p);
        }
        let cas = if item.cas == 0 {
            self.next_cas.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            item.cas
        };
        self.shard.map.insert(
            self.key.into(),
            NaiveItem {
                meta: ItemMeta {
                    flags: item.flags,
                    exptime: item.exptime,
                    cas,
                    stale: item.stale,
                    win_sent: item.win_sent,
                    fetched: false,
                    last_access: self.now,
                },
                value: value.into(),
            },
        );
        self.shard.bytes += size;
        self.shard.stats.total_items += 1;
        Ok(())
    }

    fn remove_inner(&mut self, expired: bool) -> bool {
        match self.shard.map.remove(self.key) {
            Some(it) => {
                self.shard.bytes -= it.value.len() + self.key.len() + 48;
                if expired {
                    self.shard.stats.reclaimed += 1;
                    if !it.meta.fetched {
                        self.shard.stats.expired_unfetched += 1;
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Removes the item; true if there was one (expired or not).
    pub fn remove(&mut self) -> bool {
        self.remove_inner(false)
    }

    /// In-place access to the live item's metadata (touch, stale marking, lease bits).
    /// Changes are written back when the guard drops.
    pub fn meta_mut(&mut self) -> Option<MetaMut<'_>> {
        self.item()?;
        let it = self.shard.map.get_mut(self.key)?;
        Some(MetaMut { meta: &mut it.meta })
    }
}

/// A guard over a live item's metadata; derefs to [`ItemMeta`] and writes back on drop.
pub struct MetaMut<'a> {
    meta: &'a mut ItemMeta,
}

impl std::ops::Deref for MetaMut<'_> {
    type Target = ItemMeta;
    fn deref(&self) -> &ItemMeta {
        self.meta
    }
}
impl std::ops::DerefMut for MetaMut<'_> {
    fn deref_mut(&mut self) -> &mut ItemMeta {
        self.meta
    }
}

fn hash_key(seed: u64, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, seed)
}

impl Store {
    /// A store with `config`, reading time from `clock`.
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Store {
        let n = config.shards.max(1).next_power_of_two();
        let budget = config.memory_limit_bytes / n;
        let max_items = config
            .max_items
            .map(|m| m.div_ceil(n))
            .unwrap_or(usize::MAX);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    budget,
                    max_items,
                    ..Shard::default()
                })
            })
            .collect();
        Store {
            shards,
            shard_mask: n as u64 - 1,
            clock,
            cas: AtomicU64::new(0),
            flush_at: AtomicU32::new(0),
            config,
            expire_cursor: AtomicU64::new(0),
        }
    }

    /// The clock the store reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A fresh CAS value: unique, increasing, never 0.
    pub fn next_cas(&self) -> u64 {
        self.cas.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs `f` with exclusive access to `key`'s slot (its shard is locked meanwhile).
    pub fn with_entry<R>(&self, key: &[u8], f: impl FnOnce(&mut Entry<'_>) -> R) -> R {
        let h = hash_key(self.config.hash_seed, key);
        let now = self.clock.now();
        let mut shard = self.shards[(h & self.shard_mask) as usize].lock();
        shard.apply_flush(self.flush_at.load(Ordering::Acquire), now);
        let mut entry = Entry {
            shard: &mut shard,
            key,
            now,
            next_cas: &self.cas,
        };
        f(&mut entry)
    }

    /// memcached `flush_all [delay]`: every item stored before clock second `at` dies at `at`.
    pub fn flush_all(&self, at: u32) {
        let now = self.clock.now();
        let at = at.max(1);
        self.flush_at.store(at, Ordering::Release);
        if at <= now {
            for s in self.shards.iter() {
                s.lock().apply_flush(at, now);
            }
        }
    }

    /// One incremental background-expiry step: examines up to `max_items` items and removes the
    /// expired ones. Returns how many it removed.
    pub fn expire_some(&self, max_items: usize) -> usize {
        let now = self.clock.now();
        let i = self.expire_cursor.fetch_add(1, Ordering::Relaxed) as usize % self.shards.len();
        let mut shard = self.shards[i].lock();
        shard.apply_flush(self.flush_at.load(Ordering::Acquire), now);
        let dead: Vec<Box<[u8]>> = shard
            .map
            .iter()
            .filter(|(_, it)| it.meta.exptime != 0 && it.meta.exptime <= now)
            .take(max_items)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            let it = shard.map.remove(k).expect("present");
            shard.bytes -= it.value.len() + k.len() + 48;
            shard.stats.reclaimed += 1;
            shard.stats.crawler_reclaimed += 1;
            if !it.meta.fetched {
                shard.stats.expired_unfetched += 1;
            }
        }
        dead.len()
    }

    /// A snapshot of the counters, summed over shards.
    pub fn stats(&self) -> StoreStats {
        let mut t = StoreStats {
            limit_maxbytes: self.config.memory_limit_bytes as u64,
            ..StoreStats::default()
        };
        for s in self.shards.iter() {
            let s = s.lock();
            t.curr_items += s.map.len() as u64;
            t.bytes += s.bytes as u64;
            t.total_items += s.stats.total_items;
            t.evictions += s.stats.evictions;
            t.expired_unfetched += s.stats.expired_unfetched;
            t.evicted_unfetched += s.stats.evicted_unfetched;
            t.reclaimed += s.stats.reclaimed;
            t.crawler_reclaimed += s.stats.crawler_reclaimed;
            t.get_expired += s.stats.get_expired;
            t.get_flushed += s.stats.get_flushed;
        }
        t
    }
}
