//! One cache's tombstones: keys deleted recently by a sidecar's warm-up,
//! which refuse its copies for a while.
//!
//! During a warm-up (`proxy::warmup`) the sidecar copies a moved key from
//! the node it left to its new node with `ms <key> … G` (an add). A copy
//! read the item before it was sent; if a delete of the key reached this
//! node in between, the add would bring the deleted value back. So the
//! sidecar's deletes here carry `G<ttl>` (`md <key> G<ttl>`): they leave a
//! tombstone, and a copy of a key with a live tombstone is refused, whatever
//! its shape (`Command::Copy`: a replica's versioned set too). Clients' own
//! commands never look at tombstones: a client's `add` after a delete
//! stores as always.
//!
//! The table is bounded. When it is full and nothing in it has expired, it
//! is emptied and every copy is refused until the longest tombstone it held
//! would have expired: a refused copy costs a miss, a lost tombstone could
//! cost a wrong value. It is not counted against the cache's memory limit;
//! its bound keeps it to a few hundred KiB at most, and an empty one is a
//! few words, so 10,000 caches per node still fit.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::sync::lock;

/// Tombstones one cache holds at most.
const CAPACITY: usize = 2048;
/// The longest a tombstone lives, whatever the sidecar asks.
pub const MAX_TTL: u64 = 600;

#[derive(Default)]
pub struct Tombstones {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Key → the unix second until which it refuses copies.
    graves: HashMap<Bytes, u64>,
    /// Every copy is refused until then (the table overflowed).
    blocked_until: u64,
}

impl Tombstones {
    /// Leave a tombstone for `key` for `ttl` seconds from `now` (unix
    /// seconds), one more so that a second's worth of rounding never
    /// shortens it.
    pub fn bury(&self, key: &Bytes, ttl: i64, now: u64) {
        let until = now + u64::try_from(ttl).unwrap_or(0).min(MAX_TTL) + 1;
        let mut inner = lock(&self.inner);
        if inner.graves.len() >= CAPACITY && !inner.graves.contains_key(key) {
            inner.graves.retain(|_, until| *until > now);
            if inner.graves.len() >= CAPACITY {
                let longest = inner.graves.values().copied().max().unwrap_or(0);
                inner.blocked_until = inner.blocked_until.max(longest).max(until);
                inner.graves = HashMap::new();
                return;
            }
        }
        let grave = inner.graves.entry(key.clone()).or_insert(0);
        *grave = (*grave).max(until);
    }

    /// Whether a copy of `key` must be refused at `now`.
    pub fn refuses(&self, key: &[u8], now: u64) -> bool {
        let inner = lock(&self.inner);
        if inner.blocked_until > now {
            return true;
        }
        inner.graves.get(key).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_refuses_copies_until_it_expires() {
        let graves = Tombstones::default();
        let key = Bytes::from_static(b"k");
        assert!(!graves.refuses(b"k", 100));
        graves.bury(&key, 10, 100);
        assert!(graves.refuses(b"k", 100));
        assert!(graves.refuses(b"k", 110), "a whole 10 s, rounding included");
        assert!(!graves.refuses(b"k", 111));
        assert!(!graves.refuses(b"other", 100));
        graves.bury(&key, 100_000, 200);
        assert!(graves.refuses(b"k", 200 + MAX_TTL));
        assert!(!graves.refuses(b"k", 201 + MAX_TTL), "capped");
    }

    /// Full of live tombstones: the table empties and refuses every copy
    /// until the longest of them would have ended, never fewer.
    #[test]
    fn an_overflow_refuses_every_copy_for_as_long_as_any_tombstone() {
        let graves = Tombstones::default();
        for i in 0..CAPACITY {
            graves.bury(&Bytes::from(format!("k{i}")), 30, 1000);
        }
        graves.bury(&Bytes::from_static(b"one more"), 5, 1000);
        assert!(graves.refuses(b"never buried", 1030));
        assert!(!graves.refuses(b"never buried", 1031));
        // Expired ones make room without blocking anything.
        let graves = Tombstones::default();
        for i in 0..CAPACITY {
            graves.bury(&Bytes::from(format!("k{i}")), 1, 1000);
        }
        graves.bury(&Bytes::from_static(b"new"), 5, 2000);
        assert!(!graves.refuses(b"k1", 2000));
        assert!(graves.refuses(b"new", 2000));
    }
}
