use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::mini::{MAX_CREDIT, SMALL_SHARE};
use super::*;
use crate::node::store::charge;

/// SipHash-1-3 keyed by a seed, so that the accuracy tests are repeatable
/// (`RandomState` cannot be seeded).
#[derive(Clone, Copy)]
struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

/// Every key sampled (hashes are all below `u64::MAX` in practice), for a
/// cache of `LIMIT` bytes.
fn exact(max_keys: usize) -> Tracker<Seeded> {
    Tracker::with_hasher(max_keys, LIMIT, Seeded(1))
}

const LIMIT: u64 = 4000;

/// Check the core's structures against each other.
fn check(core: &Core) {
    let free = |s: usize| core.free.contains(&(s as u16));
    let keys = core.slots.len() - core.free.len();
    assert!(keys <= core.max_keys);
    assert_eq!(core.heap.len(), keys);
    for (i, &s) in core.heap.iter().enumerate() {
        let s = usize::from(s);
        let slot = core.slots[s];
        assert!(!free(s));
        assert_eq!(usize::from(slot.heap_pos), i);
        assert!(slot.hash <= core.threshold);
        assert_eq!(core.find(slot.hash).map(|f| f.1), Some(s));
    }
    for i in 1..core.heap.len() {
        assert!(core.heap_hash((i - 1) / 2) >= core.heap_hash(i));
    }
    assert_eq!(core.index.iter().filter(|&&s| s != NONE).count(), keys);
    assert_eq!(core.minis.len(), super::MULTIPLES.len());
    for m in &core.minis {
        m.check(&core.slots, |s| !free(s));
    }
}

/// The store's policy written plainly, item by item over whole queues:
/// what the miniature caches must match when every key is sampled.
struct Fifo {
    limit: u64,
    used: u64,
    small_bytes: u64,
    /// Small and main, oldest first.
    queues: [VecDeque<u32>; 2],
    /// Queue, credit, size by key.
    held: HashMap<u32, (usize, u8, u64)>,
    hits: u64,
    reads: u64,
}

impl Fifo {
    fn new(limit: u64) -> Fifo {
        Fifo {
            limit,
            used: 0,
            small_bytes: 0,
            queues: [VecDeque::new(), VecDeque::new()],
            held: HashMap::new(),
            hits: 0,
            reads: 0,
        }
    }

    /// A get; on a miss the key is filled in at `size` (if known, non-zero).
    fn read(&mut self, k: u32, size: u64) -> bool {
        self.reads += 1;
        if self.touch(k) {
            self.hits += 1;
            return true;
        }
        self.insert(k, size);
        false
    }

    fn touch(&mut self, k: u32) -> bool {
        match self.held.get_mut(&k) {
            Some(h) => {
                h.1 = (h.1 + 1).min(MAX_CREDIT);
                true
            }
            None => false,
        }
    }

    /// A store: a held key moves to its queue's tail with its credit.
    fn write(&mut self, k: u32, size: u64) {
        let Some(&(q, _, old)) = self.held.get(&k) else {
            self.insert(k, size);
            return;
        };
        self.queues[q].retain(|&x| x != k);
        self.queues[q].push_back(k);
        self.held.get_mut(&k).unwrap().2 = size;
        self.used = self.used - old + size;
        if q == 0 {
            self.small_bytes = self.small_bytes - old + size;
        }
        self.evict_to_fit(0);
    }

    fn insert(&mut self, k: u32, size: u64) {
        if size == 0 || size > self.limit {
            return;
        }
        self.evict_to_fit(size);
        self.queues[0].push_back(k);
        self.held.insert(k, (0, 0, size));
        self.used += size;
        self.small_bytes += size;
    }

    fn remove(&mut self, k: u32) {
        if let Some((q, _, size)) = self.held.remove(&k) {
            self.queues[q].retain(|&x| x != k);
            self.used -= size;
            if q == 0 {
                self.small_bytes -= size;
            }
        }
    }

