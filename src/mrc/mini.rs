//! One miniature cache: the store's eviction policy (S3-FIFO over items,
//! `node::store::shard`) at one size of the curve, scaled down by the
//! sample rate, over the sampled keys only (miniature simulation,
//! Waldspurger et al., ATC '17).
//!
//! It mirrors the store's shard item for item, without its segments:
//!
//! - a new item enters the small queue; eviction takes from small while
//!   small holds at least [`SMALL_SHARE`] of the capacity (or main is empty),
//!   else from main, oldest first;
//! - a read or a touch gives a credit, up to [`MAX_CREDIT`]; an item leaving
//!   small with a credit goes to main with none, one leaving main with a
//!   credit goes back to main's tail with one less; one without is evicted;
//! - a rewrite keeps the item's queue and credit and moves it to that
//!   queue's tail (the store writes the new copy to the write segment).
//!
//! Keys are slot numbers of the tracker's sample ([`super::Slot`]); their
//! sizes come from there. The queues are rings of slot numbers with lazy
//! deletion: a key that moves or leaves keeps its old entries, and a
//! per-key count of entries in each ring tells them apart (within one
//! ring, a key's live entry is its newest), so that a removal is O(1).

use std::collections::VecDeque;
use std::mem::size_of;

use super::Slot;
pub use crate::node::store::{MAX_CREDIT, SMALL_SHARE};

/// A key's state, one byte: bits 0–1 its queue ([`NOT_IN`], [`SMALL`],
/// [`MAIN`]), bits 2–3 its credit, bits 4–5 and 6–7 its entries in the
/// small and the main ring (at most 3; a ring is compacted before a fourth).
const NOT_IN: u8 = 0;
const SMALL: u8 = 1;
const MAIN: u8 = 2;
const QUEUE_MASK: u8 = 3;
const CREDIT_SHIFT: u8 = 2;
const MAX_ENTRIES: u8 = 3;

fn queue(st: u8) -> u8 {
    st & QUEUE_MASK
}

fn credit(st: u8) -> u8 {
    (st >> CREDIT_SHIFT) & 3
}

fn with_credit(st: u8, c: u8) -> u8 {
    (st & !(3 << CREDIT_SHIFT)) | (c << CREDIT_SHIFT)
}

fn entries_shift(q: u8) -> u8 {
    2 + 2 * q
}

fn entries(st: u8, q: u8) -> u8 {
    (st >> entries_shift(q)) & 3
}

fn with_entries(st: u8, q: u8, n: u8) -> u8 {
    (st & !(3 << entries_shift(q))) | (n << entries_shift(q))
}

/// The ring length at which stale entries are dropped: memory stays within
/// 1.5 entries a key, and a compaction, O(ring), comes after at least half
/// as many pushes.
fn slack(live: u32) -> usize {
    live as usize * 3 / 2 + 16
}

/// Ring index of a queue.
fn ring(q: u8) -> usize {
    usize::from(q - 1)
}

pub(super) struct Mini {
    /// Bytes it holds at most: its size × the sample rate.
    capacity: u64,
    used: u64,
    small_bytes: u64,
    /// The small and the main queue, oldest first, with stale entries.
    rings: [VecDeque<u16>; 2],
    /// Keys in each queue.
    live: [u32; 2],
    /// By slot number; grows with the sample.
    state: Vec<u8>,
    /// Weight of the reads that hit, in each of the tracker's two epochs.
    pub hits: [f64; 2],
    /// The sum, over those hits, of the key's reads so far (for the
    /// tracker's adjustment, `Core::curve`).
    pub hit_moment: [f64; 2],
}

impl Mini {
    pub fn new(capacity: u64) -> Mini {
        Mini {
            capacity,
            used: 0,
            small_bytes: 0,
            rings: [VecDeque::new(), VecDeque::new()],
            live: [0, 0],
            state: Vec::new(),
            hits: [0.0, 0.0],
            hit_moment: [0.0, 0.0],
        }
    }

    fn st(&self, s: usize) -> u8 {
        self.state.get(s).copied().unwrap_or(0)
    }

