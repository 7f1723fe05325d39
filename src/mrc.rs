//! What-if memory: one cache's LRU miss-ratio curve, from a small spatial
//! sample of its keys.
//!
//! This is SHARDS (Waldspurger et al., FAST '15) in its fixed-size form,
//! with reuse distances in bytes because a cache's limit is in bytes:
//!
//! - A key is in the sample when `hash(key) <= threshold`, with foldhash
//!   (its `quality` variant) keyed by 64 random bits per tracker, from the
//!   OS-seeded `rand::random`: a tenant cannot tell which of its keys are
//!   sampled, so it cannot aim keys at the sample (and could only skew its
//!   own cache's curve if it did). Not SipHash: callgrind counted about 215
//!   instructions for SipHash-1-3 of a 14-byte key, as much again as the
//!   store's own lookup hash, and foldhash a small fraction of that
//!   (`benches/WHATIF.md`). The sample rate is
//!   `R = (threshold + 1) / 2^64`.
//! - At most `max_keys` sampled keys are tracked. A new sampled key over
//!   budget evicts the one with the largest hash and lowers the threshold
//!   below it, so the tracked set is always exactly the keys under the
//!   threshold: the rate only goes down.
//! - On a read of a sampled key, its reuse distance is its own size plus
//!   the sizes of the distinct sampled keys touched since its previous
//!   access, scaled by `1/R`: an LRU of `X` bytes would have hit iff that
//!   distance is at most `X`. A Fenwick tree over a ring of access
//!   timestamps, holding each tracked key's size at its last access, makes
//!   that sum `O(log S)`.
//! - Each sampled read adds weight `1/R` to a log-bucketed histogram of
//!   distances (the estimate of how many reads it stands for), which is
//!   SHARDS' rescaling of the histogram when `R` drops, done up front. Keys
//!   never seen, removed, or never stored count as infinitely far.
//! - SHARDS-adj: the histogram's total weight is compared with the reads
//!   actually counted, and the difference goes to the smallest distance
//!   (it comes mostly from hot keys falling in or out of the sample).
//!
//! Only reads (gets, hit or miss) are hit-or-miss events. Writes (sets and
//! the other commands that store or touch an item) move the key to the top
//! and set its size, as they do in the store's LRU, but a set after a miss
//! must not count as a hit.
//!
//! Accuracy (see the tests, against an exact byte-budget LRU): within 0.03
//! of the real hit rate at 1/64 to 1/2 of a Zipf 0.99 trace's footprint and
//! on a looping scan. The error grows at sizes that span only a handful of
//! sampled keys (a cache holding under 1% of its keys): the distance
//! estimate is then noisy, and a hot key in or out of the sample weighs a
//! lot. The merged curve of several nodes is better than one node's, as it
//! draws on every node's sample.
//!
//! A key outside the sample costs one hash, one relaxed atomic load and a
//! compare (plus a relaxed counter for reads); only sampled keys take the
//! tracker's lock. [`Tracker::heap_bytes`] stays under 64 KiB with the
//! default [`MAX_KEYS`].

mod merge;
#[cfg(test)]
mod tests;

use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use foldhash::quality::FixedState;
use serde::{Deserialize, Serialize};

pub use self::merge::merge;
use crate::clock::unix_now;

/// Sampled keys tracked per cache by default: the most that keeps the
/// tracker under 64 KiB (see the footprint test).
pub const MAX_KEYS: usize = 2048;
/// A curve needs at least this many sampled reads to be trusted.
pub const MIN_SAMPLED_ACCESSES: u64 = 500;
/// ... and this many sampled keys, unless every key is sampled.
pub const MIN_SAMPLED_KEYS: u64 = 200;
/// Seconds between two [`Tracker::rotate_if_due`] rotations: a curve covers
/// the last 10 to 20 minutes.
pub const ROTATE_EVERY: u64 = 600;
/// The sizes a node reports a curve at, as multiples of the cache's limit
/// (at least 0.25× to 8×, and enough points between to draw it).
pub const MULTIPLES: [f64; 13] = [
    0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0,
];