    fn evict_to_fit(&mut self, extra: u64) {
        while self.used + extra > self.limit && !self.held.is_empty() {
            let small = !self.queues[0].is_empty()
                && (self.small_bytes >= self.limit / SMALL_SHARE as u64
                    || self.queues[1].is_empty());
            let q = usize::from(!small);
            let k = self.queues[q].pop_front().unwrap();
            let (_, credit, size) = self.held[&k];
            if credit == 0 {
                self.held.remove(&k);
                self.used -= size;
                if q == 0 {
                    self.small_bytes -= size;
                }
            } else {
                if q == 0 {
                    self.small_bytes -= size;
                }
                let c = if q == 0 { 0 } else { credit - 1 };
                self.held.insert(k, (1, c, size));
                self.queues[1].push_back(k);
            }
        }
    }

    fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.reads as f64
    }
}

#[test]
fn miniatures_at_full_rate_match_the_policy_written_plainly() {
    let t = exact(1000);
    let mut truth: Vec<Fifo> = sizes_for(LIMIT).into_iter().map(Fifo::new).collect();
    let mut size = vec![0u64; 300];
    let mut rng = StdRng::seed_from_u64(5);
    let mut sampled = 0u64;
    for i in 0..30_000u32 {
        let k = rng.gen_range(0..300u32);
        let key = k.to_le_bytes();
        match rng.gen_range(0..20) {
            0 => {
                t.remove(&key);
                size[k as usize] = 0;
                truth.iter_mut().for_each(|f| f.remove(k));
            }
            1..=3 => {
                let s = rng.gen_range(20..400);
                size[k as usize] = s;
                t.record_write(&key, s);
                truth.iter_mut().for_each(|f| f.write(k, s));
            }
            4 => {
                t.record_write(&key, 0);
                truth.iter_mut().for_each(|f| {
                    f.touch(k);
                });
            }
            _ => {
                sampled += 1;
                t.record(&key, 0);
                let s = size[k as usize];
                truth.iter_mut().for_each(|f| {
                    f.read(k, s);
                });
            }
        }
        if i % 5_000 == 0 {
            check(&t.lock());
        }
        if i == 20_000 {
            t.flush();
            size.fill(0);
            truth.iter_mut().for_each(|f| {
                *f = Fifo {
                    hits: f.hits,
                    reads: f.reads,
                    ..Fifo::new(f.limit)
                }
            });
        }
    }
    check(&t.lock());
    let c = t.curve(&sizes_for(LIMIT));
    assert_eq!((c.sampled_accesses, c.accesses_total), (sampled, sampled));
    for (f, &(size, rate)) in truth.iter().zip(&c.points) {
        assert_eq!(f.limit, size);
        assert!(
            (f.hit_rate() - rate).abs() < 1e-9,
            "{size}: {} {rate}",
            f.hit_rate()
        );
    }
    // The curve has a shape: 16× holds about every key, 1/8× a few.
    assert!(c.points[0].1 + 0.5 < c.points[12].1, "{c:?}");
}

#[test]
fn reads_of_keys_never_stored_or_removed_are_misses() {
    let t = exact(100);
    t.record(b"ghost", 0);
    t.record(b"ghost", 0);
    t.record_write(b"a", 100);
    t.record(b"a", 100);
    t.remove(b"a");
    t.record(b"a", 0);
    let c = t.curve(&[1 << 30]);
    // ghost ×2 (cold), a (hit), a after delete (cold).
    assert_eq!(c.sampled_accesses, 4);
    assert!((c.points[0].1 - 0.25).abs() < 1e-9);
    check(&t.lock());
}

#[test]
fn flush_forgets_keys_and_keeps_the_histogram() {
    let t = exact(100);
    t.record_write(b"a", 100);
    t.record(b"a", 100);
    t.flush();
    t.record(b"a", 0);
    let c = t.curve(&[1000]);
    assert_eq!(c.sampled_accesses, 2);
    assert!((c.points[0].1 - 0.5).abs() < 1e-9);
    check(&t.lock());
}

