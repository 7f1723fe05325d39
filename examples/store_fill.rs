//! Fill a 64 MiB `Store` with 100-byte values under 10–20-byte keys and
//! report what it holds and what it costs, to compare with `memcached -m 64`
//! (about 330–350k such items in 192-byte slab chunks).
//!
//! `cargo run --release --example store_fill [limit_mib] [value_len]`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use memgate::node::counters::CacheStats;
use memgate::node::store::{charge, Store};
use memgate::protocol::request::{Command, Get, Store as StoreCmd, StoreMode};
use memgate::protocol::Response;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let limit_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let value_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let limit = limit_mib << 20;
    let now = 1_700_000_000;
    let rss0 = rss_kib();

    let stats = Arc::new(CacheStats::default());
    let store = Store::new(limit, 1 << 20, stats.clone());
    let value = Bytes::from(vec![b'v'; value_len]);

    // Insert three times what fits, so the store runs in steady-state eviction.
    let total = 3 * limit / (value_len + 64);
    let t = Instant::now();
    for i in 0..total {
        // "key:" + 6..16 digits: 10–20 bytes.
        let key = format!("key:{:0width$}", i, width = 6 + i % 11);
        let cmd = Command::Store(StoreCmd {
            mode: StoreMode::Set,
            key: Bytes::from(key),
            flags: 0,
            exptime: 0,
            data: value.clone(),
            cas: None,
            invalidate: false,
            vivify: None,
        });
        if !matches!(store.execute(&cmd, now), Response::Stored { .. }) {
            eprintln!("set {i} failed");
            std::process::exit(1);
        }
    }
    let set_secs = t.elapsed().as_secs_f64();

    // Read back the most recent keys.
    let t = Instant::now();
    let reads = 1_000_000usize;
    let mut hits = 0usize;
    for j in 0..reads {
        let i = total - 1 - (j % (total / 4));
        let key = format!("key:{:0width$}", i, width = 6 + i % 11);
        let g = Command::Get(Get {
            keys: smallvec::smallvec![Bytes::from(key)],
            ..Get::default()
        });
        if let Response::Get(v) = store.execute(&g, now) {
            hits += v.iter().flatten().count();
        }
    }
    let get_secs = t.elapsed().as_secs_f64();

    let u = store.usage();
    let rss = rss_kib();
    let evictions = stats.evictions.load(std::sync::atomic::Ordering::Relaxed);
    println!("limit            {limit} bytes ({limit_mib} MiB), value {value_len} B, keys 10-20 B");
    println!(
        "per-item overhead {} B (header and index, no flags, no TTL)",
        charge(0, value_len) - value_len
    );
    println!(
        "sets             {total} ({:.0} ns/set)",
        set_secs * 1e9 / total as f64
    );
    println!(
        "gets             {reads} ({:.0} ns/get, {hits} hits)",
        get_secs * 1e9 / reads as f64
    );
    println!("items held       {}", u.items);
    println!("evictions        {evictions}");
    println!(
        "usage().bytes    {} ({:.1}% of limit)",
        u.bytes,
        100.0 * u.bytes as f64 / limit as f64
    );
    println!("bytes per item   {:.1}", u.bytes as f64 / u.items as f64);
    println!(
        "RSS              {} KiB before, {} KiB after ({:.1} MiB)",
        rss0,
        rss,
        rss as f64 / 1024.0
    );
    let target = 1.15 * limit as f64 / 1024.0 + 20.0 * 1024.0;
    println!(
        "RSS target       <= {:.0} KiB (1.15 x limit + 20 MiB): {}",
        target,
        if (rss as f64) <= target {
            "OK"
        } else {
            "EXCEEDED"
        }
    );
}
