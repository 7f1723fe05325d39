use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, Hasher};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// Every key sampled: hashes are all below `u64::MAX` in practice.
fn exact(max_keys: usize) -> Tracker<Seeded> {
    Tracker::with_hasher(max_keys, Seeded(1))
}

fn point(c: &Curve, size: u64) -> f64 {
    c.points.iter().find(|p| p.0 == size).map(|p| p.1).unwrap()
}

/// Check the core's structures against each other and a direct sum.
fn check(core: &Core) {
    assert!(core.slots.len() <= core.max_keys);
    for (s, slot) in core.slots.iter().enumerate() {
        assert!(slot.hash <= core.threshold);
        assert_eq!(core.find(slot.hash).map(|f| f.1), Some(s));
        assert_eq!(usize::from(core.heap[usize::from(slot.heap_pos)]), s);
        assert_ne!(slot.time, NONE);
        assert_eq!(usize::from(core.owner[usize::from(slot.time)]), s);
        assert!(usize::from(slot.time) < core.clock);
    }
    assert_eq!(core.heap.len(), core.slots.len());
    for i in 1..core.heap.len() {
        assert!(core.heap_hash((i - 1) / 2) >= core.heap_hash(i));
    }
    assert_eq!(
        core.index.iter().filter(|&&s| s != NONE).count(),
        core.slots.len()
    );
    for t in 0..=core.clock {
        let direct: u32 = core
            .slots
            .iter()
            .filter(|s| usize::from(s.time) < t)
            .map(|s| units(s.size))
            .sum();
        assert_eq!(core.prefix(t), direct);
    }
}

#[test]
fn distances_in_bytes_with_every_key_sampled() {
    let t = exact(100);
    // a(96) b(200) c(304) (charges are multiples of 8), then a again:
    // 96 + 200 + 304 = 600 bytes.
    t.record_write(b"a", 96);
    t.record_write(b"b", 200);
    t.record_write(b"c", 304);
    t.record(b"a", 96);
    // b again, after c and a: 200 + 304 + 96.
    t.record(b"b", 200);
    // b right away: only itself.
    t.record(b"b", 200);
    let c = t.curve(&[300, 599, 609, 10_000]);
    assert_eq!(c.sample_rate, 1.0);
    assert_eq!(c.sampled_keys, 3);
    assert_eq!(c.sampled_accesses, 3);
    assert_eq!(c.accesses_total, 3);
    // 200 is in the first bucket, below 256 bytes.
    assert!((point(&c, 300) - 1.0 / 3.0).abs() < 1e-9);
    assert!(point(&c, 599) < 1.0 && point(&c, 599) > 1.0 / 3.0);
    // 600 lies in the bucket [558, 609): interpolated below, all above.
    assert_eq!(point(&c, 609), 1.0);
    assert_eq!(point(&c, 10_000), 1.0);
    check(&t.lock());
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
fn a_removed_key_stops_counting_toward_distances() {
    let t = exact(100);
    t.record_write(b"a", 100);
    t.record_write(b"big", 100_000);
    t.remove(b"big");
    t.record(b"a", 100);
    let c = t.curve(&[1000]);
    assert_eq!(c.points[0].1, 1.0);
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
    let t = Tracker::with_hasher(max, Seeded(7));
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
fn the_tracker_fits_in_64_kib() {
    let t = Tracker::new();
    let total = t.heap_bytes() + size_of::<Tracker>();
    println!(
        "tracker: {} heap + {} inline = {total} bytes for {MAX_KEYS} keys",
        t.heap_bytes(),
        size_of::<Tracker>()
    );
    assert!(total <= 64 * 1024, "{total}");
    // Nothing grows with use.
    for i in 0..200_000u32 {
        t.record_write(&i.to_le_bytes(), 100);
        t.record(&(i / 2).to_le_bytes(), 100);
    }
    assert_eq!(t.heap_bytes() + size_of::<Tracker>(), total);
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
    let t = Tracker::new();
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

// --- accuracy against an exact byte-budget LRU ---

/// An exact LRU over keys `0..n` with a byte budget.
struct Lru {
    limit: u64,
    used: u64,
    prev: Vec<u32>,
    next: Vec<u32>,
    present: Vec<bool>,
    head: u32,
    tail: u32,
    hits: u64,
    reads: u64,
}

const END: u32 = u32::MAX;

impl Lru {
    fn new(n: usize, limit: u64) -> Lru {
        Lru {
            limit,
            used: 0,
            prev: vec![END; n],
            next: vec![END; n],
            present: vec![false; n],
            head: END,
            tail: END,
            hits: 0,
            reads: 0,
        }
    }

    fn unlink(&mut self, k: u32) {
        let (p, n) = (self.prev[k as usize], self.next[k as usize]);
        if p == END {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == END {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
    }

    fn push_front(&mut self, k: u32) {
        self.prev[k as usize] = END;
        self.next[k as usize] = self.head;
        if self.head != END {
            self.prev[self.head as usize] = k;
        }
        self.head = k;
        if self.tail == END {
            self.tail = k;
        }
    }

    /// A get, then a set on a miss (cache-aside). Returns the hit.
    fn read(&mut self, k: u32, sizes: &[u64]) -> bool {
        let size = sizes[k as usize];
        self.reads += 1;
        if self.present[k as usize] {
            self.hits += 1;
            self.unlink(k);
            self.push_front(k);
            return true;
        }
        if size > self.limit {
            return false;
        }
        self.present[k as usize] = true;
        self.used += size;
        self.push_front(k);
        while self.used > self.limit {
            let victim = self.tail;
            self.unlink(victim);
            self.present[victim as usize] = false;
            self.used -= sizes[victim as usize];
        }
        false
    }

    fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.reads as f64
    }
}

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
    real: Lru,
}

/// Replay `trace` over `nodes` nodes (keys split by hash, node `i` weighted
/// `weights[i]`), against exact LRUs at each multiple of `base` split in
/// proportion to the weights, and against the trackers' predictions, for
/// several hash seeds. Returns the largest absolute error.
fn replay(name: &str, sizes: &[u64], trace: &[u32], base: u64, weights: &[u64]) -> f64 {
    let n = sizes.len();
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
                .map(|&s| Tracker::with_hasher(MAX_KEYS, Seeded(s * 1000 + i as u64)))
                .collect(),
            real: Lru::new(n, share(i, base as f64)),
        })
        .collect();
    let mut truth: Vec<Vec<Lru>> = MULTIPLES
        .iter()
        .map(|m| {
            (0..weights.len())
                .map(|i| Lru::new(n, share(i, base as f64 * m)))
                .collect()
        })
        .collect();
    for &k in trace {
        let size = sizes[k as usize];
        let i = node_of(k);
        for lrus in truth.iter_mut() {
            lrus[i].read(k, sizes);
        }
        let node = &mut nodes[i];
        let hit = node.real.read(k, sizes);
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
        "{name}: worst absolute error {worst:.4} (real/predicted per point; base LRU hit rate {:.3})",
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
    // an LRU misses every read below it and hits all but the first pass
    // above it.
    let base = footprint / 3;
    let single = replay("loop", &sizes, &trace, base, &[1]);
    let split = replay("loop 3 nodes 1:1:2", &sizes, &trace, base, &[1, 1, 2]);
    assert!(single <= 0.03 && split <= 0.03, "{single} {split}");
}
