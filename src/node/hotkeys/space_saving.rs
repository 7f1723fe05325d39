//! Space-Saving (Metwally, Agrawal, El Abbadi, ICDT 2005), weighted: the
//! heaviest keys of a stream in a fixed number of counters.
//!
//! Each of at most `capacity` counters holds a key, its `count` and its
//! `error`. A key already counted adds its weight; a new key takes a free
//! counter, or else the one with the smallest count, inheriting that count
//! as its `error` and adding its weight on top. Hence, for every counted
//! key, with `N` the total weight added:
//!
//! - `count - error <= true weight <= count`;
//! - `error <= min <= N / capacity`, where `min` is the smallest count;
//! - any key whose true weight exceeds `min` is counted.
//!
//! So a key with more than `N / capacity` of the weight is always listed,
//! and its `count - error` is its weight since it last entered, which for a
//! key that stays heavy is all of it but what came before its first
//! arrival. The tests check these bounds against exact counts.
//!
//! The counters are a slab that never moves, a binary min-heap of slab
//! indexes by count (the smallest is found in O(1), a count that grows
//! sinks in O(log capacity)), and a hash table from key to slab index.
//! A replaced key's buffer is reused, so a full sketch stops allocating
//! until it is cleared.

use std::hash::BuildHasher;

use hashbrown::HashTable;

type RandomState = foldhash::fast::RandomState;

/// One counted key.
#[derive(Debug)]
struct Counter {
    key: Vec<u8>,
    hash: u64,
    count: u64,
    error: u64,
    /// Where this counter is in the heap.
    pos: u32,
}

/// A key as [`SpaceSaving::counted`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted<'a> {
    pub key: &'a [u8],
    /// An upper bound of the key's weight.
    pub count: u64,
    /// How much of `count` may be another key's: the weight is at least
    /// `count - error`.
    pub error: u64,
}

/// The top of a weighted stream in at most `capacity` counters.
pub struct SpaceSaving {
    capacity: usize,
    counters: Vec<Counter>,
    /// Slab indexes, a min-heap by count.
    heap: Vec<u32>,
    /// Slab indexes by key.
    index: HashTable<u32>,
    hasher: RandomState,
    total: u64,
}

impl std::fmt::Debug for SpaceSaving {
    /// The keys are a tenant's data: only the sizes are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceSaving")
            .field("capacity", &self.capacity)
            .field("counted", &self.counters.len())
            .field("total", &self.total)
            .finish()
    }
}

impl SpaceSaving {
    /// A sketch of at most `capacity` (at least 1) counters; they are
    /// allocated as keys arrive.
    pub fn new(capacity: usize) -> SpaceSaving {
        SpaceSaving {
            capacity: capacity.clamp(1, u32::MAX as usize),
            counters: Vec::new(),
            heap: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::default(),
            total: 0,
        }
    }

    /// The weight added since the last [`SpaceSaving::clear`].
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest count once every counter is taken, else 0: a key not
    /// counted has at most this weight.
    pub fn floor(&self) -> u64 {
        if self.counters.len() < self.capacity {
            return 0;
        }
        self.heap
            .first()
            .map_or(0, |&i| self.counters[i as usize].count)
    }

    /// Forget every key, keeping the slab's, heap's and table's memory for
    /// the next round (the keys' own buffers are freed).
    pub fn clear(&mut self) {
        self.counters.clear();
        self.heap.clear();
        self.index.clear();
        self.total = 0;
    }

    /// Add `weight` to `key`.
    pub fn add(&mut self, key: &[u8], weight: u64) {
        self.total = self.total.saturating_add(weight);
        let hash = self.hasher.hash_one(key);
        let counters = &self.counters;
        if let Some(&i) = self.index.find(hash, |&i| counters[i as usize].key == key) {
            let c = &mut self.counters[i as usize];
            c.count = c.count.saturating_add(weight);
            let pos = c.pos as usize;
            self.sift_down(pos);
            return;
        }
        if self.counters.len() < self.capacity {
            let i = self.counters.len() as u32;
            let pos = self.heap.len() as u32;
            self.counters.push(Counter {
                key: key.to_vec(),
                hash,
                count: weight,
                error: 0,
                pos,
            });
            self.heap.push(i);
            let counters = &self.counters;
            self.index
                .insert_unique(hash, i, |&j| counters[j as usize].hash);
            self.sift_up(pos as usize);
            return;
        }
        // Full: the smallest counter changes hands.
        let i = self.heap[0];
        let old_hash = self.counters[i as usize].hash;
        if let Ok(slot) = self.index.find_entry(old_hash, |&j| j == i) {
            slot.remove();
        }
        let c = &mut self.counters[i as usize];
        c.key.clear();
        // Exactly: growing by doubling would leave most of the buffer idle.
        c.key.reserve_exact(key.len());
        c.key.extend_from_slice(key);
        c.hash = hash;
        c.error = c.count;
        c.count = c.count.saturating_add(weight);
        let counters = &self.counters;
        self.index
            .insert_unique(hash, i, |&j| counters[j as usize].hash);
        self.sift_down(0);
    }