/// `limit × m` for each of [`MULTIPLES`].
pub fn sizes_for(limit: u64) -> Vec<u64> {
    MULTIPLES
        .iter()
        .map(|m| (limit as f64 * m).round() as u64)
        .collect()
}

/// Histogram buckets per doubling of distance (about 9% wide each).
const STEPS_PER_OCTAVE: usize = 8;
/// Distances below `2^MIN_LOG2` bytes share the first bucket.
const MIN_LOG2: usize = 8;
/// Distances of `2^MAX_LOG2` bytes (1 TiB) and more count as misses.
const MAX_LOG2: usize = 40;
const BUCKETS: usize = 1 + (MAX_LOG2 - MIN_LOG2) * STEPS_PER_OCTAVE;
/// "No slot" in the ring and the index.
const NONE: u16 = u16::MAX;
/// Sizes in the recency tree are counted in 4-byte units, rounded up. Item
/// charges are any number of bytes (`store::charge`: packed in segments);
/// 8-byte units overstated them by 3.5 bytes on average, enough to move
/// the curve's smallest points by 0.0005. 4 keeps `u32` sums exact below
/// 16 GiB of tracked items (2048 keys of 8 MiB).
const UNIT: u64 = 4;

/// A size in [`UNIT`]s, rounded up.
fn units(size: u32) -> u32 {
    size.div_ceil(UNIT as u32)
}

/// The predicted hit rate of a cache at several sizes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// `(size in bytes, predicted read hit rate)`, by increasing size.
    pub points: Vec<(u64, f64)>,
    /// Keys in the sample now.
    pub sampled_keys: u64,
    /// Reads of sampled keys in the window.
    pub sampled_accesses: u64,
    /// All reads in the window (the window's size).
    pub accesses_total: u64,
    /// The fraction of keys sampled now.
    pub sample_rate: f64,
}

impl Curve {
    /// Whether the sample is big enough to draw the curve from: enough
    /// sampled reads, and enough sampled keys unless every key is sampled
    /// (then the curve is exact).
    pub fn trustworthy(&self) -> bool {
        self.sampled_accesses >= MIN_SAMPLED_ACCESSES
            && (self.sample_rate >= 1.0 || self.sampled_keys >= MIN_SAMPLED_KEYS)
    }

    /// The hit rate at `size`, interpolated between the points (linearly
    /// in log size; from zero below the first point; flat after the last).
    pub fn hit_rate_at(&self, size: u64) -> f64 {
        let mut below = (0u64, 0.0f64);
        for &(s, h) in &self.points {
            if s == size {
                return h;
            }
            if s > size {
                let (s0, h0) = below;
                let t = if s0 == 0 {
                    size as f64 / s as f64
                } else {
                    (size as f64 / s0 as f64).ln() / (s as f64 / s0 as f64).ln()
                };
                return h0 + (h - h0) * t;
            }
            below = (s, h);
        }
        below.1
    }
}

/// A curve as the node's admin API and `memgate analytics` show it (the
/// `what_if` object): the hit rate at each of `sizes`, with the sample it
/// comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    /// The cache's memory limit now, in bytes.
    pub limit: u64,
    /// Bytes, increasing.
    pub sizes: Vec<u64>,
    /// The predicted read hit rate (0 to 1) at each size.
    pub hit_rates: Vec<f64>,
    pub sampled_keys: u64,
    pub sampled_accesses: u64,
    pub accesses_total: u64,
    pub sample_rate: f64,
    /// Seconds of traffic the curve covers.
    pub window_seconds: u64,
    /// Whether the sample is big enough ([`Curve::trustworthy`]).
    pub trustworthy: bool,
}

impl WhatIf {
    pub fn new(limit: u64, curve: &Curve, window_seconds: u64) -> WhatIf {
        WhatIf {
            limit,
            sizes: curve.points.iter().map(|p| p.0).collect(),
            hit_rates: curve.points.iter().map(|p| p.1).collect(),
            sampled_keys: curve.sampled_keys,
            sampled_accesses: curve.sampled_accesses,
            accesses_total: curve.accesses_total,
            sample_rate: curve.sample_rate,
            window_seconds,
            trustworthy: curve.trustworthy(),
        }
    }

