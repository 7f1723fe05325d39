//! One cache's tombstones: keys deleted recently by a sidecar's warm-up,
//! which refuse its copies for a while.
//!
//! During a warm-up (`proxy::warmup`) the sidecar copies a moved key from
//! the node it left to its new node with `ms <key> … G` (an add). A copy
//! read the item before it was sent; if a delete of the key reached this
//! node in between, the add would bring the deleted value back. So the
//! sidecar's deletes here carry `G<ttl>` (`md <key> G<ttl>`): they leave a
//! tombstone, and a copy of a key with a live tombstone is refused, whatever
//! its shape (`Command::Copy`). Clients' own commands never look at
//! tombstones: a client's `add` after a delete stores as always.
//!
//! A replica's set (a "mirror", `ms … G E<w> MS`) carries the CAS its first
//! node gave the write, and that node orders every write of the key by it:
//! whatever was written before the delete there has a CAS no greater than
//! the item the delete removed, whatever came after a greater one. So the
//! sidecar's delete on a replica may name that CAS (`md <key> G<ttl> E<v>`):
//! the tombstone then refuses only the mirrors of writes from before the
//! delete (`w <= v`) and lets a later write through at once, instead of
//! leaving the key unreplicated for the whole `ttl`. Other copies are adds
//! that carry no such order, so any tombstone refuses them.
//!
//! The table is bounded. When it is full and nothing in it has expired, it
//! is emptied and every copy is refused until the longest tombstone it held
//! would have expired: a refused copy costs a miss, a lost tombstone could
//! cost a wrong value. A sidecar with `--replicas` leaves a tombstone on
//! every delete, and a full table refuses its mirrors too, which leaves
//! keys on one node only: the bound is sized for a busy cache's deletes
//! over a tombstone's life (about 3,000 a second for 10 s). It is not
//! counted against the cache's memory limit; at about 100 bytes a
//! tombstone it holds a few MiB at most, only for a cache that deletes that
//! much, and an empty one is a few words, so 10,000 caches per node still
//! fit.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::sync::lock;

/// Tombstones one cache holds at most.
const CAPACITY: usize = 32_768;
/// The longest a tombstone lives, whatever the sidecar asks.
pub const MAX_TTL: u64 = 600;

#[derive(Default)]
pub struct Tombstones {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    graves: HashMap<Bytes, Grave>,
    /// Every copy is refused until then (the table overflowed).
    blocked_until: u64,
}

/// One key's tombstone.
#[derive(Clone, Copy)]
struct Grave {
    /// The unix second until which it refuses copies.
    until: u64,
    /// The mirrors it refuses: those with a version up to this one, or
    /// every one (`None`).
    version: Option<u64>,
}

impl Grave {
    fn lives(&self, now: u64) -> bool {
        self.until > now
    }

    /// The grave two burials leave: the one that refuses more, for
    /// longer, so that neither lets through a copy the other refused.
    fn join(self, other: Grave) -> Grave {
        let version = match (self.version, other.version) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        Grave {
            until: self.until.max(other.until),
            version,
        }
    }
}

impl Tombstones {
    /// Leave a tombstone for `key` for `ttl` seconds from `now` (unix
    /// seconds), one more so that a second's worth of rounding never
    /// shortens it. With a `version`, it refuses only the mirrors up to
    /// that version; without, every one. A live tombstone of the key is
    /// joined, keeping whichever refuses more; an expired one is replaced.
    pub fn bury(&self, key: &Bytes, ttl: i64, version: Option<u64>, now: u64) {
        let until = now + u64::try_from(ttl).unwrap_or(0).min(MAX_TTL) + 1;
        let new = Grave { until, version };
        let mut inner = lock(&self.inner);
        if inner.graves.len() >= CAPACITY && !inner.graves.contains_key(key) {
            inner.graves.retain(|_, grave| grave.lives(now));
            if inner.graves.len() >= CAPACITY {
                let longest = inner.graves.values().map(|g| g.until).max().unwrap_or(0);
                inner.blocked_until = inner.blocked_until.max(longest).max(until);
                inner.graves = HashMap::new();
                return;
            }
        }
        let grave = inner.graves.entry(key.clone()).or_insert(new);
        *grave = match grave.lives(now) {
            true => grave.join(new),
            false => new,
        };
    }

    /// Whether a copy of `key` that is no mirror (an add, with a version or
    /// without) must be refused at `now`: any tombstone refuses it.
    pub fn refuses_copy(&self, key: &[u8], now: u64) -> bool {
        self.refuses(key, None, now)
    }

    /// Whether a replica's mirror of `key` with `version` must be refused
    /// at `now`: a tombstone refuses it unless it names a version and the
    /// mirror is newer.
    pub fn refuses_mirror(&self, key: &[u8], version: u64, now: u64) -> bool {
        self.refuses(key, Some(version), now)
    }

