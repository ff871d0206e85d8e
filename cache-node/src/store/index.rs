//! Compact open-addressing hash index: key hash -> item locator.
//!
//! Linear probing over two parallel arrays, a one-byte tag (from the low byte of the hash;
//! 0 = empty, 1 = deleted) and a `u32` locator, so a slot costs 5 bytes and most non-matching
//! probes are rejected without touching the item. Deletion leaves a tombstone (or an empty slot
//! when the run ends there), so it never has to touch other items; tombstones are swept by a
//! rebuild when live entries plus tombstones reach 85% of the slots, and the rebuild grows the
//! table by 1/8 only when the live entries alone pass 72%. A filling table stays between 75%
//! and 85% full (about 6.2 bytes per item), a steady one with churn between 67% and 75% (about
//! 7 bytes), where a power-of-two table would swing between 5.7 and 11.4. Hashes are
//! not stored: a rebuild recomputes each item's hash from its key.

use super::slab::NIL;

const MAX_LOAD_NUM: usize = 17;
const MAX_LOAD_DEN: usize = 20;
const EMPTY: u8 = 0;
const TOMBSTONE: u8 = 1;

pub(crate) struct Index {
    tags: Vec<u8>,
    locs: Vec<u32>,
    len: usize,
    tombstones: usize,
}

#[inline]
fn tag_of(h: u64) -> u8 {
    let t = h as u8;
    if t <= TOMBSTONE {
        t + 2
    } else {
        t
    }
}

