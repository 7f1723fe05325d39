//! One shard of a [`Store`](super::Store): a slab of compact entries, a hash
//! index over it, an intrusive LRU list, and byte accounting against the
//! shard's share of the cache's limit.
//!
//! Layout, chosen to keep the per-item overhead at [`PER_ITEM_OVERHEAD`]:
//! - `entries: Vec<Entry>` is kept dense. Removing an item moves the last entry
//!   into the hole (fixing its index slot and LRU neighbours), so there are no
//!   dead slots and the vector can shrink when the shard empties.
//! - `index: HashTable<u32>` maps a key's hash to an entry position; the key
//!   bytes live only once, at the front of the entry's `key ‖ value` box.
//! - The LRU is a doubly linked list threaded through the entries as `u32`
//!   positions: `head` is the most recently used, `tail` the next victim.

use std::hash::BuildHasher;
use std::mem::size_of;

use hashbrown::HashTable;

/// "No entry" in the LRU links.
const NIL: u32 = u32::MAX;

/// Entry flag: fetched at least once (memcached `ITEM_FETCHED`).
pub(super) const FETCHED: u8 = 1;
/// Entry flag: marked stale by a meta invalidation (`ITEM_STALE`).
pub(super) const STALE: u8 = 2;
/// Entry flag: a recache win was handed out (`ITEM_TOKEN_SENT`).
pub(super) const TOKEN_SENT: u8 = 4;

/// Bytes charged per index slot: a `u32` plus one control byte, divided by
/// hashbrown's load factor, which is between 7/16 (just grown) and 7/8
/// (about to grow): 5 / 0.66 on average, rounded up.
const INDEX_SLOT_CHARGE: usize = 8;

/// Per-item bytes charged on top of the `key ‖ value` allocation: the entry
/// itself (48 bytes on 64-bit targets) plus its share of the hash index.
pub const PER_ITEM_OVERHEAD: usize = size_of::<Entry>() + INDEX_SLOT_CHARGE;

/// What the system allocator really takes for an `n`-byte allocation: glibc
/// (and most size-class allocators) round the request plus an 8-byte chunk
/// header up to 16 bytes, with a 32-byte minimum. An empty box allocates
/// nothing.
pub fn alloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// The bytes an item with this key and value length is charged.
pub fn charge(key_len: usize, value_len: usize) -> usize {
    alloc_size(key_len + value_len) + PER_ITEM_OVERHEAD
}

/// One item. 48 bytes: a boxed `key ‖ value`, its metadata, and LRU links.
#[derive(Debug)]
pub(super) struct Entry {
    /// The key immediately followed by the value.
    data: Box<[u8]>,
    pub cas: u64,
    pub flags: u32,
    /// Absolute unix seconds; 0 never expires.
    pub exptime: u32,
    /// Unix seconds of the last store or bumping access (memcached `it->time`).
    pub time: u32,
    prev: u32,
    next: u32,
    key_len: u8,
    /// [`FETCHED`], [`STALE`], [`TOKEN_SENT`].
    pub bits: u8,
}

impl Entry {
    /// A new entry; the caller guarantees `key.len() <= 255`.
    pub fn new(key: &[u8], value: &[u8], flags: u32, exptime: u32, cas: u64, now: u32) -> Entry {
        Entry::from_parts(key, &[value], flags, exptime, cas, now)
    }

    /// A new entry whose value is the concatenation of `parts` (append,
    /// prepend) written straight into the single allocation.
    pub fn from_parts(
        key: &[u8],
        parts: &[&[u8]],
        flags: u32,
        exptime: u32,
        cas: u64,
        now: u32,
    ) -> Entry {
        let len = key.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut data = Vec::with_capacity(len);
        data.extend_from_slice(key);
        for p in parts {
            data.extend_from_slice(p);
        }
        Entry {
            data: data.into_boxed_slice(),
            cas,
            flags,
            exptime,
            time: now,
            prev: NIL,
            next: NIL,
            key_len: u8::try_from(key.len()).unwrap_or(u8::MAX),
            bits: 0,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }

    pub fn value(&self) -> &[u8] {
        &self.data[usize::from(self.key_len)..]
    }

    /// Overwrite the value in place (incr/decr that fits the old length).
    pub fn value_mut(&mut self) -> &mut [u8] {
        &mut self.data[usize::from(self.key_len)..]
    }

    /// The bytes this entry is charged against the budget.
    pub fn charge(&self) -> usize {
        alloc_size(self.data.len()) + PER_ITEM_OVERHEAD
    }

    /// Expired by TTL at `now` (memcached: `exptime != 0 && exptime <= now`).
    pub fn is_expired(&self, now: u64) -> bool {
        self.exptime != 0 && u64::from(self.exptime) <= now
    }
}

/// Why an entry was taken out while making room or sweeping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Removed {
    /// Live items evicted to make room.
    pub evicted: u64,
    /// Items removed because their TTL had passed.
    pub expired: u64,
    /// Items removed because a flush_all had invalidated them.
    pub flushed: u64,
}