    /// The curve back from its JSON form (for [`merge`]).
    pub fn curve(&self) -> Curve {
        Curve {
            points: self
                .sizes
                .iter()
                .copied()
                .zip(self.hit_rates.iter().copied())
                .collect(),
            sampled_keys: self.sampled_keys,
            sampled_accesses: self.sampled_accesses,
            accesses_total: self.accesses_total,
            sample_rate: self.sample_rate,
        }
    }

    /// The predicted hit rate at `size` bytes.
    pub fn hit_rate_at(&self, size: u64) -> f64 {
        self.curve().hit_rate_at(size)
    }

    /// A cache's curve from its nodes' curves ([`merge`]), at
    /// [`MULTIPLES`] of the sum of their limits.
    pub fn merged(nodes: &[WhatIf]) -> WhatIf {
        let limit = nodes.iter().map(|w| w.limit).sum();
        let parts: Vec<(Curve, u64)> = nodes.iter().map(|w| (w.curve(), w.limit)).collect();
        let curve = merge(&parts, &sizes_for(limit));
        let window = nodes.iter().map(|w| w.window_seconds).max().unwrap_or(0);
        WhatIf::new(limit, &curve, window)
    }
}

/// One cache's tracker. `Send + Sync`; every method takes `&self`.
pub struct Tracker<S = FixedState> {
    hasher: S,
    /// [`Core::threshold`], readable without the lock.
    threshold: AtomicU64,
    /// Every read, sampled or not.
    reads: AtomicU64,
    /// Unix seconds when the current window began (the last rotation) and
    /// when the previous one did: the curve covers the time since the latter.
    rotated_at: AtomicU64,
    window_from: AtomicU64,
    core: Mutex<Core>,
}

impl Tracker {
    /// A tracker of [`MAX_KEYS`] keys with a random hash key.
    pub fn new() -> Tracker {
        Tracker::with_hasher(MAX_KEYS, FixedState::with_seed(rand::random()))
    }
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

impl<S: BuildHasher> Tracker<S> {
    /// A tracker of at most `max_keys` sampled keys (at least 1, less than
    /// 65535 × 2/3 so that slot numbers fit a `u16`).
    pub fn with_hasher(max_keys: usize, hasher: S) -> Tracker<S> {
        let core = Core::new(max_keys.clamp(1, 40_000));
        let now = unix_now();
        Tracker {
            hasher,
            threshold: AtomicU64::new(core.threshold),
            reads: AtomicU64::new(0),
            rotated_at: AtomicU64::new(now),
            window_from: AtomicU64::new(now),
            core: Mutex::new(core),
        }
    }

    /// The key's hash if it is in the sample: the whole cost for the others.
    #[inline]
    fn sampled(&self, key: &[u8]) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        (hash <= self.threshold.load(Ordering::Relaxed)).then_some(hash)
    }

    /// A read of `key` (get, gets, gat, meta get; hit or miss): a
    /// hit-or-miss event. `size_bytes` is the item's charge on a hit, 0 on
    /// a miss (the key keeps the size it was last stored with).
    #[inline]
    pub fn record(&self, key: &[u8], size_bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(hash) = self.sampled(key) {
            self.slow(|core| core.access(hash, size_bytes, true));
        }
    }

    /// A write of `key` (set, add, replace, append, prepend, cas, incr,
    /// decr, touch) that left an item of `size_bytes`: moves it to the top
    /// like the LRU does, without counting as a read.
    #[inline]
    pub fn record_write(&self, key: &[u8], size_bytes: u64) {
        if let Some(hash) = self.sampled(key) {
            self.slow(|core| core.access(hash, size_bytes, false));
        }
    }

    /// The item is gone (delete, expiry, eviction by a refused set): it no
    /// longer counts toward other keys' distances, and its next read is a
    /// miss at every size.
    #[inline]
    pub fn remove(&self, key: &[u8]) {
        if let Some(hash) = self.sampled(key) {
            self.slow(|core| core.remove(hash));
        }
    }