    fn refuses(&self, key: &[u8], mirror: Option<u64>, now: u64) -> bool {
        let inner = lock(&self.inner);
        if inner.blocked_until > now {
            return true;
        }
        inner.graves.get(key).is_some_and(|grave| {
            grave.lives(now)
                && match (mirror, grave.version) {
                    (Some(mirror), Some(buried)) => mirror <= buried,
                    _ => true,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_refuses_copies_until_it_expires() {
        let graves = Tombstones::default();
        let key = Bytes::from_static(b"k");
        assert!(!graves.refuses_copy(b"k", 100));
        graves.bury(&key, 10, None, 100);
        assert!(graves.refuses_copy(b"k", 100));
        assert!(
            graves.refuses_copy(b"k", 110),
            "a whole 10 s, rounding included"
        );
        assert!(!graves.refuses_copy(b"k", 111));
        assert!(!graves.refuses_copy(b"other", 100));
        graves.bury(&key, 100_000, None, 200);
        assert!(graves.refuses_copy(b"k", 200 + MAX_TTL));
        assert!(!graves.refuses_copy(b"k", 201 + MAX_TTL), "capped");
    }

    /// Full of live tombstones: the table empties and refuses every copy
    /// until the longest of them would have ended, never fewer.
    #[test]
    fn an_overflow_refuses_every_copy_for_as_long_as_any_tombstone() {
        let graves = Tombstones::default();
        for i in 0..CAPACITY {
            graves.bury(&Bytes::from(format!("k{i}")), 30, None, 1000);
        }
        graves.bury(&Bytes::from_static(b"one more"), 5, None, 1000);
        assert!(graves.refuses_copy(b"never buried", 1030));
        assert!(!graves.refuses_copy(b"never buried", 1031));
        assert!(graves.refuses_mirror(b"never buried", u64::MAX, 1030));
        // Expired ones make room without blocking anything.
        let graves = Tombstones::default();
        for i in 0..CAPACITY {
            graves.bury(&Bytes::from(format!("k{i}")), 1, None, 1000);
        }
        graves.bury(&Bytes::from_static(b"new"), 5, None, 2000);
        assert!(!graves.refuses_copy(b"k1", 2000));
        assert!(graves.refuses_copy(b"new", 2000));
    }

    /// A tombstone with a version refuses every add, and the mirrors up to
    /// its version; a newer mirror passes. One without refuses every copy.
    #[test]
    fn a_versioned_tombstone_refuses_only_older_mirrors() {
        let graves = Tombstones::default();
        let key = Bytes::from_static(b"k");
        graves.bury(&key, 10, Some(5), 100);
        assert!(graves.refuses_copy(b"k", 100));
        assert!(graves.refuses_mirror(b"k", 1, 100));
        assert!(graves.refuses_mirror(b"k", 5, 110));
        assert!(!graves.refuses_mirror(b"k", 6, 100));
        assert!(!graves.refuses_mirror(b"k", 5, 111), "expired");
        assert!(!graves.refuses_mirror(b"other", 1, 100));
        let graves = Tombstones::default();
        graves.bury(&key, 10, None, 100);
        assert!(graves.refuses_mirror(b"k", u64::MAX, 100));
        assert!(!graves.refuses_mirror(b"k", u64::MAX, 111));
    }

    /// A key buried twice keeps whichever refuses more: the later end, and
    /// no version over a version, else the greater; an expired tombstone
    /// leaves nothing to the next.
    #[test]
    fn burying_twice_keeps_the_stronger_refusal() {
        let graves = Tombstones::default();
        let key = Bytes::from_static(b"k");
        graves.bury(&key, 30, Some(5), 100);
        graves.bury(&key, 10, Some(9), 100);
        assert!(graves.refuses_mirror(b"k", 9, 130), "the later end");
        assert!(!graves.refuses_mirror(b"k", 10, 100));
        graves.bury(&key, 10, Some(7), 100);
        assert!(graves.refuses_mirror(b"k", 9, 100), "the greater version");
        graves.bury(&key, 1, None, 100);
        assert!(graves.refuses_mirror(b"k", 1000, 130), "no version wins");
        graves.bury(&key, 10, Some(3), 120);
        assert!(graves.refuses_mirror(b"k", 1000, 130));
        assert!(!graves.refuses_copy(b"k", 131));
        // Expired: the new tombstone alone decides.
        graves.bury(&key, 10, Some(3), 200);
        assert!(!graves.refuses_mirror(b"k", 4, 200));
        assert!(graves.refuses_mirror(b"k", 3, 200));
    }
}