#[test]
fn rotate_keeps_one_previous_window() {
    let t = exact(100);
    t.record_write(b"a", 100);
    t.record(b"a", 100);
    t.rotate();
    t.record(b"a", 100);
    assert_eq!(t.curve(&[1000]).accesses_total, 2);
    t.rotate();
    t.record(b"b", 0);
    let c = t.curve(&[1000]);
    assert_eq!((c.accesses_total, c.sampled_accesses), (2, 2));
    assert!((c.points[0].1 - 0.5).abs() < 1e-9);
    t.rotate();
    let c = t.curve(&[1000]);
    assert_eq!((c.accesses_total, c.sampled_accesses), (1, 1));
    assert_eq!(c.points[0].1, 0.0);
}

#[test]
fn rotation_is_due_every_window_and_the_window_covers_two() {
    let t = exact(100);
    let start = t.rotated_at.load(Ordering::Relaxed);
    t.record_write(b"a", 100);
    t.record(b"a", 100);
    t.rotate_if_due(start + ROTATE_EVERY - 1);
    assert_eq!(t.curve(&[1000]).accesses_total, 1);
    assert_eq!(t.window_seconds(start + 10), 10);
    // The first rotation keeps the first window.
    t.rotate_if_due(start + ROTATE_EVERY);
    t.record(b"a", 100);
    assert_eq!(t.curve(&[1000]).accesses_total, 2);
    assert_eq!(t.window_seconds(start + ROTATE_EVERY + 5), ROTATE_EVERY + 5);
    // The second one drops it: the window starts at the first rotation.
    t.rotate_if_due(start + 2 * ROTATE_EVERY);
    assert_eq!(t.curve(&[1000]).accesses_total, 1);
    assert_eq!(t.window_seconds(start + 2 * ROTATE_EVERY), ROTATE_EVERY);
}

#[test]
fn what_if_round_trips_and_merges_at_multiples_of_the_limits() {
    let t = exact(100);
    for _ in 0..3 {
        for k in [b"a", b"b"] {
            t.record_write(k, 400);
            t.record(k, 400);
        }
    }
    let w = t.what_if(1000, unix_now());
    assert_eq!(w.sizes, sizes_for(1000));
    assert_eq!(w.curve(), t.curve(&sizes_for(1000)));
    assert!(!w.trustworthy);
    let json = serde_json::to_string(&w).unwrap();
    assert_eq!(serde_json::from_str::<WhatIf>(&json).unwrap(), w);
    // Two equal nodes: the cache is twice the size, with the same curve.
    let merged = WhatIf::merged(&[w.clone(), w.clone()]);
    assert_eq!(merged.limit, 2000);
    assert_eq!(merged.sizes, sizes_for(2000));
    assert_eq!(merged.accesses_total, 2 * w.accesses_total);
    for (i, rate) in merged.hit_rates.iter().enumerate() {
        assert!((rate - w.hit_rates[i]).abs() < 1e-9, "{merged:?}");
    }
    assert!(w.hit_rate_at(1000) > 0.5 && MULTIPLES.contains(&0.25) && MULTIPLES.contains(&8.0));
}

#[test]
fn the_sample_stays_within_budget_and_the_rate_drops() {
    let max = 64;
    let t = Tracker::with_hasher(max, LIMIT, Seeded(7));
    let mut rng = StdRng::seed_from_u64(3);
    for i in 0..20_000u32 {
        let key = rng.gen_range(0..5_000u32).to_le_bytes();
        match i % 7 {
            0 => t.remove(&key),
            1 | 2 => t.record_write(&key, rng.gen_range(1..5_000)),
            _ => t.record(&key, 0),
        }
        if i % 997 == 0 {
            check(&t.lock());
        }
    }
    check(&t.lock());
    let c = t.curve(&[1]);
    assert!(c.sampled_keys <= max as u64);
    // About 64 of 5000 keys: the rate has settled near 64 / 5000.
    assert!(c.sample_rate < 0.03 && c.sample_rate > 0.005, "{c:?}");
    // The lock-free threshold is the core's.
    assert_eq!(t.threshold.load(Ordering::Relaxed), t.lock().threshold);
}