    fn set_st(&mut self, s: usize, st: u8) {
        if s >= self.state.len() {
            self.state.resize(s + 1, 0);
        }
        self.state[s] = st;
    }

    pub fn holds(&self, s: usize) -> bool {
        queue(self.st(s)) != NOT_IN
    }

    /// A read of key `s`: a hit (weight `w` in `epoch`) gives a credit; a
    /// miss fills the key in, as the client does after a miss, if its size
    /// is known.
    pub fn read(&mut self, s: usize, w: f64, epoch: usize, slots: &[Slot]) {
        if self.holds(s) {
            self.hits[epoch] += w;
            self.hit_moment[epoch] += f64::from(slots[s].reads);
            self.touch(s);
        } else {
            self.insert(s, slots);
        }
    }

    /// A credit for key `s` if held (a read, a touch, an `add` over it).
    pub fn touch(&mut self, s: usize) {
        let st = self.st(s);
        if queue(st) != NOT_IN {
            self.set_st(s, with_credit(st, (credit(st) + 1).min(MAX_CREDIT)));
        }
    }

    /// A store of key `s` (its new size already in `slots`, `old` the size
    /// this cache holds it at): a rewrite moves it to its queue's tail with
    /// its credit, a new key enters small.
    pub fn write(&mut self, s: usize, old: u64, slots: &[Slot]) {
        let q = queue(self.st(s));
        if q == NOT_IN {
            self.insert(s, slots);
            return;
        }
        self.account(s, q, old, slots);
        self.push(s, q);
        self.evict_to_fit(0, slots);
    }

    /// Key `s` changed size in place (its new size in `slots`, `old` the
    /// size this cache holds it at).
    pub fn resize(&mut self, s: usize, old: u64, slots: &[Slot]) {
        let q = queue(self.st(s));
        if q != NOT_IN {
            self.account(s, q, old, slots);
            self.evict_to_fit(0, slots);
        }
    }

    fn account(&mut self, s: usize, q: u8, old: u64, slots: &[Slot]) {
        let new = u64::from(slots[s].size);
        self.used = self.used - old + new;
        if q == SMALL {
            self.small_bytes = self.small_bytes - old + new;
        }
    }

    fn insert(&mut self, s: usize, slots: &[Slot]) {
        let size = u64::from(slots[s].size);
        if size == 0 || size > self.capacity {
            return;
        }
        self.evict_to_fit(size, slots);
        let st = self.st(s);
        self.set_st(s, with_credit((st & !QUEUE_MASK) | SMALL, 0));
        self.push(s, SMALL);
        self.live[ring(SMALL)] += 1;
        self.used += size;
        self.small_bytes += size;
    }

    /// Key `s`, held at `size` bytes, is gone.
    pub fn remove(&mut self, s: usize, size: u64) {
        let st = self.st(s);
        let q = queue(st);
        if q == NOT_IN {
            return;
        }
        self.used -= size;
        if q == SMALL {
            self.small_bytes -= size;
        }
        self.live[ring(q)] -= 1;
        self.set_st(s, with_credit(st & !QUEUE_MASK, 0));
    }

    /// Every key is gone (`flush_all`); the hit counts stay.
    pub fn clear(&mut self) {
        self.rings.iter_mut().for_each(VecDeque::clear);
        self.state.clear();
        self.live = [0, 0];
        self.used = 0;
        self.small_bytes = 0;
    }

    /// A new capacity (the sample rate or the limit changed).
    pub fn set_capacity(&mut self, capacity: u64, slots: &[Slot]) {
        self.capacity = capacity;
        self.evict_to_fit(0, slots);
    }

    /// Evict until `extra` more bytes fit.
    fn evict_to_fit(&mut self, extra: u64, slots: &[Slot]) {
        while self.used + extra > self.capacity && self.live != [0, 0] {
            self.evict_one(slots);
        }
    }