    /// Every item is gone (`flush_all`): forget the tracked keys, keep the
    /// histogram and the sample rate.
    pub fn flush(&self) {
        self.slow(Core::flush);
    }

    /// Start a new window: the curve then covers the accesses since the
    /// previous call to `rotate`, so calling it every `W` seconds makes a
    /// window of `W` to `2W` seconds.
    pub fn rotate(&self) {
        let reads = self.reads.load(Ordering::Relaxed);
        self.slow(|core| core.rotate(reads));
    }

    /// [`Tracker::rotate`] when [`ROTATE_EVERY`] seconds have passed since
    /// the last rotation (`now` in unix seconds); called once a second.
    pub fn rotate_if_due(&self, now: u64) {
        let last = self.rotated_at.load(Ordering::Relaxed);
        if now >= last.saturating_add(ROTATE_EVERY) {
            self.window_from.store(last, Ordering::Relaxed);
            self.rotated_at.store(now, Ordering::Relaxed);
            self.rotate();
        }
    }

    /// Seconds the curve covers at `now`.
    pub fn window_seconds(&self, now: u64) -> u64 {
        now.saturating_sub(self.window_from.load(Ordering::Relaxed))
    }

    /// The curve at [`MULTIPLES`] of `limit`, as the admin API shows it.
    pub fn what_if(&self, limit: u64, now: u64) -> WhatIf {
        WhatIf::new(
            limit,
            &self.curve(&sizes_for(limit)),
            self.window_seconds(now),
        )
    }

    /// The predicted hit rate at each of `sizes` (sorted, duplicates
    /// dropped), with the sample's size.
    pub fn curve(&self, sizes: &[u64]) -> Curve {
        let reads = self.reads.load(Ordering::Relaxed);
        self.lock().curve(sizes, reads)
    }

    /// The tracker's heap memory, from its buffers' capacities (fixed at
    /// construction: nothing grows).
    pub fn heap_bytes(&self) -> usize {
        self.lock().heap_bytes()
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        crate::sync::lock(&self.core)
    }

    fn slow(&self, f: impl FnOnce(&mut Core)) {
        let mut core = self.lock();
        f(&mut core);
        self.threshold.store(core.threshold, Ordering::Relaxed);
    }
}

/// One tracked key.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    /// The item's charge; 0 when the key is not stored (read but never set).
    size: u32,
    /// The ring position of its last access.
    time: u16,
    /// Its position in the max-heap.
    heap_pos: u16,
}

/// One window's share of the histogram.
struct Epoch {
    /// Weight of reads by distance bucket.
    buckets: Vec<f64>,
    /// Weight of reads that miss at every size.
    cold: f64,
    /// Sum of every weight added (`buckets` + `cold`).
    weight: f64,
    /// Sampled reads.
    sampled: u64,
}

impl Epoch {
    fn new() -> Epoch {
        Epoch {
            buckets: vec![0.0; BUCKETS],
            cold: 0.0,
            weight: 0.0,
            sampled: 0,
        }
    }

    fn clear(&mut self) {
        self.buckets.fill(0.0);
        self.cold = 0.0;
        self.weight = 0.0;
        self.sampled = 0;
    }

    fn add(&mut self, distance: Option<f64>, weight: f64) {
        match distance.and_then(bucket) {
            Some(b) => self.buckets[b] += weight,
            None => self.cold += weight,
        }
        self.weight += weight;
        self.sampled += 1;
    }
}

/// `(size, hit_rate(size))` for `sizes` sorted, without duplicates.
fn points(sizes: &[u64], hit_rate: impl Fn(u64) -> f64) -> Vec<(u64, f64)> {
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.into_iter().map(|s| (s, hit_rate(s))).collect()
}

/// The histogram bucket of a distance in bytes; None beyond the last.
fn bucket(distance: f64) -> Option<usize> {
    let min = (1u64 << MIN_LOG2) as f64;
    if distance < min {
        return Some(0);
    }
    let b = 1 + ((distance.log2() - MIN_LOG2 as f64) * STEPS_PER_OCTAVE as f64) as usize;
    (b < BUCKETS).then_some(b)
}