#[test]
fn memory_grows_with_the_sample_to_a_bound() {
    let t = Tracker::new(1 << 30);
    let idle = t.heap_bytes() + size_of::<Tracker>();
    // The worst case: every copy, up to 16 GiB, holds every sampled key.
    for i in 0..200_000u32 {
        t.record_write(&i.to_le_bytes(), 100);
        t.record(&(i / 2).to_le_bytes(), 100);
    }
    let full = t.heap_bytes() + size_of::<Tracker>();
    println!("tracker: {idle} bytes idle, {full} with {MAX_KEYS} keys in every copy");
    assert!(idle <= 12 * 1024, "{idle}");
    assert!(full <= 160 * 1024, "{full}");
    // Churn within the sample does not grow it further.
    for i in 0..200_000u32 {
        t.record_write(&(i % 50_000).to_le_bytes(), 100 + u64::from(i % 7));
        t.record(&(i % 70_000).to_le_bytes(), 0);
        if i % 3 == 0 {
            t.remove(&(i % 60_000).to_le_bytes());
        }
    }
    check(&t.lock());
    let after = t.heap_bytes() + size_of::<Tracker>();
    assert!(after <= 160 * 1024, "{after}");
}

#[test]
fn trustworthy_needs_enough_reads_and_keys() {
    let mut c = Curve {
        sampled_keys: 1000,
        sampled_accesses: 499,
        sample_rate: 0.01,
        ..Curve::default()
    };
    assert!(!c.trustworthy());
    c.sampled_accesses = 500;
    assert!(c.trustworthy());
    c.sampled_keys = 20;
    assert!(!c.trustworthy());
    // Every key sampled: exact however few.
    c.sample_rate = 1.0;
    assert!(c.trustworthy());
    // A tracker that has seen a handful of keys says so.
    let t = Tracker::new(LIMIT);
    for k in 0..10u8 {
        t.record(&[k], 100);
    }
    assert!(!t.curve(&[1000]).trustworthy());
}

#[test]
fn hit_rate_at_interpolates_in_log_size() {
    let c = Curve {
        points: vec![(100, 0.2), (400, 0.6)],
        ..Curve::default()
    };
    assert_eq!(c.hit_rate_at(0), 0.0);
    assert!((c.hit_rate_at(50) - 0.1).abs() < 1e-9);
    assert_eq!(c.hit_rate_at(100), 0.2);
    assert!((c.hit_rate_at(200) - 0.4).abs() < 1e-9);
    assert_eq!(c.hit_rate_at(1000), 0.6);
}

#[test]
fn merge_weights_nodes_by_reads_at_their_shares() {
    let a = Curve {
        points: vec![(100, 0.5), (200, 0.8)],
        sampled_keys: 300,
        sampled_accesses: 400,
        accesses_total: 1000,
        sample_rate: 0.1,
    };
    let b = Curve {
        points: vec![(300, 0.2), (600, 0.4)],
        sampled_keys: 100,
        sampled_accesses: 200,
        accesses_total: 3000,
        sample_rate: 0.05,
    };
    // a holds 1/4 of the cache, b 3/4: at 400 bytes, a has 100 and b 300.
    let m = merge(&[(a, 100), (b, 300)], &[800, 400]);
    assert_eq!(m.points.len(), 2);
    assert_eq!(m.points[0].0, 400);
    assert!((m.points[0].1 - (1000.0 * 0.5 + 3000.0 * 0.2) / 4000.0).abs() < 1e-9);
    assert!((m.points[1].1 - (1000.0 * 0.8 + 3000.0 * 0.4) / 4000.0).abs() < 1e-9);
    assert_eq!(
        (m.sampled_keys, m.sampled_accesses, m.accesses_total),
        (400, 600, 4000)
    );
    assert_eq!(m.sample_rate, 0.05);
    assert!(m.trustworthy());
    // No shares: equal halves. No nodes: an empty curve.
    let c = Curve {
        points: vec![(50, 1.0)],
        accesses_total: 1,
        ..Curve::default()
    };
    let m = merge(&[(c.clone(), 0), (c, 0)], &[100]);
    assert_eq!(m.points, vec![(100, 1.0)]);
    assert_eq!(merge(&[], &[100]).points, vec![(100, 0.0)]);
}

