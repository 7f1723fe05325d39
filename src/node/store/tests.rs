use super::*;
use crate::protocol::request::Store as StoreCmd;
use crate::protocol::test_util::{self, arith, delete};
use proptest::prelude::*;
use std::collections::HashMap;

const NOW: u64 = 1_700_000_000;
const MB: usize = 1 << 20;

fn new_store() -> (Store, Arc<CacheStats>) {
    let stats = Arc::new(CacheStats::default());
    (Store::new(64 * MB, MB, stats.clone()), stats)
}

fn stat(stats: &CacheStats, name: &str) -> u64 {
    stats
        .counters()
        .into_iter()
        .find(|c| c.0 == name)
        .map(|c| c.1)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn st(mode: StoreMode, key: &str, val: &[u8], exptime: Exptime) -> StoreCmd {
    StoreCmd {
        exptime,
        ..test_util::store(mode, key, val)
    }
}

fn run_store(s: &Store, cmd: StoreCmd, now: u64) -> Response {
    s.execute(&Command::Store(cmd), now)
}

fn set(s: &Store, key: &str, val: &[u8], exptime: Exptime, now: u64) -> u64 {
    match run_store(s, st(StoreMode::Set, key, val, exptime), now) {
        Response::Stored { cas } => cas,
        other => panic!("set {key}: {other:?}"),
    }
}

fn get_with(s: &Store, g: Get, now: u64) -> Option<Found> {
    match s.execute(&Command::Get(g), now) {
        Response::Get(mut v) if v.len() == 1 => v.pop().flatten(),
        other => panic!("get: {other:?}"),
    }
}

fn get(s: &Store, key: &str, now: u64) -> Option<Found> {
    get_with(s, test_util::get(key), now)
}

fn value(s: &Store, key: &str, now: u64) -> Option<Vec<u8>> {
    get(s, key, now).map(|f| f.data.to_vec())
}

fn num(r: Response) -> u64 {
    match r {
        Response::Number { value, .. } => value,
        other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn set_then_get_returns_value_flags_and_cas() {
    let (s, stats) = new_store();
    let mut cmd = st(StoreMode::Set, "k", b"hello", 0);
    cmd.flags = 0xdead_beef;
    let Response::Stored { cas } = run_store(&s, cmd, NOW) else {
        panic!("not stored")
    };
    let f = get(&s, "k", NOW).expect("hit");
    assert_eq!(f.data, &b"hello"[..]);
    assert_eq!(f.flags, 0xdead_beef);
    assert_eq!(f.cas, cas);
    assert_eq!(f.ttl, -1);
    assert_eq!(&f.key[..], b"k");
    let cas2 = set(&s, "k", b"again", 0, NOW);
    assert!(cas2 > cas, "every store gets a new unique");
    assert_eq!(stat(&stats, "cmd_set"), 2);
    assert_eq!(stat(&stats, "total_items"), 2);
    assert_eq!(s.usage().items, 1);
}

#[test]
fn add_replace_modes() {
    let (s, _) = new_store();
    assert_eq!(
        run_store(&s, st(StoreMode::Replace, "k", b"r", 0), NOW),
        Response::NotStored
    );
    assert_eq!(value(&s, "k", NOW), None);
    assert!(matches!(
        run_store(&s, st(StoreMode::Add, "k", b"a", 0), NOW),
        Response::Stored { .. }
    ));
    assert_eq!(
        run_store(&s, st(StoreMode::Add, "k", b"b", 0), NOW),
        Response::NotStored
    );
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"a"[..]));
    assert!(matches!(
        run_store(&s, st(StoreMode::Replace, "k", b"c", 0), NOW),
        Response::Stored { .. }
    ));
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"c"[..]));
    // add succeeds over an expired item.
    set(&s, "e", b"old", 10, NOW);
    assert!(matches!(
        run_store(&s, st(StoreMode::Add, "e", b"new", 0), NOW + 10),
        Response::Stored { .. }
    ));
    assert_eq!(value(&s, "e", NOW + 10).as_deref(), Some(&b"new"[..]));
}

#[test]
fn append_prepend_keep_flags_and_exptime() {
    let (s, _) = new_store();
    assert_eq!(
        run_store(&s, st(StoreMode::Append, "k", b"x", 0), NOW),
        Response::NotStored
    );
    assert_eq!(
        run_store(&s, st(StoreMode::Prepend, "k", b"x", 0), NOW),
        Response::NotStored
    );
    let mut cmd = st(StoreMode::Set, "k", b"mid", 100);
    cmd.flags = 7;
    let Response::Stored { cas: c1 } = run_store(&s, cmd, NOW) else {
        panic!()
    };
    let mut app = st(StoreMode::Append, "k", b">", 5000);
    app.flags = 99;
    let Response::Stored { cas: c2 } = run_store(&s, app, NOW) else {
        panic!()
    };
    assert!(c2 > c1);
    run_store(&s, st(StoreMode::Prepend, "k", b"<", 0), NOW);
    let f = get(&s, "k", NOW + 1).expect("hit");
    assert_eq!(f.data, &b"<mid>"[..]);
    assert_eq!(f.flags, 7, "append/prepend ignore new flags");
    assert_eq!(f.ttl, 99, "and keep the old exptime");
    assert_eq!(get(&s, "k", NOW + 100), None);
}

#[test]
fn append_vivify_creates_on_miss() {
    let (s, _) = new_store();
    let mut cmd = st(StoreMode::Append, "k", b"first", 0);
    cmd.vivify = Some(60);
    cmd.flags = 3;
    assert!(matches!(
        run_store(&s, cmd.clone(), NOW),
        Response::Stored { .. }
    ));
    let f = get(&s, "k", NOW).expect("created");
    assert_eq!(
        (f.data.to_vec(), f.flags, f.ttl),
        (b"first".to_vec(), 3, 60)
    );
    cmd.data = Bytes::from_static(b"+more");
    run_store(&s, cmd, NOW);
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"first+more"[..]));
}

#[test]
fn cas_modes_and_counters() {
    let (s, stats) = new_store();
    let mut cmd = st(StoreMode::Set, "k", b"v", 0);
    cmd.cas = Some(12345);
    assert_eq!(run_store(&s, cmd.clone(), NOW), Response::NotFound);
    assert_eq!(stat(&stats, "cas_misses"), 1);
    let c = set(&s, "k", b"v1", 0, NOW);
    cmd.cas = Some(c + 1000);
    assert_eq!(run_store(&s, cmd.clone(), NOW), Response::Exists);
    assert_eq!(stat(&stats, "cas_badval"), 1);
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"v1"[..]));
    cmd.cas = Some(c);
    cmd.data = Bytes::from_static(b"v2");
    let Response::Stored { cas: c2 } = run_store(&s, cmd.clone(), NOW) else {
        panic!()
    };
    assert_eq!(stat(&stats, "cas_hits"), 1);
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"v2"[..]));
    // The old unique no longer matches.
    assert_eq!(run_store(&s, cmd.clone(), NOW), Response::Exists);
    // Replace with a CAS behaves like cas.
    let mut rep = st(StoreMode::Replace, "k", b"v3", 0);
    rep.cas = Some(c2);
    assert!(matches!(run_store(&s, rep, NOW), Response::Stored { .. }));
    // Append respects a CAS.
    let mut app = st(StoreMode::Append, "k", b"!", 0);
    app.cas = Some(1);
    assert_eq!(run_store(&s, app.clone(), NOW), Response::Exists);
    app.cas = get(&s, "k", NOW).map(|f| f.cas);
    assert!(matches!(run_store(&s, app, NOW), Response::Stored { .. }));
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"v3!"[..]));
    // A zero CAS never matches (text `cas … 0`, meta `C0`): no item has
    // CAS 0. Binary's "CAS 0 = no check" is the parser's (it yields None).
    let mut zero = st(StoreMode::Set, "k", b"z", 0);
    zero.cas = Some(0);
    assert_eq!(run_store(&s, zero.clone(), NOW), Response::Exists);
    zero.cas = None;
    assert!(matches!(run_store(&s, zero, NOW), Response::Stored { .. }));
    // Add ignores the CAS and fails on an existing key.
    let mut add = st(StoreMode::Add, "k", b"a", 0);
    add.cas = Some(1);
    assert_eq!(run_store(&s, add, NOW), Response::NotStored);
}