/// The part of bucket `b` at or below `size` bytes (linear in log size
/// within a bucket; linear in size in the first).
fn fraction_below(b: usize, size: f64) -> f64 {
    if b == 0 {
        return (size / (1u64 << MIN_LOG2) as f64).min(1.0);
    }
    if size <= 0.0 {
        return 0.0;
    }
    let lo = MIN_LOG2 as f64 + (b - 1) as f64 / STEPS_PER_OCTAVE as f64;
    ((size.log2() - lo) * STEPS_PER_OCTAVE as f64).clamp(0.0, 1.0)
}

/// The state behind the lock: the sampled keys, their recency, the
/// histogram.
struct Core {
    max_keys: usize,
    /// Keys hashing at or below it are sampled; only goes down.
    threshold: u64,
    slots: Vec<Slot>,
    /// Open addressing (linear probing, backward-shift deletion) from a
    /// key's hash to its slot: fixed size, no tombstones, so it never grows.
    index: Vec<u16>,
    /// Max-heap of slots by hash: the top is the next to leave the sample.
    heap: Vec<u16>,
    /// Ring of access timestamps: which slot was last accessed at each.
    owner: Vec<u16>,
    /// Fenwick tree over `owner`: the size of the slot at each timestamp, in
    /// [`UNIT`]s, wrapping: range sums are exact below 16 GiB of tracked
    /// items, and `u32` leaves room for more keys in the budget.
    tree: Vec<u32>,
    /// The next timestamp; the ring is compacted when it reaches the end.
    clock: usize,
    epochs: [Epoch; 2],
    /// Index of the current epoch in `epochs`.
    current: usize,
    /// The reads counter when the current epoch started.
    epoch_start: u64,
    /// Reads in the previous epoch.
    previous_reads: u64,
}

impl Core {
    fn new(max_keys: usize) -> Core {
        // 1.25 × the keys: a compaction, O(ring), every max_keys / 4
        // accesses at least, which leaves room for more keys in the budget.
        let ring = max_keys + max_keys.div_ceil(4);
        // Load factor at most 3/4.
        let index_len = (max_keys * 4 / 3 + 1).next_power_of_two();
        let mut slots = Vec::new();
        slots.reserve_exact(max_keys);
        let mut heap = Vec::new();
        heap.reserve_exact(max_keys);
        Core {
            max_keys,
            threshold: u64::MAX,
            slots,
            index: vec![NONE; index_len],
            heap,
            owner: vec![NONE; ring],
            tree: vec![0; ring + 1],
            clock: 0,
            epochs: [Epoch::new(), Epoch::new()],
            current: 0,
            epoch_start: 0,
            previous_reads: 0,
        }
    }

    /// The sample rate `R`.
    fn rate(&self) -> f64 {
        (self.threshold as f64 + 1.0) / 2f64.powi(64)
    }

    fn access(&mut self, hash: u64, size: u64, read: bool) {
        // The lock-free check may have raced with a lowering.
        if hash > self.threshold {
            return;
        }
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let slot = match self.find(hash) {
            Some((_, s)) => {
                let old = self.slots[s];
                if read {
                    // The others stand for 1/R times as many keys; the
                    // key itself is one.
                    let distance = (old.size > 0)
                        .then(|| self.since(old.time) as f64 / self.rate() + f64::from(old.size));
                    let weight = 1.0 / self.rate();
                    self.epochs[self.current].add(distance, weight);
                }
                self.unplace(s);
                s
            }
            None => {
                let Some(s) = self.admit(hash) else {
                    return;
                };
                if read {
                    let weight = 1.0 / self.rate();
                    self.epochs[self.current].add(None, weight);
                }
                s
            }
        };
        if size > 0 {
            self.slots[slot].size = size;
        }
        self.place(slot);
    }

    fn remove(&mut self, hash: u64) {
        if let Some((_, s)) = self.find(hash) {
            self.drop_slot(s);
        }
    }