// --- accuracy against the policy at full size ---

fn key_bytes(k: u32) -> Vec<u8> {
    format!("user:{k:08}").into_bytes()
}

/// Value sizes from 20 bytes to 4 KiB, log-uniform, charged as the store does.
fn sizes(n: usize, rng: &mut StdRng) -> Vec<u64> {
    (0..n as u32)
        .map(|k| {
            let value = 2f64.powf(rng.gen_range(4.3..12.0)) as usize;
            charge(key_bytes(k).len(), value) as u64
        })
        .collect()
}

const MULTIPLES: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// One tracker per node, fed as a node would be: reads, and a write after
/// each miss of the node's real cache (at its base limit).
struct Node {
    trackers: Vec<Tracker<Seeded>>,
    real: Fifo,
}

/// Replay `trace` over `nodes` nodes (keys split by hash, node `i` weighted
/// `weights[i]`), against the policy at full size at each multiple of `base` split in
/// proportion to the weights, and against the trackers' predictions, for
/// several hash seeds. Returns the largest absolute error.
fn replay(name: &str, sizes: &[u64], trace: &[u32], base: u64, weights: &[u64]) -> f64 {
    let total_weight: u64 = weights.iter().sum();
    let node_of = |k: u32| {
        let mut h = DefaultHasher::new();
        h.write_u32(k);
        let slot = h.finish() % total_weight;
        let mut acc = 0;
        weights
            .iter()
            .position(|&w| {
                acc += w;
                slot < acc
            })
            .unwrap()
    };
    let share = |i: usize, total: f64| (total * weights[i] as f64 / total_weight as f64) as u64;
    let seeds = [11u64, 22, 33, 44, 55];
    let mut nodes: Vec<Node> = (0..weights.len())
        .map(|i| Node {
            trackers: seeds
                .iter()
                .map(|&s| {
                    Tracker::with_hasher(
                        MAX_KEYS,
                        share(i, base as f64),
                        Seeded(s * 1000 + i as u64),
                    )
                })
                .collect(),
            real: Fifo::new(share(i, base as f64)),
        })
        .collect();
    let mut truth: Vec<Vec<Fifo>> = MULTIPLES
        .iter()
        .map(|m| {
            (0..weights.len())
                .map(|i| Fifo::new(share(i, base as f64 * m)))
                .collect()
        })
        .collect();
    for &k in trace {
        let size = sizes[k as usize];
        let i = node_of(k);
        for caches in truth.iter_mut() {
            caches[i].read(k, size);
        }
        let node = &mut nodes[i];
        let hit = node.real.read(k, size);
        let key = key_bytes(k);
        for t in &node.trackers {
            t.record(&key, if hit { size } else { 0 });
            if !hit {
                t.record_write(&key, size);
            }
        }
    }
    let mut worst = 0f64;
    for (seed, _) in seeds.iter().enumerate() {
        let parts: Vec<(Curve, u64)> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let sizes: Vec<u64> = MULTIPLES
                    .iter()
                    .map(|m| share(i, base as f64 * m))
                    .collect();
                (node.trackers[seed].curve(&sizes), share(i, base as f64))
            })
            .collect();
        let sizes: Vec<u64> = MULTIPLES.iter().map(|m| (base as f64 * m) as u64).collect();
        let predicted = merge(&parts, &sizes);
        assert!(predicted.trustworthy(), "{predicted:?}");
        let mut line = format!(
            "{name} seed {seed}: keys {} rate {:.4} |",
            predicted.sampled_keys, predicted.sample_rate
        );
        for (j, m) in MULTIPLES.iter().enumerate() {
            let hits: u64 = truth[j].iter().map(|l| l.hits).sum();
            let reads: u64 = truth[j].iter().map(|l| l.reads).sum();
            let real = hits as f64 / reads as f64;
            let guess = predicted.points[j].1;
            worst = worst.max((real - guess).abs());
            line += &format!(" {m}x {real:.3}/{guess:.3} ({:+.3})", guess - real);
        }
        println!("{line}");
    }
    println!(
        "{name}: worst absolute error {worst:.4} (real/predicted per point; base hit rate {:.3})",
        nodes[0].real.hit_rate()
    );
    worst
}