/// The flush_all state a shard needs to tell a flushed item from a live one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Flush {
    /// memcached `settings.oldest_live`: 0 none.
    pub oldest_live: u64,
    /// memcached `settings.oldest_cas`: 0 none.
    pub oldest_cas: u64,
}

impl Flush {
    /// memcached's `item_is_flushed`.
    pub fn flushed(&self, e: &Entry, now: u64) -> bool {
        if self.oldest_live == 0 || self.oldest_live > now {
            return false;
        }
        u64::from(e.time) <= self.oldest_live
            || (self.oldest_cas != 0 && e.cas != 0 && e.cas < self.oldest_cas)
    }
}

pub(super) struct Shard<S> {
    entries: Vec<Entry>,
    index: HashTable<u32>,
    head: u32,
    tail: u32,
    bytes: usize,
    limit: usize,
    /// Next slab position the expiry sweep looks at.
    cursor: usize,
    hasher: S,
}

/// A slab position as the `u32` the index and links store.
fn pos(i: usize) -> u32 {
    // Shards never hold 2^32 entries: each costs more than 48 bytes and
    // a shard's budget is a share of an in-memory limit.
    u32::try_from(i).unwrap_or(NIL)
}

impl<S: BuildHasher> Shard<S> {
    pub fn new(limit: usize, hasher: S) -> Self {
        Shard {
            entries: Vec::new(),
            index: HashTable::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            limit,
            cursor: 0,
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn entry(&self, i: u32) -> &Entry {
        &self.entries[i as usize]
    }

    pub fn entry_mut(&mut self, i: u32) -> &mut Entry {
        &mut self.entries[i as usize]
    }

    /// The position of `key`, whose hash is `hash`, if present (expired or not).
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(hash, |&i| entries[i as usize].key() == key)
            .copied()
    }

    /// Move `i` to the head of the LRU.
    pub fn bump(&mut self, i: u32) {
        if self.head != i {
            self.unlink_lru(i);
            self.link_head(i);
        }
    }

    /// Take entry `i` out of the shard and return it.
    pub fn remove(&mut self, i: u32) -> Entry {
        let idx = i as usize;
        self.unlink_lru(i);
        let hash = self.hasher.hash_one(self.entries[idx].key());
        if let Ok(slot) = self.index.find_entry(hash, |&v| v == i) {
            slot.remove();
        }
        let last = pos(self.entries.len() - 1);
        if last != i {
            // The last entry moves into the hole: repoint its index slot and
            // its LRU neighbours.
            let moved_hash = self.hasher.hash_one(self.entries[last as usize].key());
            if let Some(slot) = self.index.find_mut(moved_hash, |&v| v == last) {
                *slot = i;
            }
            let (prev, next) = {
                let m = &self.entries[last as usize];
                (m.prev, m.next)
            };
            if prev == NIL {
                self.head = i;
            } else {
                self.entries[prev as usize].next = i;
            }
            if next == NIL {
                self.tail = i;
            } else {
                self.entries[next as usize].prev = i;
            }
        }
        let e = self.entries.swap_remove(idx);
        self.bytes -= e.charge();
        self.maybe_shrink();
        e
    }

    /// Evict from the LRU tail until `need` more bytes fit under the limit.
    /// Returns `None` (touching nothing) if `need` exceeds the whole limit.
    pub fn make_room(&mut self, need: usize, now: u64, flush: &Flush) -> Option<Removed> {
        if need > self.limit {
            return None;
        }
        let mut removed = Removed::default();
        while self.bytes + need > self.limit && self.tail != NIL {
            let victim = self.tail;
            let e = self.remove(victim);
            if flush.flushed(&e, now) {
                removed.flushed += 1;
            } else if e.is_expired(now) {
                removed.expired += 1;
            } else {
                removed.evicted += 1;
            }
        }
        Some(removed)
    }

    /// Evict until the shard is within its (possibly just lowered) limit.
    pub fn shrink_to_limit(&mut self, now: u64, flush: &Flush) -> Removed {
        self.make_room(0, now, flush).unwrap_or_default()
    }

    /// Insert `e`, whose key hashes to `hash` and is not present; the caller
    /// made room. It becomes the most recently used item.
    pub fn insert(&mut self, hash: u64, e: Entry) -> u32 {
        let i = pos(self.entries.len());
        self.bytes += e.charge();
        self.entries.push(e);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(hash, i, |&v| hasher.hash_one(entries[v as usize].key()));
        self.link_head(i);
        i
    }

    /// Look at up to `scan` slab positions from the sweep cursor, removing
    /// expired or flushed entries, at most `max` of them.
    pub fn sweep(&mut self, now: u64, flush: &Flush, scan: usize, max: usize) -> Removed {
        let mut removed = Removed::default();
        let mut n = 0;
        while n < scan && removed.expired + removed.flushed < max as u64 && !self.entries.is_empty()
        {
            if self.cursor >= self.entries.len() {
                self.cursor = 0;
            }
            let i = self.cursor;
            let e = &self.entries[i];
            let is_flushed = flush.flushed(e, now);
            if is_flushed || e.is_expired(now) {
                // The last entry moves into slot `i`: look at `i` again.
                self.remove(pos(i));
                if is_flushed {
                    removed.flushed += 1;
                } else {
                    removed.expired += 1;
                }
            } else {
                self.cursor += 1;
            }
            n += 1;
        }
        removed
    }

    /// Remove every flushed or expired entry among the first `scan` slab
    /// positions (all of them when `scan >= len`).
    pub fn purge(&mut self, now: u64, flush: &Flush, scan: usize) -> Removed {
        self.cursor = 0;
        self.sweep(now, flush, scan, usize::MAX)
    }

    fn unlink_lru(&mut self, i: u32) {
        let (prev, next) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        let e = &mut self.entries[i as usize];
        e.prev = NIL;
        e.next = NIL;
    }

    fn link_head(&mut self, i: u32) {
        let old = self.head;
        {
            let e = &mut self.entries[i as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.entries[old as usize].prev = i;
        }
        self.head = i;
    }

    /// Give memory back once the shard has mostly emptied, so that dead
    /// capacity does not hold resident memory the budget no longer counts.
    fn maybe_shrink(&mut self) {
        let len = self.entries.len();
        if self.entries.capacity() > 64 && len < self.entries.capacity() / 4 {
            self.entries.shrink_to(len * 2);
        }
        if self.index.capacity() > 64 && len < self.index.capacity() / 4 {
            let (entries, hasher) = (&self.entries, &self.hasher);
            self.index
                .shrink_to(len * 2, |&v| hasher.hash_one(entries[v as usize].key()));
        }
    }

    /// Keys from most to least recently used (tests).
    #[cfg(test)]
    pub fn lru_keys(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = self.head;
        while i != NIL {
            out.push(self.entries[i as usize].key().to_vec());
            i = self.entries[i as usize].next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(size_of::<Entry>(), 48);
        assert_eq!(PER_ITEM_OVERHEAD, 56);
    }

    #[test]
    fn alloc_size_follows_glibc_chunks() {
        assert_eq!(alloc_size(0), 0);
        assert_eq!(alloc_size(1), 32);
        assert_eq!(alloc_size(24), 32);
        assert_eq!(alloc_size(25), 48);
        assert_eq!(alloc_size(115), 128);
        assert_eq!(alloc_size(120), 128);
        assert_eq!(alloc_size(121), 144);
    }

    fn shard() -> Shard<RandomState> {
        Shard::new(1 << 20, RandomState::new())
    }

    fn put(s: &mut Shard<RandomState>, key: &str) -> u32 {
        let h = s.hasher.hash_one(key.as_bytes());
        s.insert(h, Entry::new(key.as_bytes(), b"v", 0, 0, 1, 0))
    }

    fn has(s: &Shard<RandomState>, key: &str) -> bool {
        let h = s.hasher.hash_one(key.as_bytes());
        s.find(h, key.as_bytes()).is_some()
    }

    #[test]
    fn swap_remove_keeps_index_and_lru_consistent() {
        let mut s = shard();
        for k in ["a", "b", "c", "d"] {
            put(&mut s, k);
        }
        assert_eq!(s.lru_keys(), [b"d", b"c", b"b", b"a"]);
        // Remove "b" (slot 1): "d" (last slot) moves into it.
        let h = s.hasher.hash_one(b"b".as_slice());
        let i = s.find(h, b"b").expect("b present");
        assert_eq!(s.remove(i).key(), b"b");
        assert!(!has(&s, "b"));
        for k in ["a", "c", "d"] {
            assert!(has(&s, k), "{k} still found");
        }
        assert_eq!(s.lru_keys(), [b"d", b"c", b"a"]);
        let h = s.hasher.hash_one(b"a".as_slice());
        let a = s.find(h, b"a").expect("a present");
        s.bump(a);
        assert_eq!(s.lru_keys(), [b"a", b"d", b"c"]);
        while s.len() > 0 {
            s.remove(0);
        }
        assert_eq!(s.bytes(), 0);
        assert!(s.lru_keys().is_empty());
    }
}