    fn flush(&mut self) {
        self.slots.clear();
        self.heap.clear();
        self.index.fill(NONE);
        self.owner.fill(NONE);
        self.tree.fill(0);
        self.clock = 0;
    }

    fn rotate(&mut self, reads: u64) {
        self.previous_reads = reads.saturating_sub(self.epoch_start);
        self.epoch_start = reads;
        self.current = 1 - self.current;
        self.epochs[self.current].clear();
    }

    fn curve(&self, sizes: &[u64], reads: u64) -> Curve {
        let [a, b] = &self.epochs;
        let total = (self.previous_reads + reads.saturating_sub(self.epoch_start)) as f64;
        // SHARDS-adj: what the sample over- or under-counts goes to the
        // smallest distance.
        let adjust = total - (a.weight + b.weight);
        let points = points(sizes, |size| {
            if total <= 0.0 || size == 0 {
                return 0.0;
            }
            let x = size as f64;
            let hits: f64 = (0..BUCKETS)
                .map(|k| (a.buckets[k] + b.buckets[k]) * fraction_below(k, x))
                .sum();
            let adjusted = hits + adjust * fraction_below(0, x);
            (adjusted / total).clamp(0.0, 1.0)
        });
        Curve {
            points,
            sampled_keys: self.slots.len() as u64,
            sampled_accesses: a.sampled + b.sampled,
            accesses_total: total as u64,
            sample_rate: self.rate(),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + (self.index.capacity() + self.heap.capacity() + self.owner.capacity())
                * size_of::<u16>()
            + self.tree.capacity() * size_of::<u32>()
            + self
                .epochs
                .iter()
                .map(|e| e.buckets.capacity() * size_of::<f64>())
                .sum::<usize>()
    }

    // --- the sampled set ---

    /// Make room for a new sampled key and add it (unplaced, size 0), or
    /// None if it is the one that leaves the sample.
    fn admit(&mut self, hash: u64) -> Option<usize> {
        if self.slots.len() >= self.max_keys {
            let top = usize::from(self.heap[0]);
            let largest = self.slots[top].hash;
            if hash > largest {
                self.threshold = hash - 1;
                return None;
            }
            self.drop_slot(top);
            self.threshold = largest - 1;
        }
        let s = self.slots.len();
        self.slots.push(Slot {
            hash,
            size: 0,
            time: NONE,
            heap_pos: self.heap.len() as u16,
        });
        self.index_insert(s);
        self.heap.push(s as u16);
        self.sift_up(self.heap.len() - 1);
        Some(s)
    }

    /// Forget slot `s`, moving the last slot into its place.
    fn drop_slot(&mut self, s: usize) {
        self.unplace(s);
        self.heap_remove(usize::from(self.slots[s].heap_pos));
        if let Some((pos, _)) = self.find(self.slots[s].hash) {
            self.index_remove(pos);
        }
        let last = self.slots.len() - 1;
        if s != last {
            let moved = self.slots[last];
            if let Some((pos, _)) = self.find(moved.hash) {
                self.index[pos] = s as u16;
            }
            if moved.time != NONE {
                self.owner[usize::from(moved.time)] = s as u16;
            }
            self.heap[usize::from(moved.heap_pos)] = s as u16;
        }
        self.slots.swap_remove(s);
    }

    // --- recency: the ring and its Fenwick tree ---

    /// Bytes of the keys accessed after timestamp `time`.
    fn since(&self, time: u16) -> u64 {
        let units = self
            .prefix(self.clock)
            .wrapping_sub(self.prefix(usize::from(time) + 1));
        u64::from(units) * UNIT
    }

    /// Take slot `s` out of the ring.
    fn unplace(&mut self, s: usize) {
        let slot = self.slots[s];
        if slot.time != NONE {
            let t = usize::from(slot.time);
            self.owner[t] = NONE;
            self.tree_add(t, units(slot.size).wrapping_neg());
            self.slots[s].time = NONE;
        }
    }

    /// Put slot `s` (unplaced) at the newest timestamp.
    fn place(&mut self, s: usize) {
        if self.clock == self.owner.len() {
            self.compact();
        }
        let t = self.clock;
        self.clock += 1;
        self.owner[t] = s as u16;
        self.slots[s].time = t as u16;
        self.tree_add(t, units(self.slots[s].size));
    }

    /// Renumber the placed slots 0, 1, … in access order and rebuild the
    /// tree: the ring holds at least half a ring of free timestamps after.
    fn compact(&mut self) {
        let mut next = 0;
        for t in 0..self.clock {
            let s = self.owner[t];
            if s != NONE {
                self.owner[next] = s;
                self.slots[usize::from(s)].time = next as u16;
                next += 1;
            }
        }
        self.owner[next..].fill(NONE);
        self.clock = next;
        // Linear-time Fenwick build.
        self.tree.fill(0);
        for t in 0..next {
            self.tree[t + 1] = units(self.slots[usize::from(self.owner[t])].size);
        }
        let n = self.tree.len() - 1;
        for i in 1..=n {
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                self.tree[parent] = self.tree[parent].wrapping_add(self.tree[i]);
            }
        }
    }