fn zipf_trace(n: usize, len: usize, s: f64, rng: &mut StdRng) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for i in 1..=n {
        acc += 1.0 / (i as f64).powf(s);
        cdf.push(acc);
    }
    // Ranks go to keys in a shuffled order, so popularity is not key order.
    let mut keys: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        keys.swap(i, rng.gen_range(0..=i));
    }
    (0..len)
        .map(|_| {
            let u = rng.gen::<f64>() * acc;
            keys[cdf.partition_point(|&c| c < u).min(n - 1)]
        })
        .collect()
}

#[test]
fn accuracy_zipf_099() {
    let n = 200_000;
    let mut rng = StdRng::seed_from_u64(42);
    let sizes = sizes(n, &mut rng);
    let footprint: u64 = sizes.iter().sum();
    let trace = zipf_trace(n, 2_000_000, 0.99, &mut rng);
    // The base cache holds 1/16 of the footprint, so the smallest point
    // (1/64) still spans a few dozen sampled keys: below that, too few
    // sampled keys fall within the distance for the estimate (see the
    // module's notes on accuracy).
    let base = footprint / 16;
    let single = replay("zipf", &sizes, &trace, base, &[1]);
    let split = replay("zipf 3 nodes 1:1:2", &sizes, &trace, base, &[1, 1, 2]);
    assert!(single <= 0.03 && split <= 0.03, "{single} {split}");
}

#[test]
fn accuracy_looping_scan() {
    let n = 30_000;
    let mut rng = StdRng::seed_from_u64(43);
    let sizes = sizes(n, &mut rng);
    let footprint: u64 = sizes.iter().sum();
    let trace: Vec<u32> = (0..10).flat_map(|_| 0..n as u32).collect();
    // The loop's footprint falls between 2× and 4×, away from any point:
    // FIFO misses every read below it and hits all but the first pass
    // above it.
    let base = footprint / 3;
    let single = replay("loop", &sizes, &trace, base, &[1]);
    let split = replay("loop 3 nodes 1:1:2", &sizes, &trace, base, &[1, 1, 2]);
    assert!(single <= 0.03 && split <= 0.03, "{single} {split}");
}

#[test]
fn a_plan_change_resizes_the_copies_and_starts_a_new_window() {
    let t = exact(1000);
    let key = |k: u32| k.to_le_bytes();
    for k in 0..40 {
        t.record_write(&key(k), 100);
    }
    for k in 0..40 {
        t.record(&key(k), 0);
    }
    // 40 keys of 100 bytes fit the 4000-byte limit.
    assert_eq!(t.curve(&[LIMIT]).points, vec![(LIMIT, 1.0)]);
    t.set_limit(LIMIT);
    assert_eq!(t.curve(&[LIMIT]).accesses_total, 40, "the same limit");
    t.set_limit(LIMIT / 4);
    assert_eq!(t.curve(&[LIMIT]).accesses_total, 0, "a new window");
    check(&t.lock());
    for k in 0..40 {
        t.record(&key(k), 0);
    }
    // At the new limit, room for 10 of the 40 keys: the copy shrank to
    // the 10 it kept in main, and the loop's new reads churn through small
    // without displacing more than one of them. Four times the new limit
    // (the old one) still holds them all.
    let c = t.curve(&[LIMIT / 4, LIMIT]);
    assert_eq!(c.points, vec![(LIMIT / 4, 9.0 / 40.0), (LIMIT, 1.0)]);
    check(&t.lock());
}