    /// The store's `evict_one`, for one item.
    fn evict_one(&mut self, slots: &[Slot]) {
        let small = self.live[ring(SMALL)] > 0
            && (self.small_bytes >= self.capacity / SMALL_SHARE as u64
                || self.live[ring(MAIN)] == 0);
        let q = if small { SMALL } else { MAIN };
        let Some(s) = self.pop(q) else {
            // Unreachable: a queue with live keys has their entries.
            debug_assert!(false, "queue {q} has no live entry");
            self.live[ring(q)] = 0;
            return;
        };
        let st = self.st(s);
        let size = u64::from(slots[s].size);
        match (credit(st), q) {
            (0, _) => {
                self.used -= size;
                if q == SMALL {
                    self.small_bytes -= size;
                }
                self.live[ring(q)] -= 1;
                self.set_st(s, st & !QUEUE_MASK);
            }
            (_, SMALL) => {
                // Promoted with a clean slate.
                self.small_bytes -= size;
                self.live[ring(SMALL)] -= 1;
                self.live[ring(MAIN)] += 1;
                self.set_st(s, with_credit((st & !QUEUE_MASK) | MAIN, 0));
                self.push(s, MAIN);
            }
            (c, _) => {
                self.set_st(s, with_credit(st, c - 1));
                self.push(s, MAIN);
            }
        }
    }

    /// The oldest live key of queue `q`, taken off its ring.
    fn pop(&mut self, q: u8) -> Option<usize> {
        while let Some(e) = self.rings[ring(q)].pop_front() {
            let s = usize::from(e);
            let st = self.st(s);
            let n = entries(st, q) - 1;
            self.set_st(s, with_entries(st, q, n));
            // A newer entry in this ring, or not in this queue: stale.
            if n == 0 && queue(st) == q {
                return Some(s);
            }
        }
        None
    }

    /// Key `s` (in queue `q`) to the tail of `q`'s ring.
    fn push(&mut self, s: usize, q: u8) {
        let r = ring(q);
        if entries(self.st(s), q) == MAX_ENTRIES || self.rings[r].len() >= slack(self.live[r]) {
            self.compact(q);
        }
        self.rings[r].push_back(s as u16);
        let st = self.st(s);
        self.set_st(s, with_entries(st, q, entries(st, q) + 1));
    }

    /// Drop `q`'s stale entries: keep each of its keys' newest.
    fn compact(&mut self, q: u8) {
        let r = ring(q);
        let old = std::mem::take(&mut self.rings[r]);
        for &e in &old {
            let st = self.st(usize::from(e));
            self.set_st(usize::from(e), with_entries(st, q, 0));
        }
        let mut kept: Vec<u16> = Vec::with_capacity(self.live[r] as usize);
        for &e in old.iter().rev() {
            let st = self.st(usize::from(e));
            if queue(st) == q && entries(st, q) == 0 {
                self.set_st(usize::from(e), with_entries(st, q, 1));
                kept.push(e);
            }
        }
        // Room for the stale entries until the next compaction, so that the
        // ring is not doubled in between.
        let mut ring = VecDeque::with_capacity(slack(self.live[r]) + 1);
        ring.extend(kept.iter().rev());
        self.rings[r] = ring;
    }

    pub fn heap_bytes(&self) -> usize {
        self.state.capacity()
            + self
                .rings
                .iter()
                .map(|r| r.capacity() * size_of::<u16>())
                .sum::<usize>()
    }

    /// Its bytes and counts against its keys' states and sizes.
    #[cfg(test)]
    pub fn check(&self, slots: &[Slot], live_slot: impl Fn(usize) -> bool) {
        let mut used = 0;
        let mut small = 0;
        let mut live = [0u32; 2];
        for (s, &st) in self.state.iter().enumerate() {
            let q = queue(st);
            if q == NOT_IN {
                continue;
            }
            assert!(live_slot(s), "slot {s} is free but held");
            let size = u64::from(slots[s].size);
            used += size;
            if q == SMALL {
                small += size;
            }
            live[ring(q)] += 1;
            for rq in [SMALL, MAIN] {
                let n = self.rings[ring(rq)]
                    .iter()
                    .filter(|&&e| usize::from(e) == s)
                    .count();
                assert_eq!(n, usize::from(entries(st, rq)), "slot {s}");
            }
            assert!(entries(st, q) >= 1, "slot {s} is held off its ring");
        }
        assert_eq!(
            (used, small, live),
            (self.used, self.small_bytes, self.live)
        );
        assert!(self.used <= self.capacity);
    }
}