#[test]
fn expiry_rules() {
    let (s, stats) = new_store();
    set(&s, "never", b"v", 0, NOW);
    set(&s, "rel", b"v", 100, NOW);
    set(&s, "max_rel", b"v", 2_592_000, NOW);
    set(&s, "abs", b"v", (NOW + 5000) as i64, NOW);
    set(&s, "past_abs", b"v", (NOW - 1) as i64, NOW);
    set(&s, "old", b"v", 0, NOW);
    set(&s, "old", b"v", -1, NOW);
    assert!(get(&s, "never", NOW + 100_000_000).is_some());
    assert_eq!(get(&s, "rel", NOW + 99).map(|f| f.ttl), Some(1));
    assert_eq!(get(&s, "rel", NOW + 100), None, "expires at exptime");
    assert_eq!(get(&s, "max_rel", NOW + 2_591_999).map(|f| f.ttl), Some(1));
    assert_eq!(get(&s, "max_rel", NOW + 2_592_000), None);
    assert_eq!(get(&s, "abs", NOW).map(|f| f.ttl), Some(5000));
    assert!(get(&s, "abs", NOW + 4999).is_some());
    assert_eq!(get(&s, "abs", NOW + 5000), None);
    assert_eq!(get(&s, "past_abs", NOW), None);
    assert_eq!(
        get(&s, "old", NOW),
        None,
        "negative exptime replaces and expires"
    );
    assert_eq!(stat(&stats, "get_expired"), 3);
    assert_eq!(stat(&stats, "expired"), 3);
    assert_eq!(s.usage().items, 1, "expired items are unlinked on access");
}

#[test]
fn flush_all_now_invalidates_everything_before() {
    let (s, stats) = new_store();
    for i in 0..100 {
        set(&s, &format!("k{i}"), b"value", 0, NOW);
    }
    assert_eq!(
        s.execute(&Command::FlushAll { delay: 0 }, NOW),
        Response::Ok
    );
    assert_eq!(stat(&stats, "cmd_flush"), 1);
    assert_eq!(s.usage().items, 0);
    assert_eq!(s.usage().bytes, 0);
    assert_eq!(get(&s, "k1", NOW), None);
    // Stored in the same second after the flush: live.
    set(&s, "k1", b"new", 0, NOW);
    assert_eq!(value(&s, "k1", NOW).as_deref(), Some(&b"new"[..]));
    assert_eq!(value(&s, "k1", NOW + 1).as_deref(), Some(&b"new"[..]));
}

#[test]
fn flush_all_delayed_uses_oldest_live() {
    let (s, stats) = new_store();
    set(&s, "a", b"1", 0, NOW);
    assert_eq!(
        s.execute(&Command::FlushAll { delay: 10 }, NOW),
        Response::Ok
    );
    assert!(get(&s, "a", NOW + 8).is_some());
    set(&s, "b", b"2", 0, NOW + 8);
    // memcached: oldest_live = realtime(10) - 1.
    assert_eq!(get(&s, "a", NOW + 9), None);
    assert_eq!(get(&s, "b", NOW + 9), None);
    assert_eq!(stat(&stats, "get_flushed"), 2);
    set(&s, "c", b"3", 0, NOW + 10);
    assert!(get(&s, "c", NOW + 10).is_some());
    assert!(get(&s, "c", NOW + 1000).is_some());
}

#[test]
fn incr_decr_semantics() {
    let (s, stats) = new_store();
    let a = |k: &str, incr: bool, d: u64| s.execute(&Command::Arith(arith(k, incr, d)), NOW);
    assert_eq!(a("n", true, 1), Response::NotFound);
    assert_eq!(a("n", false, 1), Response::NotFound);
    assert_eq!(stat(&stats, "incr_misses"), 1);
    assert_eq!(stat(&stats, "decr_misses"), 1);

    set(&s, "n", b"99", 0, NOW);
    assert_eq!(num(a("n", true, 1)), 100);
    assert_eq!(value(&s, "n", NOW).as_deref(), Some(&b"100"[..]));
    assert_eq!(num(a("n", false, 1)), 99);
    // memcached decrements in place and pads with spaces.
    assert_eq!(value(&s, "n", NOW).as_deref(), Some(&b"99 "[..]));
    assert_eq!(num(a("n", false, 1000)), 0, "decr floors at 0");
    assert_eq!(value(&s, "n", NOW).as_deref(), Some(&b"0  "[..]));
    assert_eq!(num(a("n", true, 5)), 5, "a padded number still parses");

    set(&s, "max", b"18446744073709551615", 0, NOW);
    assert_eq!(num(a("max", true, 2)), 1, "incr wraps at 2^64");

    for bad in [
        &b"abc"[..],
        b"12abc",
        b"",
        b"-1",
        b"18446744073709551616",
        b"   ",
    ] {
        set(&s, "bad", bad, 0, NOW);
        assert_eq!(
            a("bad", true, 1),
            Response::Error(ErrorReply::NonNumeric),
            "{bad:?}"
        );
    }
    set(&s, "sp", b" 12 ", 0, NOW);
    assert_eq!(num(a("sp", true, 1)), 13, "strtoull skips spaces");
    assert_eq!(stat(&stats, "incr_hits"), 4);
    assert_eq!(stat(&stats, "decr_hits"), 2);
}