#[inline]
fn home(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

impl Index {
    pub(crate) fn new() -> Index {
        Index {
            tags: vec![EMPTY; 16],
            locs: vec![NIL; 16],
            len: 0,
            tombstones: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the table.
    pub(crate) fn bytes(&self) -> usize {
        self.tags.capacity() + self.locs.capacity() * 4
    }

    /// Slot and locator of the entry with hash `h` whose item satisfies `is_key`.
    #[inline]
    pub(crate) fn find(&self, h: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        let n = self.tags.len();
        let tag = tag_of(h);
        let mut i = home(h, n);
        loop {
            let t = self.tags[i];
            if t == EMPTY {
                return None;
            }
            if t == tag && is_key(self.locs[i]) {
                return Some((i, self.locs[i]));
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Whether inserting one more entry needs a rebuild first.
    pub(crate) fn needs_rebuild(&self) -> bool {
        (self.len + self.tombstones + 1) * MAX_LOAD_DEN > self.tags.len() * MAX_LOAD_NUM
    }

    /// Rebuilds the table without tombstones, larger if the live entries need it,
    /// recomputing each entry's hash with `hash_of`.
    pub(crate) fn rebuild(&mut self, hash_of: impl Fn(u32) -> u64) {
        let old_n = self.tags.len();
        // Grow (by an eighth) only when the live entries alone are near the limit, so a steady
        // item count with churn sweeps tombstones at the same size instead of growing again.
        let n = if (self.len + 1) * 100 > old_n * 72 {
            (old_n + old_n / 8).max(16)
        } else {
            old_n
        };
        self.rebuild_with(n, hash_of);
    }

    /// Whether the table has room for over eight times its live entries (and is not small): sized
    /// for an item count long gone, it holds budget that items could use.
    pub(crate) fn oversized(&self) -> bool {
        self.tags.len() > 1024 && self.len * 8 < self.tags.len()
    }

    /// Rebuilds the table at a size its live entries fill to about 36%, half the load at which it
    /// grows, so neither a shrink nor the next growth comes soon after.
    pub(crate) fn shrink(&mut self, hash_of: impl Fn(u32) -> u64) {
        let n = ((self.len + 1) * 100 / 36).max(16);
        if n < self.tags.len() {
            self.rebuild_with(n, hash_of);
        }
    }

    fn rebuild_with(&mut self, n: usize, hash_of: impl Fn(u32) -> u64) {
        let old_locs = std::mem::replace(&mut self.locs, vec![NIL; n]);
        let old_tags = std::mem::replace(&mut self.tags, vec![EMPTY; n]);
        self.tombstones = 0;
        for (t, loc) in old_tags.into_iter().zip(old_locs) {
            if t > TOMBSTONE {
                self.place(hash_of(loc), loc);
            }
        }
    }

    fn place(&mut self, h: u64, loc: u32) {
        let n = self.tags.len();
        let mut i = home(h, n);
        while self.tags[i] > TOMBSTONE {
            i += 1;
            if i == n {
                i = 0;
            }
        }
        if self.tags[i] == TOMBSTONE {
            self.tombstones -= 1;
        }
        self.tags[i] = tag_of(h);
        self.locs[i] = loc;
    }

    /// Inserts an entry known to be absent. Call [`Index::rebuild`] first when
    /// [`Index::needs_rebuild`].
    pub(crate) fn insert(&mut self, h: u64, loc: u32) {
        debug_assert!(self.len + self.tombstones < self.tags.len() - 1);
        self.place(h, loc);
        self.len += 1;
    }

    /// Points the entry in `slot` at `loc` (its item moved to another chunk).
    pub(crate) fn set_loc(&mut self, slot: usize, loc: u32) {
        debug_assert!(self.tags[slot] > TOMBSTONE);
        self.locs[slot] = loc;
    }

    /// Removes the entry in `slot`.
    pub(crate) fn remove_slot(&mut self, slot: usize) {
        let n = self.tags.len();
        self.locs[slot] = NIL;
        self.len -= 1;
        if self.tags[(slot + 1) % n] != EMPTY {
            self.tags[slot] = TOMBSTONE;
            self.tombstones += 1;
            return;
        }
        // The probe run ends here: this slot and the tombstones just before it can be empty.
        self.tags[slot] = EMPTY;
        let mut j = slot;
        loop {
            j = (j + n - 1) % n;
            if self.tags[j] != TOMBSTONE {
                break;
            }
            self.tags[j] = EMPTY;
            self.tombstones -= 1;
        }
    }

    /// Empties the table.
    pub(crate) fn clear(&mut self) {
        *self = Index::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model check: random inserts and removals agree with a HashMap, including colliding hashes.
    #[test]
    fn matches_a_hashmap_under_churn() {
        let mut idx = Index::new();
        let mut model = std::collections::HashMap::new();
        // "items": locator -> hash; hashes collide on purpose (few distinct values high bits).
        let hash_of =
            |loc: u32| (u64::from(loc) % 7).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(loc);
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let loc = (x % 3000) as u32;
            let h = hash_of(loc);
            let found = idx.find(h, |l| l == loc);
            if x & 1 == 0 {
                if found.is_none() {
                    if idx.needs_rebuild() {
                        idx.rebuild(hash_of);
                    }
                    idx.insert(h, loc);
                    model.insert(loc, ());
                }
            } else if let Some((slot, _)) = found {
                idx.remove_slot(slot);
                model.remove(&loc);
            }
            assert_eq!(idx.len(), model.len());
        }
        for loc in 0..3000u32 {
            assert_eq!(
                idx.find(hash_of(loc), |l| l == loc).is_some(),
                model.contains_key(&loc),
                "loc {loc}"
            );
        }
    }

    /// A table grown for many entries shrinks once few are left, and keeps every one of them findable.
    #[test]
    fn shrinks_once_few_entries_are_left() {
        let mut idx = Index::new();
        let hash_of = |loc: u32| u64::from(loc).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for loc in 0..100_000u32 {
            if idx.needs_rebuild() {
                idx.rebuild(hash_of);
            }
            idx.insert(hash_of(loc), loc);
        }
        let grown = idx.bytes();
        for loc in 0..100_000u32 {
            if loc % 20 != 0 {
                let (slot, _) = idx.find(hash_of(loc), |l| l == loc).unwrap();
                idx.remove_slot(slot);
            }
        }
        assert!(idx.oversized());
        idx.shrink(hash_of);
        assert!(!idx.oversized());
        assert!(idx.bytes() * 8 < grown, "{} of {grown} bytes", idx.bytes());
        assert_eq!(idx.len(), 5_000);
        for loc in 0..100_000u32 {
            assert_eq!(
                idx.find(hash_of(loc), |l| l == loc).is_some(),
                loc % 20 == 0,
                "loc {loc}"
            );
        }
    }
}