    /// Every counted key, in no particular order.
    pub fn counted(&self) -> impl Iterator<Item = Counted<'_>> {
        self.counters.iter().map(|c| Counted {
            key: &c.key,
            count: c.count,
            error: c.error,
        })
    }

    /// Bytes held on the heap, for the memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.counters.capacity() * std::mem::size_of::<Counter>()
            + self
                .counters
                .iter()
                .map(|c| c.key.capacity())
                .sum::<usize>()
            + self.heap.capacity() * std::mem::size_of::<u32>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    fn count_at(&self, pos: usize) -> u64 {
        self.counters[self.heap[pos] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.counters[self.heap[a] as usize].pos = a as u32;
        self.counters[self.heap[b] as usize].pos = b as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.count_at(parent) <= self.count_at(pos) {
                break;
            }
            self.swap(parent, pos);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && self.count_at(right) < self.count_at(left) {
                right
            } else {
                left
            };
            if self.count_at(pos) <= self.count_at(child) {
                break;
            }
            self.swap(pos, child);
            pos = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Feed `stream` to a sketch and to exact counts.
    fn run(capacity: usize, stream: &[(Vec<u8>, u64)]) -> (SpaceSaving, HashMap<Vec<u8>, u64>) {
        let mut s = SpaceSaving::new(capacity);
        let mut exact: HashMap<Vec<u8>, u64> = HashMap::new();
        for (key, w) in stream {
            s.add(key, *w);
            *exact.entry(key.clone()).or_default() += w;
        }
        (s, exact)
    }

    /// `n` draws from `0..keys`, skewed towards 0 when `skew` > 1 (key
    /// `floor(keys * u^skew)` for a uniform `u`), weighted by `weight`.
    fn skewed_stream(
        n: usize,
        keys: u64,
        skew: f64,
        seed: u64,
        weight: impl Fn(u64) -> u64,
    ) -> Vec<(Vec<u8>, u64)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let k = (keys as f64 * rng.gen::<f64>().powf(skew)) as u64;
                (format!("k{k}").into_bytes(), weight(k))
            })
            .collect()
    }

    /// The guarantees in the module's doc, on skewed and on flat streams,
    /// with unit and with varying weights.
    #[test]
    fn bounds_hold_against_exact_counts() {
        let streams = [
            skewed_stream(200_000, 100_000, 4.0, 1, |_| 1),
            skewed_stream(200_000, 100_000, 4.0, 2, |k| 1 + k % 7 * 100),
            // Flat: every key is light, the counters churn all the time.
            skewed_stream(50_000, 1_000_000, 1.0, 3, |_| 1),
        ];
        for (n, stream) in streams.iter().enumerate() {
            let capacity = 256;
            let (s, exact) = run(capacity, stream);
            let total: u64 = exact.values().sum();
            assert_eq!(s.total(), total);
            let floor = s.floor();
            assert!(
                floor <= total / capacity as u64,
                "stream {n}: floor {floor}"
            );
            let mut listed = 0;
            for c in s.counted() {
                let truth = exact[c.key];
                assert!(c.count >= truth, "stream {n}: over-counted only");
                assert!(c.count - c.error <= truth, "stream {n}: lower bound");
                assert!(c.error <= floor, "stream {n}: error within the floor");
                listed += 1;
            }
            assert!(listed <= capacity);
            let counted: HashMap<&[u8], u64> = s.counted().map(|c| (c.key, c.count)).collect();
            for (key, &truth) in &exact {
                if truth > floor {
                    assert!(
                        counted.contains_key(key.as_slice()),
                        "stream {n}: a heavy key is listed"
                    );
                }
            }
        }
    }

    /// On a skewed stream the heaviest keys come out exact or nearly: the
    /// error of the top 20 is under 1% of their weight.
    #[test]
    fn heavy_keys_are_nearly_exact() {
        let stream = skewed_stream(300_000, 1_000_000, 8.0, 4, |_| 1);
        let (s, exact) = run(512, &stream);
        let mut top: Vec<Counted<'_>> = s.counted().collect();
        top.sort_by_key(|c| std::cmp::Reverse(c.count - c.error));
        for c in &top[..20] {
            let truth = exact[c.key];
            let estimate = c.count - c.error;
            assert!(
                truth - estimate <= truth / 100,
                "estimate {estimate} against {truth}"
            );
        }
    }

    #[test]
    fn clear_forgets_every_key() {
        let mut s = SpaceSaving::new(4);
        for k in 0..100u32 {
            s.add(&k.to_be_bytes(), 1);
        }
        assert_eq!(s.counted().count(), 4);
        assert_eq!(s.floor(), 25);
        s.clear();
        assert_eq!((s.total(), s.floor(), s.counted().count()), (0, 0, 0));
        s.add(b"a", 3);
        s.add(b"b", 1);
        s.add(b"a", 2);
        let mut got: Vec<(Vec<u8>, u64, u64)> = s
            .counted()
            .map(|c| (c.key.to_vec(), c.count, c.error))
            .collect();
        got.sort();
        assert_eq!(got, vec![(b"a".to_vec(), 5, 0), (b"b".to_vec(), 1, 0)]);
    }

    #[test]
    fn debug_output_shows_no_key() {
        let mut s = SpaceSaving::new(2);
        s.add(b"secret-key", 1);
        assert!(!format!("{s:?}").contains("secret"));
    }
}