    /// Add `delta` (wrapping: a negative delta is its two's complement) at
    /// timestamp `t`.
    fn tree_add(&mut self, t: usize, delta: u32) {
        let mut i = t + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Sum over timestamps `0..n`.
    fn prefix(&self, n: usize) -> u32 {
        let mut sum = 0u32;
        let mut i = n;
        while i > 0 {
            sum = sum.wrapping_add(self.tree[i]);
            i &= i - 1;
        }
        sum
    }

    // --- the index ---

    /// The index position and slot of `hash`. Sampled hashes are below the
    /// threshold, so their high bits are mostly zero: probe by the low bits.
    fn find(&self, hash: u64) -> Option<(usize, usize)> {
        let mask = self.index.len() - 1;
        let mut pos = hash as usize & mask;
        loop {
            let s = self.index[pos];
            if s == NONE {
                return None;
            }
            if self.slots[usize::from(s)].hash == hash {
                return Some((pos, usize::from(s)));
            }
            pos = (pos + 1) & mask;
        }
    }

    fn index_insert(&mut self, s: usize) {
        let mask = self.index.len() - 1;
        let mut pos = self.slots[s].hash as usize & mask;
        while self.index[pos] != NONE {
            pos = (pos + 1) & mask;
        }
        self.index[pos] = s as u16;
    }

    /// Empty position `pos`, shifting back the entries probed past it.
    fn index_remove(&mut self, pos: usize) {
        let mask = self.index.len() - 1;
        let mut hole = pos;
        let mut next = pos;
        loop {
            next = (next + 1) & mask;
            let s = self.index[next];
            if s == NONE {
                break;
            }
            let home = self.slots[usize::from(s)].hash as usize & mask;
            // It may move into the hole if the hole lies between its home
            // and where it sits.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.index[hole] = s;
                hole = next;
            }
        }
        self.index[hole] = NONE;
    }

    // --- the max-heap by hash ---

    fn heap_hash(&self, i: usize) -> u64 {
        self.slots[usize::from(self.heap[i])].hash
    }

    fn heap_set(&mut self, i: usize, s: u16) {
        self.heap[i] = s;
        self.slots[usize::from(s)].heap_pos = i as u16;
    }

    fn heap_swap(&mut self, i: usize, j: usize) {
        let (a, b) = (self.heap[i], self.heap[j]);
        self.heap_set(i, b);
        self.heap_set(j, a);
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap_hash(parent) >= self.heap_hash(i) {
                break;
            }
            self.heap_swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let mut largest = i;
            for child in [2 * i + 1, 2 * i + 2] {
                if child < self.heap.len() && self.heap_hash(child) > self.heap_hash(largest) {
                    largest = child;
                }
            }
            if largest == i {
                break;
            }
            self.heap_swap(i, largest);
            i = largest;
        }
    }

    fn heap_remove(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        if i != last {
            self.heap_swap(i, last);
        }
        self.heap.pop();
        if i < self.heap.len() {
            self.sift_up(i);
            self.sift_down(i);
        }
    }
}
