//! What the what-if tracker (`mrc`) costs: ns per `record` for keys
//! outside and inside the sample, on a Zipf 0.99 stream, next to a store
//! `get` of the same keys; CPU at 100k ops/s; and the tracker's memory.
//!
//! `cargo run --release --example mrc_cost [keys]`
//!
//! `mrc_cost store on|off [keys]` instead replays a Zipf 0.99 stream of
//! gets and sets (9:1) through a store with the tracker on or off and
//! prints ns per command; under
//! `valgrind --tool=callgrind --toggle-collect='*replay*'` the two runs'
//! instruction counts are the tracker's cost per command.

use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use memgate::bench::keys::{self, Zipf};
use memgate::mrc::Tracker;
use memgate::node::counters::CacheStats;
use memgate::node::store::{charge, Store};
use memgate::protocol::request::{Command, Get, Store as StoreCmd, StoreMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const OPS: usize = 2_000_000;
const VALUE: usize = 100;

/// Nanoseconds per call of `f` over `keys`, best of three passes.
fn ns_per(keys: &[Bytes], mut f: impl FnMut(&Bytes)) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for k in keys {
                f(k);
            }
            t.elapsed().as_nanos() as f64 / keys.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:010}"))
}

/// Zipf 0.99 over `n` keys, with the load generator's own sampler.
fn zipf(n: usize, len: usize, rng: &mut StdRng) -> Vec<Bytes> {
    let law = Zipf::new(n as u64, 0.99);
    let mut ranks = keys::Rng::new(rng.gen());
    (0..len)
        .map(|_| key((law.sample(&mut ranks) - 1) as usize))
        .collect()
}

fn set(k: &Bytes) -> Command {
    Command::Store(StoreCmd {
        mode: StoreMode::Set,
        key: k.clone(),
        flags: 0,
        exptime: 0,
        data: Bytes::from(vec![b'v'; VALUE]),
        cas: None,
        invalidate: false,
        vivify: None,
    })
}

/// The measured loop (named for callgrind's `--toggle-collect`).
#[inline(never)]
fn replay(store: &Store, commands: &[Command], now: u64) {
    for c in commands {
        black_box(store.execute(black_box(c), now));
    }
}

/// `store on|off [keys]`: a store with or without the tracker, filled with
/// every key, then a 9:1 get/set Zipf stream.
fn store_mode(on: bool, n: usize) {
    let mut rng = StdRng::seed_from_u64(2);
    let store = Store::new(256 << 20, 1 << 20, Arc::new(CacheStats::default()));
    let store = if on { store } else { store.without_what_if() };
    let now = 1_700_000_000;
    let fill: Vec<Command> = (0..n).map(|i| set(&key(i))).collect();
    for c in &fill {
        store.execute(c, now);
    }
    let commands: Vec<Command> = zipf(n, 500_000, &mut rng)
        .iter()
        .map(|k| {
            if rng.gen_range(0..10) == 0 {
                set(k)
            } else {
                Command::Get(Get {
                    keys: smallvec::smallvec![k.clone()],
                    ..Get::default()
                })
            }
        })
        .collect();
    let t = Instant::now();
    replay(&store, &commands, now);
    let ns = t.elapsed().as_nanos() as f64 / commands.len() as f64;
    println!(
        "store, tracker {}: {ns:.1} ns per command ({} commands, {n} keys)",
        if on { "on" } else { "off" },
        commands.len()
    );
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("store") {
        let on = args.nth(1).as_deref() != Some("off");
        let n = args
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        return store_mode(on, n);
    }
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = StdRng::seed_from_u64(1);
    let size = charge(14, VALUE) as u64;

    // A tracker that has seen every key once: the sample rate has dropped
    // to about 2048 / n.
    let tracker = Tracker::new(1 << 30);
    for i in 0..n {
        tracker.record_write(&key(i), size);
    }
    let stream = zipf(n, OPS, &mut rng);
    let mixed = ns_per(&stream, |k| tracker.record(black_box(k), size));
    let rate = tracker.curve(&[1]).sample_rate;

    // Split the stream by whether the key is in the sample.
    let (fast, slow): (Vec<Bytes>, Vec<Bytes>) = {
        let sampled: std::collections::HashSet<Bytes> = stream
            .iter()
            .filter(|k| {
                // A key is in the sample iff recording it changes the sampled
                // read count.
                let before = tracker.curve(&[1]).sampled_accesses;
                tracker.record(k, size);
                tracker.curve(&[1]).sampled_accesses > before
            })
            .take(20_000)
            .cloned()
            .collect();
        stream
            .iter()
            .take(200_000)
            .cloned()
            .partition(|k| !sampled.contains(k))
    };
    let not_sampled = ns_per(&fast, |k| tracker.record(black_box(k), size));
    let in_sample = ns_per(&slow, |k| tracker.record(black_box(k), size));
    let hasher = foldhash::quality::FixedState::with_seed(1);
    let hash_only = ns_per(&fast, |k| {
        black_box(hasher.hash_one(black_box(&k[..])));
    });

    // Every key sampled: a small cache's tracker, R = 1.
    let small = Tracker::new(1 << 30);
    let few: Vec<Bytes> = (0..OPS).map(|_| key(rng.gen_range(0..1500))).collect();
    let sampled = ns_per(&few, |k| small.record(black_box(k), size));

    // A store get of the same Zipf keys, for scale (without its own tracker).
    let stats = Arc::new(CacheStats::default());
    let store = Store::new(256 << 20, 1 << 20, stats).without_what_if();
    let now = 1_700_000_000;
    for i in 0..n {
        store.execute(&set(&key(i)), now);
    }
    let gets: Vec<Command> = stream
        .iter()
        .take(500_000)
        .map(|k| {
            Command::Get(Get {
                keys: smallvec::smallvec![k.clone()],
                ..Get::default()
            })
        })
        .collect();
    let t = Instant::now();
    for g in &gets {
        black_box(store.execute(g, now));
    }
    let get = t.elapsed().as_nanos() as f64 / gets.len() as f64;

    let memory = tracker.heap_bytes() + std::mem::size_of::<Tracker>();
    println!("keys {n}, Zipf 0.99 stream of {OPS} reads, sample rate {rate:.5}");
    println!("record, not sampled      {not_sampled:6.1} ns  (the hash alone {hash_only:.1} ns)");
    println!(
        "record, sampled          {in_sample:6.1} ns  ({} of the stream's first 200k reads)",
        slow.len()
    );
    println!("record, sampled (R = 1)  {sampled:6.1} ns  (a 1500-key cache: every read)");
    println!("record, Zipf mix         {mixed:6.1} ns");
    println!(
        "store get (same keys)    {get:6.1} ns  -> tracker adds {:.1}% to the store's work",
        100.0 * mixed / get
    );
    println!(
        "at 100k reads/s: {:.3}% of one core (Zipf mix), {:.3}% with every key sampled",
        mixed * 1e5 / 1e9 * 100.0,
        sampled * 1e5 / 1e9 * 100.0
    );
    println!("tracker memory           {memory} bytes (limit 65536)");
}
