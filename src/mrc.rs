//! What-if memory: one cache's miss-ratio curve under the store's own
//! eviction policy, from a small spatial sample of its keys.
//!
//! This is miniature simulation (Waldspurger et al., ATC '17): one
//! scaled-down copy of the policy per size of the curve, fed only the
//! sampled keys, each read off as the hit rate at its size. It models any
//! policy the copy reproduces, here the store's S3-FIFO (`mrc::mini`, kept
//! in step with `node::store::shard` through its constants), which LRU
//! stack distances (SHARDS, FAST '15, what this module did before) cannot:
//! S3-FIFO hits up to 0.044 more than LRU at a small cache.
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
//! - The miniature caches are at [`MULTIPLES`] of the cache's limit, each
//!   scaled by `R` (and shrunk when `R` drops). Each holds sampled keys by
//!   their item charge. A sampled read is a hit or a miss in each; a miss
//!   fills the key in at its last stored size, as the client does after a
//!   miss, so that a size smaller than the real cache sees the demand fill
//!   the real cache's hit did not cause. Writes store the key (a rewrite
//!   keeps its queue and credit), touches give a credit, removals take it
//!   out of every copy, and a `flush_all` empties them.
//! - Each sampled read weighs `1/R` (the reads it stands for), so that the
//!   counts stay comparable when `R` drops. SHARDS-adj: the difference
//!   between the reads actually counted and the sampled weight (mostly a
//!   hot key in or out of the sample) counts as hits at every size.
//! - The curve's other sizes are interpolated between the copies' (in log
//!   size), flat beyond the largest.
//!
//! Accuracy (see the tests, against the policy at full size): within 0.03
//! of the real hit rate at 1/64 to 1/2 of a Zipf 0.99 trace's footprint and
//! on a looping scan; `tests/whatif.rs` holds it against the real store.
//! The error grows at sizes whose copy holds only a handful of sampled
//! keys (a cache holding under 1% of its keys). The merged curve of several
//! nodes is better than one node's, as it draws on every node's sample.
//!
//! A key outside the sample costs one hash, one relaxed atomic load and a
//! compare (plus a relaxed counter for reads); only sampled keys take the
//! tracker's lock, and then work in each of the 13 copies: O(1) each,
//! amortized. Memory grows with the sample: the tracker takes about 10 KiB
//! idle (the index) and at most 160 KiB with the default [`MAX_KEYS`], when
//! every copy holds every sampled key (the footprint test).

mod merge;
mod mini;
#[cfg(test)]
mod tests;

use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use foldhash::quality::FixedState;
use serde::{Deserialize, Serialize};

pub use self::merge::merge;
use self::mini::Mini;
use crate::clock::unix_now;

/// Sampled keys tracked per cache by default: fewer make the curve noisier
/// (`tests/whatif.rs` errs by up to 0.013 with 2048), more cost 70 bytes
/// each at most (the footprint test).
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

/// "No slot" in the index.
const NONE: u16 = u16::MAX;

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
    /// A tracker of [`MAX_KEYS`] keys with a random hash key, for a cache
    /// of `limit` bytes.
    pub fn new(limit: u64) -> Tracker {
        Tracker::with_hasher(MAX_KEYS, limit, FixedState::with_seed(rand::random()))
    }
}