#[test]
fn incr_keeps_flags_ttl_and_gives_new_cas() {
    let (s, _) = new_store();
    let mut cmd = st(StoreMode::Set, "n", b"9", 100);
    cmd.flags = 5;
    let Response::Stored { cas } = run_store(&s, cmd, NOW) else {
        panic!()
    };
    let r = s.execute(&Command::Arith(arith("n", true, 1)), NOW + 10);
    let Response::Number {
        value,
        cas: c2,
        ttl,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!((value, ttl), (10, 90));
    assert!(c2 > cas);
    let f = get(&s, "n", NOW + 10).expect("hit");
    assert_eq!((f.cas, f.flags, f.ttl), (c2, 5, 90));
    let mut bad_cas = arith("n", true, 1);
    bad_cas.cas = Some(cas);
    assert_eq!(s.execute(&Command::Arith(bad_cas), NOW), Response::Exists);
    let mut touch = arith("n", false, 3);
    touch.touch = Some(500);
    assert!(matches!(
        s.execute(&Command::Arith(touch), NOW + 10),
        Response::Number {
            value: 7,
            ttl: 500,
            ..
        }
    ));
}

#[test]
fn arith_vivify_returns_initial() {
    let (s, stats) = new_store();
    let mut a = arith("n", true, 5);
    a.vivify = Some(0);
    a.initial = 42;
    assert!(matches!(
        s.execute(&Command::Arith(a.clone()), NOW),
        Response::Number {
            value: 42,
            ttl: -1,
            ..
        }
    ));
    assert_eq!(value(&s, "n", NOW).as_deref(), Some(&b"42"[..]));
    assert_eq!(num(s.execute(&Command::Arith(a), NOW)), 47);
    assert_eq!(stat(&stats, "incr_misses"), 0);
}

#[test]
fn too_large_set_unlinks_and_append_keeps_old() {
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(64 * MB, 1000, stats.clone());
    set(&s, "k", b"old", 0, NOW);
    let big = vec![b'x'; 1000];
    assert_eq!(
        run_store(&s, st(StoreMode::Set, "k", &big, 0), NOW),
        Response::Error(ErrorReply::TooLarge)
    );
    assert_eq!(get(&s, "k", NOW), None, "the old value is unlinked");
    // Exactly at the limit (key + value = 1000) is fine.
    set(&s, "k", &big[..999], 0, NOW);
    set(&s, "a", &big[..900], 0, NOW);
    assert_eq!(
        run_store(&s, st(StoreMode::Append, "a", &big[..100], 0), NOW),
        Response::Error(ErrorReply::TooLarge)
    );
    assert_eq!(
        run_store(&s, st(StoreMode::Prepend, "a", &big[..100], 0), NOW),
        Response::Error(ErrorReply::TooLarge)
    );
    assert_eq!(value(&s, "a", NOW).map(|v| v.len()), Some(900), "kept");
    assert!(matches!(
        run_store(&s, st(StoreMode::Append, "a", &big[..99], 0), NOW),
        Response::Stored { .. }
    ));
    assert_eq!(
        stat(&stats, "cmd_set"),
        6,
        "refused over-size sets are not counted; over-size append results are"
    );
}

#[test]
fn item_larger_than_the_budget_is_out_of_memory() {
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(1000, 4096, stats);
    set(&s, "k", b"small", 0, NOW);
    assert_eq!(
        run_store(&s, st(StoreMode::Set, "k", &[b'x'; 2000], 0), NOW),
        Response::Error(ErrorReply::OutOfMemory)
    );
    assert_eq!(get(&s, "k", NOW), None);
    assert!(s.usage().bytes <= 1000);
}

/// One shard holding ten 100-byte items with 2-byte keys (one of them with
/// a TTL, which takes 5 bytes more: the exptime and the shape byte a
/// compact header leaves out).
fn ten_item_store() -> (Store, Arc<CacheStats>) {
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(10 * charge(2, 100) + 5, 1000, stats.clone());
    assert_eq!(s.shards.len(), 1);
    (s, stats)
}

/// Rewritten for the segment store (was `lru_evicts_least_recently_used`,
/// which read the LRU list): the same requests and the same expectations,
/// except that the next victim is checked by evicting it rather than by
/// reading the list. Each item here fills a segment of its own (the cache
/// is tiny), so S3-FIFO evicts one item at a time.
#[test]
fn eviction_keeps_read_items_and_takes_the_oldest_unread() {
    let (s, stats) = ten_item_store();
    for i in 0..10 {
        set(&s, &format!("k{i}"), &[b'v'; 100], 0, NOW);
    }
    assert_eq!(s.usage().items, 10);
    assert!(get(&s, "k0", NOW).is_some(), "read k0: now most recent");
    // add on an existing key bumps it too (memcached do_item_update).
    run_store(&s, st(StoreMode::Add, "k1", b"x", 0), NOW);
    set(&s, "ka", &[b'v'; 100], 0, NOW);
    set(&s, "kb", &[b'v'; 100], 0, NOW);
    assert!(get(&s, "k0", NOW).is_some(), "recently read survives");
    assert!(get(&s, "k1", NOW).is_some(), "recently added-to survives");
    assert_eq!(get(&s, "k2", NOW), None, "LRU tail evicted");
    assert_eq!(get(&s, "k3", NOW), None);
    assert!(get(&s, "k4", NOW).is_some());
    assert_eq!(stat(&stats, "evictions"), 2);
    assert_eq!(stat(&stats, "expired"), 0);
    // no_bump reads do not protect an item.
    let mut g = test_util::get("k4");
    g.no_bump = true;
    assert!(get_with(&s, g, NOW).is_some());
    let mut g = test_util::get("k6");
    g.no_bump = true;
    assert!(get_with(&s, g, NOW).is_some());
    // The next victims: k5, the oldest never read, then k6, read with
    // no_bump only; k4 (read) stays.
    set(&s, "kc", &[b'v'; 100], 0, NOW);
    let victims = lock(&s.shards[0]).fifo_keys();
    assert_eq!(victims.first().map(Vec::as_slice), Some(&b"k6"[..]));
    set(&s, "kd", &[b'v'; 100], 0, NOW);
    let mut g = test_util::get("k4");
    g.no_bump = true;
    assert!(get_with(&s, g, NOW).is_some(), "k4 was read");
    for k in ["k5", "k6"] {
        let mut g = test_util::get(k);
        g.no_bump = true;
        assert_eq!(get_with(&s, g, NOW), None, "{k} evicted");
    }
    assert_eq!(stat(&stats, "evictions"), 4);
    lock(&s.shards[0]).check();
}

#[test]
fn evicting_an_expired_item_counts_as_expired() {
    let (s, stats) = ten_item_store();
    set(&s, "k0", &[b'v'; 100], 5, NOW);
    for i in 1..10 {
        set(&s, &format!("k{i}"), &[b'v'; 100], 0, NOW);
    }
    set(&s, "kx", &[b'v'; 100], 0, NOW + 10);
    assert_eq!(stat(&stats, "evictions"), 0);
    assert_eq!(stat(&stats, "expired"), 1);
    assert_eq!(s.usage().items, 10);
}

/// The bytes `key` is charged, from `me`'s `size`, checked against what
/// its key, value length, flags and TTL allow (its CAS field takes 1 to 7
/// bytes).
fn charged(s: &Store, key: &str, value_len: usize, flags: u32, exptime: u32) -> usize {
    let r = s.execute(
        &Command::MetaDebug {
            key: Bytes::copy_from_slice(key.as_bytes()),
        },
        NOW,
    );
    let Response::MetaDebug(Some(fields)) = r else {
        panic!("{key}: {r:?}")
    };
    let size: usize = fields
        .iter()
        .find(|(k, _)| k == "size")
        .and_then(|(_, v)| v.parse().ok())
        .expect("size");
    let (least, most) = charge_range(key.len(), value_len, flags, exptime);
    assert!((least..=most).contains(&size), "{key}: {size}");
    size
}

#[test]
fn byte_accounting_returns_to_zero() {
    let (s, stats) = new_store();
    let mut lens = Vec::new();
    for i in 0..1000 {
        let key = format!("key-{i}");
        let val = vec![b'x'; i % 300];
        set(&s, &key, &val, 0, NOW);
        lens.push(val.len());
    }
    // Overwrite, append and incr change sizes.
    set(&s, "key-1", &[b'y'; 500], 0, NOW);
    lens[1] = 500;
    run_store(&s, st(StoreMode::Append, "key-2", b"abc", 0), NOW);
    lens[2] = 5;
    set(&s, "key-3", b"9", 0, NOW);
    s.execute(&Command::Arith(arith("key-3", true, 1)), NOW);
    lens[3] = 2;
    let expect: usize = (0..1000)
        .map(|i| charged(&s, &format!("key-{i}"), lens[i], 0, 0))
        .sum();
    let u = s.usage();
    assert_eq!((u.items, u.bytes), (1000, expect as u64));
    for i in 0..1000 {
        assert_eq!(
            s.execute(&Command::Delete(delete(&format!("key-{i}"))), NOW),
            Response::Deleted
        );
    }
    assert_eq!(
        s.usage(),
        Usage {
            items: 0,
            bytes: 0,
            limit: 64 * MB as u64
        }
    );
    assert_eq!(stat(&stats, "delete_hits"), 1000);
    assert_eq!(
        s.execute(&Command::Delete(delete("key-1")), NOW),
        Response::NotFound
    );
    assert_eq!(stat(&stats, "delete_misses"), 1);
    assert_eq!(stat(&stats, "cmd_delete"), 1001);
}

#[test]
fn set_limit_shrink_evicts() {
    let (s, stats) = new_store();
    for i in 0..20_000 {
        set(&s, &format!("key-{i}"), &[b'v'; 100], 0, NOW);
    }
    let before = s.usage();
    assert_eq!(before.items, 20_000);
    s.set_limit(MB);
    let after = s.usage();
    assert_eq!(after.limit, MB as u64);
    assert!(after.bytes <= MB as u64, "{after:?}");
    assert!(after.items < 20_000 && after.items > 4000, "{after:?}");
    assert_eq!(stat(&stats, "evictions"), 20_000 - after.items);
    // The most recent items survived.
    assert!(get(&s, "key-19999", NOW).is_some());
}

#[test]
fn reclaim_expired_is_bounded_and_counts() {
    let (s, stats) = new_store();
    for i in 0..3000 {
        set(&s, &format!("t{i}"), b"v", 10, NOW);
        set(&s, &format!("p{i}"), b"v", 0, NOW);
    }
    assert_eq!(s.reclaim_expired(NOW + 5, 10_000), 0);
    assert_eq!(s.reclaim_expired(NOW + 10, 100), 100);
    assert_eq!(stat(&stats, "expired"), 100);
    let mut total = 100;
    for _ in 0..100 {
        total += s.reclaim_expired(NOW + 10, 1000);
    }
    assert_eq!(total, 3000);
    assert_eq!(s.usage().items, 3000);
    assert_eq!(stat(&stats, "expired"), 3000);
    assert!(get(&s, "p17", NOW + 10).is_some());
}

#[test]
fn meta_vivify_hands_out_one_win() {
    let (s, stats) = new_store();
    let mut g = test_util::get("k");
    g.vivify = Some(30);
    let first = get_with(&s, g.clone(), NOW).expect("vivified");
    assert!(first.won && !first.win_sent && !first.stale);
    assert_eq!((first.data.len(), first.ttl, first.flags), (0, 30, 0));
    let second = get_with(&s, g.clone(), NOW + 1).expect("hit");
    assert!(!second.won && second.win_sent);
    assert_eq!(second.cas, first.cas);
    assert_eq!(stat(&stats, "get_hits"), 2);
    assert_eq!(stat(&stats, "get_misses"), 0);
    // A real set replaces the placeholder and clears the flags.
    set(&s, "k", b"data", 0, NOW + 2);
    let third = get_with(&s, g, NOW + 2).expect("hit");
    assert!(!third.won && !third.win_sent);
    assert_eq!(third.data, &b"data"[..]);
}

#[test]
fn meta_recache_below_wins_once() {
    let (s, _) = new_store();
    set(&s, "k", b"v", 100, NOW);
    let mut g = test_util::get("k");
    g.recache_below = Some(30);
    let f = get_with(&s, g.clone(), NOW).expect("hit");
    assert!(!f.won && !f.win_sent, "70s+ left");
    let f = get_with(&s, g.clone(), NOW + 80).expect("hit");
    assert!(f.won && !f.win_sent, "20s left < 30");
    let f = get_with(&s, g.clone(), NOW + 81).expect("hit");
    assert!(!f.won && f.win_sent);
    // No TTL: never wins.
    set(&s, "forever", b"v", 0, NOW);
    let mut g = test_util::get("forever");
    g.recache_below = Some(30);
    assert!(!get_with(&s, g, NOW).expect("hit").won);
}

#[test]
fn meta_delete_invalidate_marks_stale() {
    let (s, stats) = new_store();
    let c1 = set(&s, "k", b"v", 0, NOW);
    let mut d = delete("k");
    d.invalidate = true;
    d.exptime = Some(30);
    assert_eq!(
        s.execute(&Command::Delete(d.clone()), NOW),
        Response::Deleted
    );
    assert_eq!(stat(&stats, "delete_hits"), 0);
    let f = get(&s, "k", NOW).expect("stale items are still served");
    assert!(f.stale && f.won && !f.win_sent);
    assert!(f.cas > c1, "invalidation bumps the CAS");
    assert_eq!(f.ttl, 30);
    assert_eq!(f.data, &b"v"[..]);
    let f = get(&s, "k", NOW).expect("hit");
    assert!(f.stale && !f.won && f.win_sent);
    // Invalidating again re-arms the win.
    s.execute(&Command::Delete(d), NOW);
    assert!(get(&s, "k", NOW).expect("hit").won);
    // A CAS mismatch refuses the delete.
    let mut d = delete("k");
    d.cas = Some(1);
    assert_eq!(s.execute(&Command::Delete(d), NOW), Response::Exists);
    assert_eq!(stat(&stats, "delete_misses"), 1);
}

#[test]
fn meta_set_invalidate_with_older_cas_stores_stale() {
    let (s, _) = new_store();
    let c1 = set(&s, "k", b"v1", 100, NOW);
    let c2 = set(&s, "k", b"v2", 100, NOW);
    let mut cmd = st(StoreMode::Set, "k", b"late", 5000);
    cmd.cas = Some(c1);
    cmd.invalidate = true;
    assert!(matches!(
        run_store(&s, cmd.clone(), NOW + 10),
        Response::Stored { .. }
    ));
    let f = get(&s, "k", NOW + 10).expect("hit");
    assert_eq!(f.data, &b"late"[..]);
    assert!(f.stale && f.won);
    assert_eq!(f.ttl, 90, "the TTL is preserved");
    // A newer (unknown) CAS is still a mismatch.
    cmd.cas = Some(c2 + 100);
    assert_eq!(run_store(&s, cmd, NOW + 10), Response::Exists);
}

#[test]
fn no_bump_fetched_and_last_access() {
    let (s, _) = new_store();
    set(&s, "k", b"v", 0, NOW);
    let mut quiet = test_util::get("k");
    quiet.no_bump = true;
    let f = get_with(&s, quiet.clone(), NOW + 5).expect("hit");
    assert_eq!((f.fetched, f.last_access), (false, 5));
    let f = get(&s, "k", NOW + 7).expect("hit");
    assert_eq!(
        (f.fetched, f.last_access),
        (false, 7),
        "values before this access"
    );
    let f = get(&s, "k", NOW + 8).expect("hit");
    assert_eq!((f.fetched, f.last_access), (true, 1));
    let f = get_with(&s, quiet, NOW + 20).expect("hit");
    assert_eq!((f.fetched, f.last_access), (true, 12));
}

#[test]
fn touch_and_gat() {
    let (s, stats) = new_store();
    let key = Bytes::from_static(b"k");
    assert_eq!(
        s.execute(
            &Command::Touch {
                key: key.clone(),
                exptime: 10
            },
            NOW
        ),
        Response::NotFound
    );
    let cas = set(&s, "k", b"v", 10, NOW);
    assert_eq!(
        s.execute(
            &Command::Touch {
                key: key.clone(),
                exptime: 100
            },
            NOW + 5
        ),
        Response::Touched
    );
    let f = get(&s, "k", NOW + 50).expect("touch extended the TTL");
    assert_eq!((f.cas, f.ttl), (cas, 55), "touch keeps the CAS");
    let mut gat = test_util::get("k");
    gat.touch = Some(0);
    let f = get_with(&s, gat.clone(), NOW + 60).expect("hit");
    assert_eq!(f.ttl, -1);
    assert!(get(&s, "k", NOW + 1000).is_some());
    gat.touch = Some(-1);
    assert!(
        get_with(&s, gat.clone(), NOW + 1000).is_some(),
        "gat returns the item"
    );
    assert_eq!(get(&s, "k", NOW + 1000), None, "then it is expired");
    assert_eq!(get_with(&s, gat, NOW + 1000), None);
    assert_eq!(stat(&stats, "cmd_touch"), 5);
    assert_eq!(stat(&stats, "touch_hits"), 3);
    assert_eq!(stat(&stats, "touch_misses"), 2);
    assert_eq!(
        stat(&stats, "cmd_get"),
        3,
        "gat counts as a touch, not a get"
    );
}

#[test]
fn multi_get_counts_every_key() {
    let (s, stats) = new_store();
    set(&s, "a", b"1", 0, NOW);
    set(&s, "c", b"3", 0, NOW);
    let g = Get {
        keys: ["a", "b", "c", "a"]
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect(),
        ..Get::default()
    };
    let Response::Get(v) = s.execute(&Command::Get(g), NOW) else {
        panic!()
    };
    let vals: Vec<_> = v
        .iter()
        .map(|f| f.as_ref().map(|f| f.data.to_vec()))
        .collect();
    assert_eq!(
        vals,
        [
            Some(b"1".to_vec()),
            None,
            Some(b"3".to_vec()),
            Some(b"1".to_vec())
        ]
    );
    assert_eq!(stat(&stats, "cmd_get"), 4);
    assert_eq!(stat(&stats, "get_hits"), 3);
    assert_eq!(stat(&stats, "get_misses"), 1);
}

#[test]
fn meta_debug_reports_item_metadata() {
    let (s, _) = new_store();
    assert_eq!(
        s.execute(
            &Command::MetaDebug {
                key: Bytes::from_static(b"k")
            },
            NOW
        ),
        Response::MetaDebug(None)
    );
    let cas = set(&s, "k", &[b'v'; 100], 60, NOW);
    get(&s, "k", NOW + 2);
    let r = s.execute(
        &Command::MetaDebug {
            key: Bytes::from_static(b"k"),
        },
        NOW + 5,
    );
    let Response::MetaDebug(Some(fields)) = r else {
        panic!("{r:?}")
    };
    // No flags, a TTL (4 bytes, and the shape byte), the CAS one byte above
    // its segment's base.
    let size = (charge(1, 100) + 5).to_string();
    let want = [
        ("exp", "55"),
        ("la", "3"),
        ("cas", &cas.to_string()),
        ("fetch", "yes"),
        ("cls", "4"),
        ("size", &size),
    ];
    let got: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn other_commands_and_long_keys_are_refused() {
    let (s, _) = new_store();
    assert_eq!(
        s.execute(&Command::Version, NOW),
        Response::Error(ErrorReply::UnknownCommand)
    );
    assert_eq!(
        s.execute(&Command::Stats { group: None }, NOW),
        Response::Error(ErrorReply::UnknownCommand)
    );
    let long = "k".repeat(251);
    assert!(matches!(
        run_store(&s, st(StoreMode::Set, &long, b"v", 0), NOW),
        Response::Error(ErrorReply::Client(_))
    ));
    set(&s, &"k".repeat(250), b"v", 0, NOW);
    assert!(get(&s, &"k".repeat(250), NOW).is_some());
}

#[test]
fn strtoull_compat() {
    assert_eq!(parse_number(b"0"), Some(0));
    assert_eq!(parse_number(b"+7"), Some(7));
    assert_eq!(parse_number(b"-0"), Some(0));
    assert_eq!(parse_number(b"\t42\r\n"), Some(42));
    assert_eq!(parse_number(b"12 abc"), Some(12), "stops at whitespace");
    assert_eq!(parse_number(b"12\0x"), Some(12), "stops at NUL");
    assert_eq!(parse_number(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_number(b"18446744073709551616"), None);
    assert_eq!(parse_number(b"-5"), None);
    assert_eq!(parse_number(b"0x10"), None);
    assert_eq!(parse_number(b"+"), None);
    let mut buf = [0; 20];
    assert_eq!(decimal(0, &mut buf), b"0");
    assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
}

#[test]
fn concurrent_writers_keep_accounting_exact() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    let (s, stats) = new_store();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..2000 {
                    let key = format!("t{t}-{}", i % 500);
                    set(s, &key, &[b'v'; 50], 0, NOW);
                    s.execute(&Command::Arith(arith("shared", true, 1)), NOW);
                    assert!(get(s, &key, NOW).is_some());
                }
            });
        }
    });
    assert_eq!(s.usage().items, 4 * 500);
    assert_eq!(stat(&stats, "incr_misses"), 8000, "never created");
    let expect: usize = (0..4)
        .flat_map(|t| (0..500).map(move |i| format!("t{t}-{i}")))
        .map(|k| charged(&s, &k, 50, 0, 0))
        .sum();
    assert_eq!(s.usage().bytes, expect as u64);
}

