use bytes::Bytes;

use super::*;
use crate::protocol::request::{Store, StoreMode};

fn set(key: &str, len: usize) -> Command {
    Command::Store(Store {
        mode: StoreMode::Set,
        key: Bytes::copy_from_slice(key.as_bytes()),
        flags: 0,
        exptime: 0,
        data: Bytes::from(vec![b'v'; len]),
        cas: None,
        invalidate: false,
        vivify: None,
    })
}

const T: u64 = 1_700_000_000; // a bucket boundary: divisible by 5

fn ms(secs: u64) -> u64 {
    secs * 1000
}

fn listed(keys: &[HotKey]) -> Vec<(&[u8], u64)> {
    keys.iter().map(|k| (k.key.as_slice(), k.count)).collect()
}

#[test]
fn off_until_asked_and_cheap_while_off() {
    let h = HotKeys::default();
    h.record_read(b"a", 0, T);
    assert!(!h.is_tracking());
    assert_eq!(h.heap_bytes(), 0);
    assert!(
        std::mem::size_of::<HotKeys>() <= 32,
        "a cache nobody watches"
    );

    let first = h.view(ms(T), 10);
    assert!(h.is_tracking());
    assert_eq!((first.ops, first.by_ops.len(), first.since), (0, 0, T));
    assert_eq!(first.sample_rate, 1.0);
}

#[test]
fn counts_ops_and_bytes_exactly_at_low_rates() {
    let h = HotKeys::default();
    h.view(ms(T), 10);
    for i in 0..1000u64 {
        let now = T + i / 500; // 500 keys a second: no sampling
        h.record_read(b"hot", 10, now);
        if i % 4 == 0 {
            h.record(&set("big", 1000), now);
        }
        h.record_read(format!("cold{i}").as_bytes(), 0, now);
    }
    let v = h.view(ms(T + 2) + 500, 3);
    assert_eq!(v.sample_rate, 1.0);
    assert_eq!(v.ops, 2250);
    assert_eq!(
        listed(&v.by_ops)[..2],
        [(&b"hot"[..], 1000), (&b"big"[..], 250)]
    );
    assert_eq!(v.by_ops[0].error, 0);
    // "cold0".."cold999": 10 keys of 5 bytes, 90 of 6, 900 of 7.
    assert_eq!(
        v.bytes,
        1000 * 13 + 250 * 1003 + (10 * 5 + 90 * 6 + 900 * 7)
    );
    assert_eq!(
        listed(&v.by_bytes)[..2],
        [(&b"big"[..], 250 * 1003), (&b"hot"[..], 1000 * 13)]
    );
    assert_eq!((v.start_ms, v.end_ms), (ms(T), ms(T + 2) + 500));
}

#[test]
fn the_window_keeps_one_full_bucket_and_the_current_one() {
    let h = HotKeys::default();
    h.view(ms(T), 10);
    h.record_read(b"early", 0, T + 1);
    h.record_read(b"later", 0, T + WINDOW_SECS + 1);
    // Both buckets are in view.
    let v = h.view(ms(T + WINDOW_SECS + 2), 10);
    assert_eq!(v.ops, 2);
    assert_eq!(v.start_ms, ms(T));
    // The first bucket is gone once the second is complete.
    let v = h.view(ms(T + 2 * WINDOW_SECS), 10);
    assert_eq!(listed(&v.by_ops), [(&b"later"[..], 1)]);
    assert_eq!(v.start_ms, ms(T + WINDOW_SECS));
    // After a silence both are empty.
    let v = h.view(ms(T + 10 * WINDOW_SECS), 10);
    assert_eq!((v.ops, v.by_ops.len()), (0, 0));
    assert_eq!(v.start_ms, ms(T + 9 * WINDOW_SECS));
}

/// At 200k keys a second the tracker samples about one in eight and scales
/// the counts back up: a key with 1% of the traffic comes out within 20%
/// (over 4 standard deviations of its ~500 samples), the total within 5%.
#[test]
fn sampling_is_scaled_back_up() {
    let h = HotKeys::default();
    h.view(ms(T), 10);
    let per_sec = 200_000u64;
    for s in 0..3 {
        for i in 0..per_sec {
            let key = if i % 100 == 0 {
                "hot".to_owned()
            } else {
                format!("k{}", i % 50_000)
            };
            h.record_read(key.as_bytes(), 0, T + s);
        }
    }
    let v = h.view(ms(T + 3), 5);
    assert!(v.sample_rate <= 0.125, "sampled at {}", v.sample_rate);
    let total = 3 * per_sec;
    assert!(
        v.ops.abs_diff(total) < total / 20,
        "total {} against {total}",
        v.ops
    );
    assert_eq!(v.by_ops[0].key, b"hot");
    let truth = 3 * per_sec / 100;
    let got = v.by_ops[0].count;
    assert!(got.abs_diff(truth) < truth / 5, "hot {got} against {truth}");
    // The rate goes back up within two seconds when the traffic drops.
    for s in 4..6 {
        for i in 0..1000 {
            h.record_read(format!("q{i}").as_bytes(), 0, T + s);
        }
    }
    assert_eq!(h.view(ms(T + 6), 1).sample_rate, 1.0);
}

#[test]
fn stops_when_nobody_asks_and_frees_its_memory() {
    let h = HotKeys::default();
    h.view(ms(T), 10);
    h.record_read(b"a", 0, T + 1);
    assert!(h.heap_bytes() > 0);
    h.record_read(b"a", 0, T + IDLE_SECS);
    assert!(h.is_tracking(), "asked within IDLE_SECS");
    h.record_read(b"a", 0, T + IDLE_SECS + 1);
    assert!(!h.is_tracking());
    assert_eq!(h.heap_bytes(), 0);
}

/// Four full sketches of 250-byte keys: the most a watched cache holds.
#[test]
fn a_tracked_cache_is_bounded() {
    let h = HotKeys::default();
    h.view(ms(T), 10);
    let long = "x".repeat(240);
    for s in 0..2 {
        for i in 0..5_000 {
            let key = format!("{long}{i}");
            h.record(&set(&key, 10), T + s * WINDOW_SECS);
        }
    }
    let held = h.heap_bytes();
    let bound = 4 * CAPACITY * 400;
    assert!(held <= bound, "{held} > {bound}");
}