impl<S: BuildHasher> Tracker<S> {
    /// A tracker of at most `max_keys` sampled keys (at least 1, less than
    /// 65535 × 2/3 so that slot numbers fit a `u16`), for a cache of
    /// `limit` bytes.
    pub fn with_hasher(max_keys: usize, limit: u64, hasher: S) -> Tracker<S> {
        let core = Core::new(max_keys.clamp(1, 40_000), limit);
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
    /// decr, touch) that left an item of `size_bytes`, or 0 for one that
    /// only gave it a credit (touch, an `add` over it) or whose size is not
    /// at hand (append, prepend): not a read.
    #[inline]
    pub fn record_write(&self, key: &[u8], size_bytes: u64) {
        if let Some(hash) = self.sampled(key) {
            self.slow(|core| core.access(hash, size_bytes, false));
        }
    }

    /// The item is gone (delete, expiry, eviction by a refused set): its
    /// next read is a miss at every size.
    #[inline]
    pub fn remove(&self, key: &[u8]) {
        if let Some(hash) = self.sampled(key) {
            self.slow(|core| core.remove(hash));
        }
    }

    /// Every item is gone (`flush_all`): forget the tracked keys, keep the
    /// hit counts and the sample rate.
    pub fn flush(&self) {
        self.slow(Core::flush);
    }

    /// The cache's limit changed (a plan change): the miniature caches take
    /// their new sizes, and the curve starts a new window, since the hits
    /// counted so far were at the old sizes.
    pub fn set_limit(&self, limit: u64) {
        let reads = self.reads.load(Ordering::Relaxed);
        let now = unix_now();
        let changed = self.lock().set_limit(limit, reads);
        if changed {
            self.window_from.store(now, Ordering::Relaxed);
            self.rotated_at.store(now, Ordering::Relaxed);
        }
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
    /// dropped), with the sample's size: exact at the miniature caches'
    /// sizes ([`MULTIPLES`] of the limit), interpolated between them.
    pub fn curve(&self, sizes: &[u64]) -> Curve {
        let reads = self.reads.load(Ordering::Relaxed);
        self.lock().curve(sizes, reads)
    }

    /// The tracker's heap memory, from its buffers' capacities: it grows
    /// with the sample, up to `max_keys` keys.
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

/// One tracked key. Slot numbers are stable while the key is tracked (the
/// miniature caches refer to them); a freed one is reused.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    /// The item's charge; 0 when the key is not stored (read but never set).
    size: u32,
    /// Its position in the max-heap.
    heap_pos: u16,
    /// Its reads since it entered the sample, saturating.
    reads: u16,
}

/// One window's share of the sampled reads.
#[derive(Clone, Copy, Default)]
struct Epoch {
    /// Sum of the reads' weights.
    weight: f64,
    /// Sampled reads.
    sampled: u64,
    /// The sum, over sampled reads, of the key's reads so far: with the
    /// miniature caches' `hit_moment`, how much the hot keys hit.
    moment: f64,
}

/// `(size, hit_rate(size))` for `sizes` sorted, without duplicates.
fn points(sizes: &[u64], hit_rate: impl Fn(u64) -> f64) -> Vec<(u64, f64)> {
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    sizes.into_iter().map(|s| (s, hit_rate(s))).collect()
}

/// The state behind the lock: the sampled keys and the miniature caches.
struct Core {
    max_keys: usize,
    /// Keys hashing at or below it are sampled; only goes down.
    threshold: u64,
    /// By slot number; the free ones are in `free`.
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Open addressing (linear probing, backward-shift deletion) from a
    /// key's hash to its slot: fixed size, no tombstones, so it never grows.
    index: Vec<u16>,
    /// Max-heap of slots by hash: the top is the next to leave the sample.
    heap: Vec<u16>,
    /// The cache's limit; the miniature caches are at [`MULTIPLES`] of it.
    limit: u64,
    minis: Vec<Mini>,
    epochs: [Epoch; 2],
    /// Index of the current epoch in `epochs` and the minis' `hits`.
    current: usize,
    /// The reads counter when the current epoch started.
    epoch_start: u64,
    /// Reads in the previous epoch.
    previous_reads: u64,
}

impl Core {
    fn new(max_keys: usize, limit: u64) -> Core {
        // Load factor at most 3/4.
        let index_len = (max_keys * 4 / 3 + 1).next_power_of_two();
        let mut core = Core {
            max_keys,
            threshold: u64::MAX,
            slots: Vec::new(),
            free: Vec::new(),
            index: vec![NONE; index_len],
            heap: Vec::new(),
            limit,
            minis: Vec::new(),
            epochs: [Epoch::default(); 2],
            current: 0,
            epoch_start: 0,
            previous_reads: 0,
        };
        core.minis = sizes_for(limit)
            .into_iter()
            .map(|size| Mini::new(core.scaled(size)))
            .collect();
        core
    }

    /// The sample rate `R`.
    fn rate(&self) -> f64 {
        (self.threshold as f64 + 1.0) / 2f64.powi(64)
    }

    /// A cache of `size` bytes, scaled down to the sample.
    fn scaled(&self, size: u64) -> u64 {
        (size as f64 * self.rate()).round() as u64
    }

    fn access(&mut self, hash: u64, size: u64, read: bool) {
        // The lock-free check may have raced with a lowering.
        if hash > self.threshold {
            return;
        }
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let s = match self.find(hash) {
            Some((_, s)) => s,
            None => match self.admit(hash) {
                Some(s) => s,
                None => return,
            },
        };
        let old = self.slots[s].size;
        if size > 0 {
            self.slots[s].size = size;
        }
        let weight = 1.0 / self.rate();
        let epoch = self.current;
        if read {
            self.slots[s].reads = self.slots[s].reads.saturating_add(1);
            let e = &mut self.epochs[epoch];
            e.weight += weight;
            e.sampled += 1;
            e.moment += f64::from(self.slots[s].reads);
        }
        let slots = &self.slots;
        for m in &mut self.minis {
            if read || size == 0 {
                // A hit that finds the item at another size (rewritten by a
                // command the tracker does not see) keeps the bytes right.
                if size > 0 && size != old {
                    m.resize(s, u64::from(old), slots);
                }
                if read {
                    m.read(s, weight, epoch, slots);
                } else {
                    m.touch(s);
                }
            } else {
                m.write(s, u64::from(old), slots);
            }
        }
    }

    fn remove(&mut self, hash: u64) {
        if let Some((_, s)) = self.find(hash) {
            self.drop_slot(s);
        }
    }

    fn flush(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.heap.clear();
        self.index.fill(NONE);
        self.minis.iter_mut().for_each(Mini::clear);
    }

    /// True if the limit changed.
    fn set_limit(&mut self, limit: u64, reads: u64) -> bool {
        if limit == self.limit {
            return false;
        }
        self.limit = limit;
        self.resize_minis();
        for m in &mut self.minis {
            m.hits = [0.0, 0.0];
            m.hit_moment = [0.0, 0.0];
        }
        self.epochs = [Epoch::default(); 2];
        self.epoch_start = reads;
        self.previous_reads = 0;
        true
    }

    /// Give each miniature cache its size at the current limit and rate.
    fn resize_minis(&mut self) {
        let caps: Vec<u64> = sizes_for(self.limit)
            .into_iter()
            .map(|size| self.scaled(size))
            .collect();
        for (m, cap) in self.minis.iter_mut().zip(caps) {
            m.set_capacity(cap, &self.slots);
        }
    }

    fn rotate(&mut self, reads: u64) {
        self.previous_reads = reads.saturating_sub(self.epoch_start);
        self.epoch_start = reads;
        self.current = 1 - self.current;
        self.epochs[self.current] = Epoch::default();
        for m in &mut self.minis {
            m.hits[self.current] = 0.0;
            m.hit_moment[self.current] = 0.0;
        }
    }

    fn curve(&self, sizes: &[u64], reads: u64) -> Curve {
        let [a, b] = self.epochs;
        let total = (self.previous_reads + reads.saturating_sub(self.epoch_start)) as f64;
        // What the sample over- or under-counts: the reads of the keys that
        // happen to be in it are not exactly `R` of all reads. SHARDS-adj
        // counts that difference as hits at every size, right when it comes
        // from a hot key in or out of the sample (Zipf), wrong when every
        // key is alike (a scan, where no small cache hits). The regression
        // estimator generalizes both: the difference counts as hits at each
        // size in the proportion in which the sampled keys' reads hit there,
        // each key weighed by its read count (which is how much it moves the
        // difference): 1 for Zipf's hot keys, 0 for a scan.
        let adjust = total - (a.weight + b.weight);
        let moment = a.moment + b.moment;
        let measured = Curve {
            points: sizes_for(self.limit)
                .into_iter()
                .zip(&self.minis)
                .map(|(size, m)| {
                    let beta = if moment > 0.0 {
                        ((m.hit_moment[0] + m.hit_moment[1]) / moment).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let hits = m.hits[0] + m.hits[1] + beta * adjust;
                    let rate = if total > 0.0 { hits / total } else { 0.0 };
                    (size, rate.clamp(0.0, 1.0))
                })
                .collect(),
            ..Curve::default()
        };
        Curve {
            points: points(sizes, |size| measured.hit_rate_at(size)),
            sampled_keys: (self.slots.len() - self.free.len()) as u64,
            sampled_accesses: a.sampled + b.sampled,
            accesses_total: total as u64,
            sample_rate: self.rate(),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + (self.free.capacity() + self.index.capacity() + self.heap.capacity())
                * size_of::<u16>()
            + self.minis.capacity() * size_of::<Mini>()
            + self.minis.iter().map(Mini::heap_bytes).sum::<usize>()
    }

    // --- the sampled set ---

    /// Make room for a new sampled key and add it (size 0, in no
    /// miniature cache), or None if it is the one that leaves the sample.
    fn admit(&mut self, hash: u64) -> Option<usize> {
        if self.heap.len() >= self.max_keys {
            let top = usize::from(self.heap[0]);
            let largest = self.slots[top].hash;
            if hash > largest {
                self.threshold = hash - 1;
                self.resize_minis();
                return None;
            }
            self.drop_slot(top);
            self.threshold = largest - 1;
            self.resize_minis();
        }
        let slot = Slot {
            hash,
            size: 0,
            heap_pos: self.heap.len() as u16,
            reads: 0,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[usize::from(s)] = slot;
                usize::from(s)
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.index_insert(s);
        self.heap.push(s as u16);
        self.sift_up(self.heap.len() - 1);
        Some(s)
    }

    /// Forget slot `s`: out of every miniature cache, the heap and the
    /// index; its number is free for the next key.
    fn drop_slot(&mut self, s: usize) {
        let size = u64::from(self.slots[s].size);
        for m in &mut self.minis {
            m.remove(s, size);
        }
        self.heap_remove(usize::from(self.slots[s].heap_pos));
        if let Some((pos, _)) = self.find(self.slots[s].hash) {
            self.index_remove(pos);
        }
        self.free.push(s as u16);
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