#[derive(Clone, Debug)]
enum Op {
    Set(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Append(u8, Vec<u8>),
    Prepend(u8, Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    let val = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        (key.clone(), val.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        key.clone().prop_map(Op::Get),
        key.clone().prop_map(Op::Delete),
        (key.clone(), val.clone()).prop_map(|(k, v)| Op::Append(k, v)),
        (key, val).prop_map(|(k, v)| Op::Prepend(k, v)),
    ]
}

proptest! {
    #[test]
    fn behaves_like_a_hashmap(ops in proptest::collection::vec(op(), 1..200)) {
        let (s, _) = new_store();
        let mut model: HashMap<String, Vec<u8>> = HashMap::new();
        for op in &ops {
            match op {
                Op::Set(k, v) => {
                    let key = format!("key{k}");
                    set(&s, &key, v, 0, NOW);
                    model.insert(key, v.clone());
                }
                Op::Get(k) => {
                    let key = format!("key{k}");
                    prop_assert_eq!(value(&s, &key, NOW), model.get(&key).cloned());
                }
                Op::Delete(k) => {
                    let key = format!("key{k}");
                    let want = if model.remove(&key).is_some() {
                        Response::Deleted
                    } else {
                        Response::NotFound
                    };
                    prop_assert_eq!(s.execute(&Command::Delete(delete(&key)), NOW), want);
                }
                Op::Append(k, v) | Op::Prepend(k, v) => {
                    let mode = if matches!(op, Op::Append(..)) {
                        StoreMode::Append
                    } else {
                        StoreMode::Prepend
                    };
                    let key = format!("key{k}");
                    let r = run_store(&s, st(mode, &key, v, 0), NOW);
                    match model.get_mut(&key) {
                        Some(old) => {
                            prop_assert!(matches!(r, Response::Stored { .. }), "append/prepend: {:?}", r);
                            if mode == StoreMode::Append {
                                old.extend_from_slice(v);
                            } else {
                                let mut n = v.clone();
                                n.extend_from_slice(old);
                                *old = n;
                            }
                        }
                        None => prop_assert_eq!(r, Response::NotStored),
                    }
                }
            }
        }
        let u = s.usage();
        prop_assert_eq!(u.items, model.len() as u64);
        let bytes: usize = model.iter().map(|(k, v)| charge(k.len(), v.len())).sum();
        prop_assert_eq!(u.bytes, bytes as u64);
        for (k, v) in &model {
            prop_assert_eq!(value(&s, k, NOW), Some(v.clone()));
        }
    }
}

#[test]
fn the_what_if_tracker_sees_reads_unless_it_is_off() {
    let (on, _) = new_store();
    let (off, _) = new_store();
    let off = off.without_what_if();
    assert!(off.what_if().is_none());
    for s in [&on, &off] {
        set(s, "a", b"1", 0, NOW);
        assert_eq!(value(s, "a", NOW), Some(b"1".to_vec()));
        assert_eq!(value(s, "b", NOW), None);
    }
    let curve = on.what_if().expect("on by default").curve(&[1 << 20]);
    assert_eq!((curve.accesses_total, curve.sampled_accesses), (2, 2));
}

#[derive(Clone, Debug)]
enum SmallOp {
    Set(u8, u16, i8),
    Get(u8, bool),
    Delete(u8),
    Append(u8, u16),
    Touch(u8, i8),
    Incr(u8),
    Tick(u8),
    Limit(u16),
    Reclaim,
}

fn small_op() -> impl Strategy<Value = SmallOp> {
    let key = 0u8..40;
    prop_oneof![
        4 => (key.clone(), 0u16..900, -1i8..20).prop_map(|(k, n, e)| SmallOp::Set(k, n, e)),
        3 => (key.clone(), any::<bool>()).prop_map(|(k, u)| SmallOp::Get(k, u)),
        1 => key.clone().prop_map(SmallOp::Delete),
        1 => (key.clone(), 0u16..300).prop_map(|(k, n)| SmallOp::Append(k, n)),
        1 => (key.clone(), -1i8..20).prop_map(|(k, e)| SmallOp::Touch(k, e)),
        1 => key.prop_map(SmallOp::Incr),
        1 => (0u8..10).prop_map(SmallOp::Tick),
        1 => (1u16..200).prop_map(SmallOp::Limit),
        1 => Just(SmallOp::Reclaim),
    ]
}

proptest! {
    /// A cache small enough to evict all the time (segments of 64 bytes
    /// to a few KiB, dedicated segments, TTL classes, plan changes): after
    /// every command each shard's segments, index, counts and budget agree
    /// (`Shard::check`), and a hit returns the last value written.
    #[test]
    fn evicting_store_keeps_its_invariants(
        start in 1u16..200,
        ops in proptest::collection::vec(small_op(), 1..300),
    ) {
        let stats = Arc::new(CacheStats::default());
        let s = Store::new(usize::from(start) * 1024, 1000, stats);
        let mut last: HashMap<String, Vec<u8>> = HashMap::new();
        let mut now = NOW;
        for op in &ops {
            match op {
                SmallOp::Set(k, n, e) => {
                    let key = format!("key{k}");
                    let v = vec![b'0' + (*n % 10) as u8; usize::from(*n)];
                    if let Response::Stored { .. } = run_store(&s, st(StoreMode::Set, &key, &v, i64::from(*e)), now) {
                        last.insert(key, v);
                    } else {
                        last.remove(&key);
                    }
                }
                SmallOp::Get(k, no_bump) => {
                    let key = format!("key{k}");
                    let mut g = test_util::get(&key);
                    g.no_bump = *no_bump;
                    if let Some(f) = get_with(&s, g, now) {
                        prop_assert_eq!(Some(&f.data.to_vec()), last.get(&key));
                    }
                }
                SmallOp::Delete(k) => {
                    let key = format!("key{k}");
                    s.execute(&Command::Delete(delete(&key)), now);
                    last.remove(&key);
                }
                SmallOp::Append(k, n) => {
                    let key = format!("key{k}");
                    let v = vec![b'a'; usize::from(*n)];
                    let r = run_store(&s, st(StoreMode::Append, &key, &v, 0), now);
                    match (r, last.get_mut(&key)) {
                        (Response::Stored { .. }, Some(old)) => old.extend_from_slice(&v),
                        (Response::Stored { .. }, None) => prop_assert!(false, "append stored without an item"),
                        // Refused, the old item kept.
                        (Response::Error(ErrorReply::TooLarge | ErrorReply::OutOfMemory), _) => {}
                        _ => {
                            last.remove(&key);
                        }
                    }
                }
                SmallOp::Touch(k, e) => {
                    let key = Bytes::from(format!("key{k}"));
                    s.execute(&Command::Touch { key, exptime: i64::from(*e) }, now);
                }
                SmallOp::Incr(k) => {
                    let key = format!("key{k}");
                    if let Response::Number { .. } = s.execute(&Command::Arith(arith(&key, true, 1)), now) {
                        // The new digits: read them back.
                        last.insert(key.clone(), value(&s, &key, now).unwrap_or_default());
                    }
                }
                SmallOp::Tick(d) => now += u64::from(*d),
                SmallOp::Limit(kib) => s.set_limit(usize::from(*kib) * 1024),
                SmallOp::Reclaim => {
                    s.reclaim_expired(now, 50);
                }
            }
            for shard in s.shards.iter() {
                lock(shard).check();
            }
            prop_assert!(s.usage().bytes <= s.usage().limit);
        }
    }
}

// The variable-length header (`header.rs`): what each in-place change does
// to the CAS, and that CAS uniques survive moves and segment reuse.

/// A `set` with a CAS check: whether it was stored.
fn cas_set(s: &Store, key: &str, val: &[u8], cas: u64, now: u64) -> bool {
    let mut cmd = st(StoreMode::Set, key, val, 0);
    cmd.cas = Some(cas);
    match run_store(s, cmd, now) {
        Response::Stored { .. } => true,
        Response::Exists => false,
        other => panic!("cas {key}: {other:?}"),
    }
}

fn size_of(s: &Store, key: &str) -> usize {
    let r = s.execute(
        &Command::MetaDebug {
            key: Bytes::copy_from_slice(key.as_bytes()),
        },
        NOW,
    );
    let Response::MetaDebug(Some(fields)) = r else {
        panic!("{r:?}")
    };
    fields
        .iter()
        .find(|(k, _)| k == "size")
        .and_then(|(_, v)| v.parse().ok())
        .expect("size")
}

#[test]
fn cas_uniques_stay_unique_across_segment_reuse() {
    // 16 shards of 1 KiB, in 64-byte segments (items over 16 bytes get
    // one each), evicted and their ids reused many times over.
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(16 << 10, 100, stats.clone());
    let mut seen = std::collections::HashSet::new();
    let mut last = HashMap::new();
    let mut held = Vec::new();
    for round in 0..40 {
        for i in 0..200 {
            // New keys (evictions) and the same ones (overwrites).
            let key = if i % 2 == 0 || i == 199 {
                format!("k{i}")
            } else {
                format!("r{round}-{i}")
            };
            let cas = set(&s, &key, &[b'v'; 60], 0, NOW);
            let before = last.insert(key.clone(), cas).unwrap_or(0);
            assert!(cas > before, "a key's CAS uniques increase");
            assert!(seen.insert(cas), "{cas} handed out twice");
            // Every reply's CAS is what a read then shows.
            if i % 37 == 0 {
                if let Some(f) = get(&s, &key, NOW) {
                    assert_eq!(f.cas, cas);
                }
            }
        }
        held.push(get(&s, "k199", NOW).expect("just written").cas);
        assert!(round == 0 || stat(&stats, "evictions") > 50 * round);
    }
    // A CAS from any earlier life of the key no longer matches.
    let now_cas = get(&s, "k199", NOW).expect("hit").cas;
    for &old in &held[..held.len() - 1] {
        assert!(!cas_set(&s, "k199", b"x", old, NOW), "{old} still matched");
    }
    assert!(cas_set(&s, "k199", b"x", now_cas, NOW));
    for sh in s.shards.iter() {
        lock(sh).check();
    }
}

#[test]
fn cas_is_kept_when_a_merge_moves_an_item() {
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(256 << 10, 1000, stats.clone());
    let cas = set(&s, "hot", &[b'h'; 50], 0, NOW);
    for i in 0..20_000 {
        set(&s, &format!("k{i}"), &[b'v'; 50], 0, NOW);
        if i % 300 == 0 {
            // Read: it survives its segment's eviction, copied to main.
            assert_eq!(get(&s, "hot", NOW).expect("kept").cas, cas);
        }
    }
    assert!(stat(&stats, "evictions") > 10_000);
    assert_eq!(get(&s, "hot", NOW).expect("kept").cas, cas);
    assert!(
        cas_set(&s, "hot", b"new", cas, NOW),
        "its CAS still matches"
    );
    assert!(!cas_set(&s, "hot", b"newer", cas, NOW));
    for sh in s.shards.iter() {
        lock(sh).check();
    }
}

/// A store of one shard, so that every write moves its CAS counter.
fn one_shard_store() -> Store {
    let s = Store::new(4 * MB, 2 * MB, Arc::new(CacheStats::default()));
    assert_eq!(s.shards.len(), 1);
    s
}

#[test]
fn in_place_incr_gives_a_new_cas_whether_or_not_it_moves() {
    let s = one_shard_store();
    let c0 = set(&s, "n", b"100", 0, NOW);
    let small = size_of(&s, "n");
    // In place: the new CAS is within its field's reach.
    let Response::Number { cas: c1, .. } = s.execute(&Command::Arith(arith("n", true, 1)), NOW)
    else {
        panic!()
    };
    assert!(c1 > c0);
    assert_eq!(size_of(&s, "n"), small, "same bytes, same place");
    // Push the counter past what one byte above the segment's base holds:
    // the next incr cannot write its CAS in place, so the item is copied
    // with its CAS whole; later ones are in place again.
    for i in 0..600 {
        set(&s, &format!("other{i}"), b"x", 0, NOW);
    }
    let Response::Number { cas: c2, value, .. } =
        s.execute(&Command::Arith(arith("n", true, 1)), NOW)
    else {
        panic!()
    };
    assert_eq!(value, 102);
    assert!(c2 > c1);
    assert_eq!(
        size_of(&s, "n"),
        charge(1, 3) + 1 + 6,
        "shape byte, CAS whole"
    );
    let Response::Number { cas: c3, .. } = s.execute(&Command::Arith(arith("n", false, 100)), NOW)
    else {
        panic!()
    };
    assert!(c3 > c2);
    assert_eq!(size_of(&s, "n"), charge(1, 3) + 1 + 6);
    let f = get(&s, "n", NOW).expect("hit");
    assert_eq!((&f.data[..], f.cas), (&b"2  "[..], c3), "padded in place");
    for old in [c0, c1, c2] {
        assert!(!cas_set(&s, "n", b"x", old, NOW), "old CAS {old} matched");
    }
    assert!(cas_set(&s, "n", b"x", c3, NOW));
}

#[test]
fn touch_that_adds_a_ttl_keeps_cas_flags_and_value() {
    let s = one_shard_store();
    let mut cmd = st(StoreMode::Set, "k", b"value", 0);
    cmd.flags = 7;
    let Response::Stored { cas } = run_store(&s, cmd, NOW) else {
        panic!()
    };
    for i in 0..600 {
        set(&s, &format!("other{i}"), b"x", 0, NOW);
    }
    let before = size_of(&s, "k");
    let touch = Command::Touch {
        key: Bytes::from_static(b"k"),
        exptime: 100,
    };
    assert_eq!(s.execute(&touch, NOW + 1), Response::Touched);
    // Copied: a TTL field and the CAS whole (it is older than the new
    // segment's base).
    assert_eq!(size_of(&s, "k"), before + 4 + 6);
    let f = get(&s, "k", NOW + 2).expect("hit");
    assert_eq!(
        (&f.data[..], f.flags, f.cas, f.ttl),
        (&b"value"[..], 7, cas, 99)
    );
    assert!(cas_set(&s, "k", b"v2", cas, NOW + 2));
}

#[test]
fn invalidation_gives_a_new_cas_and_old_tokens_are_older() {
    let s = one_shard_store();
    let c0 = set(&s, "k", b"v", 0, NOW);
    for i in 0..600 {
        set(&s, &format!("other{i}"), b"x", 0, NOW);
    }
    let md = Command::Delete(Delete {
        invalidate: true,
        ..delete("k")
    });
    assert_eq!(s.execute(&md, NOW), Response::Deleted);
    let f = get(&s, "k", NOW).expect("kept, stale");
    assert!(f.stale && f.cas > c0);
    // meta `I` with the old token: older than the item's, so stored stale.
    let mut cmd = st(StoreMode::Set, "k", b"w", 0);
    cmd.cas = Some(c0);
    cmd.invalidate = true;
    assert!(matches!(run_store(&s, cmd, NOW), Response::Stored { .. }));
}

#[test]
fn last_access_stays_exact_past_what_two_bytes_hold() {
    let (s, _) = new_store();
    let cas = set(&s, "k", b"v", 0, NOW);
    let small = size_of(&s, "k");
    // 11 hours later: the access time no longer fits its 2-byte distance
    // from the segment's base, so the bump writes a fresh copy.
    let later = NOW + 40_000;
    let f = get(&s, "k", later).expect("hit");
    assert_eq!((f.last_access, f.cas), (40_000, cas));
    let mut peek = test_util::get("k");
    peek.no_bump = true;
    let f = get_with(&s, peek.clone(), later + 7).expect("hit");
    assert_eq!((f.last_access, f.cas, &f.data[..]), (7, cas, &b"v"[..]));
    assert!(f.fetched);
    // Copied, to the same write segment (nothing else was written): its
    // CAS and its time whole (and so a shape byte), so the next bumps are
    // in place.
    assert_eq!(size_of(&s, "k"), small + 1 + 6 + 2);
    let f = get_with(&s, peek, later + 100_000).expect("hit");
    assert_eq!(f.last_access, 100_000);
    assert!(cas_set(&s, "k", b"w", cas, later));
}

#[test]
fn a_full_cache_holds_more_small_items_than_the_fixed_header_did() {
    // 32-byte keys, 100-byte values: 146 to 148 bytes each now (was 164).
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(16 * MB, MB, stats);
    for i in 0..200_000 {
        set(&s, &format!("{i:032}"), &[b'v'; 100], 0, NOW);
    }
    let u = s.usage();
    let per_item = u.bytes as f64 / u.items as f64;
    assert!(per_item < 148.0, "{per_item}");
    assert!(u.items > (16 * MB / 164) as u64 * 108 / 100, "{u:?}");
}

/// memgate's sidecar copy of `val` under `key` ([`Store::copy`]).
fn copy(
    s: &Store,
    mode: StoreMode,
    key: &str,
    val: &[u8],
    version: Option<u64>,
    now: u64,
) -> Response {
    s.copy(&st(mode, key, val, 0), version, now)
}

/// A replica's write ("mirror") of version `v`.
fn mirror(s: &Store, key: &str, val: &[u8], v: u64, now: u64) -> Response {
    copy(s, StoreMode::Set, key, val, Some(v), now)
}

#[test]
fn a_mirror_stores_with_its_version_as_the_cas() {
    let (s, stats) = new_store();
    // One a whole number of this store's steps, one not, one far out of a
    // distance's reach: each is the CAS read back, whatever the header keeps.
    for (key, v) in [("a", 16 * 5), ("b", 7), ("c", (1 << 50) + 3)] {
        let mut cmd = st(StoreMode::Set, key, b"value", 100);
        cmd.flags = 9;
        assert_eq!(s.copy(&cmd, Some(v), NOW), Response::Stored { cas: v });
        let f = get(&s, key, NOW).expect("hit");
        assert_eq!(
            (f.cas, &f.data[..], f.flags, f.ttl),
            (v, &b"value"[..], 9, 100)
        );
    }
    assert_eq!(stat(&stats, "cmd_set"), 3, "counted as the sets they are");
    assert_eq!(stat(&stats, "total_items"), 3);
    assert_eq!(get(&s, "a", NOW + 100), None, "its TTL is a set's");
}

#[test]
fn a_mirror_no_newer_than_the_item_is_refused_and_changes_nothing() {
    let (s, stats) = new_store();
    let cas = set(&s, "k", b"newer", 0, NOW);
    assert_eq!(mirror(&s, "k", b"older", cas, NOW), Response::Exists);
    assert_eq!(mirror(&s, "k", b"older", cas - 1, NOW), Response::Exists);
    assert_eq!(mirror(&s, "k", b"older", 1, NOW), Response::Exists);
    let f = get(&s, "k", NOW).expect("hit");
    assert_eq!((&f.data[..], f.cas), (&b"newer"[..], cas));
    assert_eq!(
        stat(&stats, "cas_badval"),
        0,
        "no client's CAS was compared"
    );
    assert_eq!(
        mirror(&s, "k", b"next", cas + 1, NOW),
        Response::Stored { cas: cas + 1 }
    );
    // Out of order: the older of two mirrors arriving last is refused.
    assert_eq!(
        mirror(&s, "k", b"v3", 1 << 40, NOW),
        Response::Stored { cas: 1 << 40 }
    );
    assert_eq!(mirror(&s, "k", b"v2", (1 << 40) - 1, NOW), Response::Exists);
    assert_eq!(value(&s, "k", NOW).as_deref(), Some(&b"v3"[..]));
}

#[test]
fn a_mirror_over_an_expired_or_flushed_item_stores() {
    let (s, _) = new_store();
    let high = 1 << 45;
    let mut cmd = st(StoreMode::Set, "k", b"old", 10);
    assert_eq!(
        s.copy(&cmd, Some(high), NOW),
        Response::Stored { cas: high }
    );
    assert_eq!(
        mirror(&s, "k", b"new", 5, NOW + 10),
        Response::Stored { cas: 5 },
        "the item had expired"
    );
    cmd.exptime = 0;
    assert_eq!(
        s.copy(&cmd, Some(high), NOW),
        Response::Stored { cas: high }
    );
    s.execute(&Command::FlushAll { delay: 0 }, NOW);
    assert_eq!(
        get(&s, "k", NOW),
        None,
        "a flush hides a mirror as any item"
    );
    assert_eq!(mirror(&s, "k", b"new", 5, NOW), Response::Stored { cas: 5 });
    // A delayed flush too.
    assert_eq!(
        mirror(&s, "k", b"old", high, NOW),
        Response::Stored { cas: high }
    );
    s.execute(&Command::FlushAll { delay: 10 }, NOW);
    assert!(get(&s, "k", NOW + 8).is_some());
    assert_eq!(get(&s, "k", NOW + 9), None);
    assert_eq!(
        mirror(&s, "k", b"new", 7, NOW + 10),
        Response::Stored { cas: 7 }
    );
    assert_eq!(value(&s, "k", NOW + 10).as_deref(), Some(&b"new"[..]));
}

/// A version moves the shard's counter past it (a Lamport clock): whatever
/// this node hands out afterwards, in place or as a new item, is greater,
/// so a key's CAS uniques keep increasing here.
#[test]
fn after_a_version_the_store_hands_out_greater_cas() {
    let (s, _) = new_store();
    for (key, v) in [("a", (1u64 << 44) + 5), ("b", 1 << 30), ("c", 3)] {
        let before = set(&s, key, b"x", 0, NOW);
        let v = v.max(before + 1);
        assert_eq!(mirror(&s, key, b"m", v, NOW), Response::Stored { cas: v });
        let after = set(&s, key, b"1", 0, NOW);
        assert!(after > v, "{key}: {after} after {v}");
        assert_eq!(after & 0xf, before & 0xf, "still the key's shard's");
        let Response::Number { cas, .. } = s.execute(&Command::Arith(arith(key, true, 1)), NOW)
        else {
            panic!("not a number")
        };
        assert!(cas > after);
    }
    // An add copy's version too.
    let v = 1 << 47;
    assert_eq!(
        copy(&s, StoreMode::Add, "d", b"x", Some(v), NOW),
        Response::Stored { cas: v }
    );
    let mut delete = delete("d");
    delete.invalidate = true;
    assert_eq!(s.execute(&Command::Delete(delete), NOW), Response::Deleted);
    assert!(get(&s, "d", NOW).expect("stale, kept").cas > v);
    // The largest version leaves room for the next CAS within 56 bits.
    assert_eq!(
        mirror(&s, "e", b"x", MAX_VERSION, NOW),
        Response::Stored { cas: MAX_VERSION }
    );
    let next = set(&s, "e", b"y", 0, NOW);
    assert!(next > MAX_VERSION && next <= header::CAS_MASK, "{next}");
}

#[test]
fn an_add_copy_with_a_version_stores_only_a_missing_key() {
    let (s, stats) = new_store();
    let v = (1 << 33) + 9;
    assert_eq!(
        copy(&s, StoreMode::Add, "k", b"copied", Some(v), NOW),
        Response::Stored { cas: v }
    );
    assert_eq!(get(&s, "k", NOW).expect("hit").cas, v);
    assert_eq!(
        copy(&s, StoreMode::Add, "k", b"again", Some(v + 1), NOW),
        Response::NotStored
    );
    let cas = set(&s, "j", b"client's", 0, NOW);
    assert_eq!(
        copy(&s, StoreMode::Add, "j", b"copied", Some(cas + 1), NOW),
        Response::NotStored
    );
    assert_eq!(
        copy(&s, StoreMode::Add, "j", b"copied", None, NOW),
        Response::NotStored
    );
    let f = get(&s, "j", NOW).expect("hit");
    assert_eq!((&f.data[..], f.cas), (&b"client's"[..], cas));
    // Without a version: today's warm-up copy, with the store's next CAS.
    let Response::Stored { cas: fresh } = copy(&s, StoreMode::Add, "i", b"warm", None, NOW) else {
        panic!("not stored")
    };
    assert_eq!(get(&s, "i", NOW).expect("hit").cas, fresh);
    assert_eq!(stat(&stats, "cmd_set"), 6);
}

/// What the parser never builds is a bad command: a version the store's 56
/// bits cannot hold (or 0, which no item has), a set without one, any other
/// mode, or a client's CAS.
#[test]
fn a_copy_of_another_shape_is_a_client_error() {
    let (s, stats) = new_store();
    let bad = client_error();
    for v in [0, MAX_VERSION + 1, header::CAS_MASK, u64::MAX] {
        assert_eq!(mirror(&s, "k", b"x", v, NOW), bad, "{v}");
        assert_eq!(copy(&s, StoreMode::Add, "k", b"x", Some(v), NOW), bad);
    }
    assert_eq!(copy(&s, StoreMode::Set, "k", b"x", None, NOW), bad);
    for mode in [StoreMode::Replace, StoreMode::Append, StoreMode::Prepend] {
        assert_eq!(copy(&s, mode, "k", b"x", Some(5), NOW), bad);
    }
    let mut cmd = st(StoreMode::Set, "k", b"x", 0);
    cmd.cas = Some(5);
    assert_eq!(s.copy(&cmd, Some(6), NOW), bad);
    assert_eq!(get(&s, "k", NOW), None);
    assert_eq!(stat(&stats, "cmd_set"), 0);
}

#[test]
fn a_mirror_is_bounded_as_a_set_is() {
    // Over the item size limit: refused as an over-size set, which unlinks.
    let stats = Arc::new(CacheStats::default());
    let s = Store::new(64 * MB, 1000, stats);
    set(&s, "k", b"old", 0, NOW);
    assert_eq!(
        mirror(&s, "k", &[b'x'; 1000], 1 << 40, NOW),
        Response::Error(ErrorReply::TooLarge)
    );
    assert_eq!(get(&s, "k", NOW), None);
    // Over the budget: out of memory, as a set.
    let s = Store::new(1000, 4096, Arc::new(CacheStats::default()));
    assert_eq!(
        mirror(&s, "k", &[b'x'; 2000], 1 << 40, NOW),
        Response::Error(ErrorReply::OutOfMemory)
    );
    // Within it: charged (their CAS whole, farther than a distance reaches)
    // and evicted as sets are.
    let (s, stats) = ten_item_store();
    for i in 0..12u64 {
        let key = format!("k{i}");
        assert_eq!(
            mirror(&s, &key, &[b'v'; 100], (1 << 40) + i, NOW),
            Response::Stored { cas: (1 << 40) + i }
        );
    }
    let u = s.usage();
    assert!(u.bytes <= u.limit, "{u:?}");
    assert!(u.items < 12);
    assert_eq!(u.items + stat(&stats, "evictions"), 12);
    assert_eq!(get(&s, "k0", NOW), None, "the oldest went first");
    assert_eq!(get(&s, "k11", NOW).expect("hit").cas, (1 << 40) + 11);
}

proptest! {
    /// Mirrors of one key arriving in any order leave the value of the
    /// highest version, with that version as its CAS: no older write
    /// overwrites a newer one.
    #[test]
    fn mirrors_in_any_order_keep_the_newest(
        versions in proptest::collection::vec(1u64..1 << 52, 1..20),
    ) {
        let (s, _) = new_store();
        for v in &versions {
            let _ = mirror(&s, "k", v.to_string().as_bytes(), *v, NOW);
        }
        let newest = versions.iter().copied().max().unwrap_or(0);
        let f = get(&s, "k", NOW).expect("hit");
        prop_assert_eq!(f.cas, newest);
        prop_assert_eq!(f.data, newest.to_string());
    }
}

/// The delete under a tombstone tells the CAS of the item it removed, a
/// mirror's version included, and counts as the delete it is; a missing,
/// expired or flushed key is not found, with the next CAS the key would
/// get, above every one it had.
#[test]
fn a_reporting_delete_tells_the_removed_items_cas() {
    let (s, stats) = new_store();
    let cas = set(&s, "k", b"v", 0, NOW);
    let key = Bytes::from_static(b"k");
    assert_eq!(s.delete_reporting(&key, NOW), Response::DeletedCas { cas });
    assert_eq!(get(&s, "k", NOW), None);
    let missed = |at| match s.delete_reporting(&key, at) {
        Response::NotFoundCas { cas } => cas,
        other => panic!("{other:?}"),
    };
    assert!(missed(NOW) > cas);
    let v = 1 << 42;
    assert_eq!(mirror(&s, "k", b"m", v, NOW), Response::Stored { cas: v });
    assert_eq!(
        s.delete_reporting(&key, NOW),
        Response::DeletedCas { cas: v }
    );
    let expiring = set(&s, "k", b"v", 10, NOW);
    assert!(missed(NOW + 10) > expiring.max(v));
    let flushed = set(&s, "k", b"v", 0, NOW);
    s.execute(&Command::FlushAll { delay: 0 }, NOW);
    assert!(missed(NOW) > flushed);
    assert_eq!(stat(&stats, "cmd_delete"), 5);
    assert_eq!(stat(&stats, "delete_hits"), 2);
    assert_eq!(stat(&stats, "delete_misses"), 3);
    // A client's delete still answers without a CAS.
    set(&s, "k", b"v", 0, NOW);
    assert_eq!(
        s.execute(&Command::Delete(delete("k")), NOW),
        Response::Deleted
    );
}
