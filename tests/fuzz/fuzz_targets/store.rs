//! The node's store (`node::store::Store`) driven by arbitrary command
//! sequences against a simple model: a map of key to value, flags, exptime
//! and CAS with memcached's rules, and a clock the input moves forward.
//!
//! Byte 0 picks the budget: a large one, in which nothing is ever evicted
//! and every reply, value, flag and CAS must be the model's, and `usage()`
//! must count exactly the model's items and each within the charges its
//! key, value, flags and TTL allow (the CAS field takes 1 to 7 bytes, and
//! a compact header has no shape byte); or a small one (a few
//! KiB to a few hundred), in which items may be evicted at any time. There
//! a reply may also be what the model gives without the key (the item was
//! evicted; the model then forgets it), but a hit must still be the
//! model's value, and the budget must hold. `set_limit` lowering the budget
//! switches to the lenient rules.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use memgate::node::counters::CacheStats;
use memgate::node::store::{charge_range, Store};
use memgate::protocol::request::{
    Arith, Command, Delete, Exptime, Get, Store as StoreCmd, StoreMode,
};
use memgate::protocol::{ErrorReply, Response};

const START: u64 = 1_700_000_000;
const MAX_ITEM: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
struct Item {
    value: Vec<u8>,
    flags: u32,
    /// Absolute; 0 never.
    exptime: u64,
    cas: u64,
}

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.data.len());
        let (a, rest) = self.data.split_at(n);
        self.data = rest;
        a.to_vec()
    }
}

fn key(i: u8) -> Bytes {
    // Six short keys and two long ones, so that items differ in size.
    match i % 8 {
        6 => Bytes::from(vec![b'L'; 200]),
        7 => Bytes::from(vec![b'M'; 250]),
        k => Bytes::from(format!("k{k}")),
    }
}

fn exptime(b: u8) -> Exptime {
    match b % 8 {
        0 | 1 | 2 => 0,
        3 => -1,
        n => i64::from(n) * 3,
    }
}

fn abs(e: Exptime, now: u64) -> u64 {
    match e {
        0 => 0,
        e if e < 0 => 1,
        e => now + e as u64,
    }
}

fn value(inp: &mut Input<'_>) -> Vec<u8> {
    match inp.byte() % 4 {
        // A number, for incr/decr.
        0 => inp.byte().to_string().into_bytes(),
        1 => format!("{}", u64::from(inp.byte()) * 1_000_000_007).into_bytes(),
        2 => {
            let n = usize::from(inp.byte()) * 16;
            vec![b'x'; n]
        }
        _ => {
            let n = usize::from(inp.byte() % 32);
            inp.bytes(n)
        }
    }
}

/// memcached's strtoull over a value, for the values this target writes.
fn number(v: &[u8]) -> Option<u64> {
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let s = v.iter().position(|&c| !is_space(c)).unwrap_or(v.len());
    let mut rest = &v[s..];
    let neg = rest.first() == Some(&b'-');
    if rest.first().is_some_and(|&c| c == b'+' || c == b'-') {
        rest = &rest[1..];
    }
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    if let Some(&c) = rest.get(digits) {
        if !(is_space(c) || c == 0) {
            return None;
        }
    }
    let n: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let n = if neg { n.wrapping_neg() } else { n };
    // strtoull negates "-N"; memcached refuses what then looks negative
    // (when the value has a '-' anywhere).
    if (n as i64) < 0 && v.contains(&b'-') {
        return None;
    }
    Some(n)
}

/// What the model answers to `cmd` given the key's item (live or None),
/// and the item after it. CAS values the store hands out are taken from
/// its reply (`new_cas`).
fn model(cmd: &Command, item: Option<&Item>, now: u64, new_cas: u64) -> (Response, Option<Item>) {
    let old = item.cloned();
    match cmd {
        Command::Store(st) => {
            let too_big = st.key.len() + st.data.len() > MAX_ITEM;
            if too_big {
                let kept = if st.mode == StoreMode::Set { None } else { old };
                return (Response::Error(ErrorReply::TooLarge), kept);
            }
            let fresh = |exptime| Item {
                value: st.data.to_vec(),
                flags: st.flags,
                exptime,
                cas: new_cas,
            };
            let stored = |it: Item| {
                let r = Response::Stored { cas: new_cas };
                if it.exptime != 0 && it.exptime <= now {
                    (r, None)
                } else {
                    (r, Some(it))
                }
            };
            let exp = abs(st.exptime, now);
            match (st.mode, old) {
                (StoreMode::Set, Some(o)) if st.cas.is_some_and(|c| c != o.cas) => {
                    (Response::Exists, Some(o))
                }
                (StoreMode::Set, None) if st.cas.is_some() => (Response::NotFound, None),
                (StoreMode::Set, _) => stored(fresh(exp)),
                (StoreMode::Add, None) => stored(fresh(exp)),
                (StoreMode::Add, Some(o)) => (Response::NotStored, Some(o)),
                (StoreMode::Replace, None) => (Response::NotStored, None),
                (StoreMode::Replace, Some(_)) => stored(fresh(exp)),
                (StoreMode::Append | StoreMode::Prepend, None) => (Response::NotStored, None),
                (StoreMode::Append | StoreMode::Prepend, Some(o)) => {
                    if st.key.len() + o.value.len() + st.data.len() > MAX_ITEM {
                        return (Response::Error(ErrorReply::TooLarge), Some(o));
                    }
                    let value = if st.mode == StoreMode::Append {
                        [&o.value[..], &st.data[..]].concat()
                    } else {
                        [&st.data[..], &o.value[..]].concat()
                    };
                    stored(Item {
                        value,
                        cas: new_cas,
                        ..o
                    })
                }
            }
        }
        Command::Get(_) => (Response::Get(vec![None]), old),
        Command::Delete(_) => match old {
            Some(_) => (Response::Deleted, None),
            None => (Response::NotFound, None),
        },
        Command::Arith(a) => {
            let Some(o) = old else {
                return (Response::NotFound, None);
            };
            if o.value.is_empty() {
                return (Response::Error(ErrorReply::NonNumeric), Some(o));
            }
            let Some(n) = number(&o.value) else {
                return (Response::Error(ErrorReply::NonNumeric), Some(o));
            };
            let v = if a.incr {
                n.wrapping_add(a.delta)
            } else {
                n.saturating_sub(a.delta)
            };
            let digits = v.to_string().into_bytes();
            let value = if digits.len() <= o.value.len() {
                let mut x = digits;
                x.resize(o.value.len(), b' ');
                x
            } else {
                digits
            };
            let ttl = if o.exptime == 0 {
                -1
            } else {
                o.exptime as i64 - now as i64
            };
            (
                Response::Number {
                    value: v,
                    cas: new_cas,
                    ttl,
                },
                Some(Item {
                    value,
                    cas: new_cas,
                    ..o
                }),
            )
        }
        Command::Touch { exptime, .. } => match old {
            // Touched into the past, it stays until it is next looked up.
            Some(o) => (
                Response::Touched,
                Some(Item {
                    exptime: abs(*exptime, now),
                    ..o
                }),
            ),
            None => (Response::NotFound, None),
        },
        _ => (Response::Ok, old),
    }
}

/// The store's item for `k`, read without a bump.
fn peek(store: &Store, k: &Bytes, now: u64) -> Option<Item> {
    let g = Get {
        keys: vec![k.clone()].into(),
        no_bump: true,
        ..Get::default()
    };
    match store.execute(&Command::Get(g), now) {
        Response::Get(mut v) => v.pop().flatten().map(|f| Item {
            value: f.data.to_vec(),
            flags: f.flags,
            exptime: if f.ttl < 0 { 0 } else { now + f.ttl as u64 },
            cas: f.cas,
        }),
        other => panic!("peek: {other:?}"),
    }
}

/// The CAS a reply carries, if any.
fn reply_cas(r: &Response) -> u64 {
    match r {
        Response::Stored { cas } | Response::Number { cas, .. } => *cas,
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { data };
    let mut lenient = inp.byte() % 2 == 1;
    let mut limit = if lenient {
        1024 * (2 + usize::from(inp.byte()))
    } else {
        64 << 20
    };
    let stats = Arc::new(CacheStats::default());
    // With the what-if tracker: its miniature caches see every command too,
    // and its debug assertions and overflow checks run.
    let store = Store::new(limit, MAX_ITEM, stats);
    let mut m: HashMap<Bytes, Item> = HashMap::new();
    let mut now = START;
    let mut last_cas = 0u64;
    // Every CAS unique handed out, and the last one of each key.
    let mut seen_cas = HashSet::new();
    let mut key_cas: HashMap<Bytes, u64> = HashMap::new();
    for _ in 0..400 {
        if inp.data.is_empty() {
            break;
        }
        let op = inp.byte();
        let k = key(inp.byte());
        let cmd = match op % 12 {
            0..=4 => {
                let mode = [
                    StoreMode::Set,
                    StoreMode::Add,
                    StoreMode::Replace,
                    StoreMode::Append,
                    StoreMode::Prepend,
                ][usize::from(op % 12)];
                let flags = u32::from(inp.byte());
                let e = exptime(inp.byte());
                let data = Bytes::from(value(&mut inp));
                let cas = match inp.byte() % 4 {
                    0 => m.get(&k).map(|it| it.cas).or(Some(last_cas + 1000)),
                    1 => Some(last_cas + 1000),
                    _ => None,
                };
                let cas = if matches!(mode, StoreMode::Set) {
                    cas
                } else {
                    None
                };
                Command::Store(StoreCmd {
                    mode,
                    key: k.clone(),
                    flags,
                    exptime: e,
                    data,
                    cas,
                    invalidate: false,
                    vivify: None,
                })
            }
            5 | 6 => Command::Get(Get {
                keys: vec![k.clone()].into(),
                no_bump: op % 2 == 0,
                ..Get::default()
            }),
            7 => Command::Delete(Delete {
                key: k.clone(),
                cas: None,
                invalidate: false,
                exptime: None,
            }),
            8 => Command::Arith(Arith {
                key: k.clone(),
                incr: inp.byte() % 2 == 0,
                delta: u64::from(inp.byte()) << (inp.byte() % 64),
                cas: None,
                vivify: None,
                initial: 0,
                touch: None,
            }),
            9 => Command::Touch {
                key: k.clone(),
                exptime: exptime(inp.byte()),
            },
            10 => {
                now += u64::from(inp.byte() % 16);
                continue;
            }
            _ => match inp.byte() % 8 {
                0 => {
                    assert_eq!(
                        store.execute(&Command::FlushAll { delay: 0 }, now),
                        Response::Ok
                    );
                    m.clear();
                    assert_eq!(store.usage().items, 0);
                    continue;
                }
                1 => {
                    // A plan change: up keeps everything, down may evict.
                    let new = 1024 * (1 + usize::from(inp.byte()));
                    if new < limit {
                        lenient = true;
                    }
                    limit = new;
                    store.set_limit(limit);
                    assert!(store.usage().bytes <= limit as u64);
                    continue;
                }
                _ => {
                    now += 1;
                    continue;
                }
            },
        };
        // An item over by now is gone when the store looks it up (lazily);
        // until then it still counts in `usage()`.
        // (An over-size add, replace, append or prepend is refused before
        // the lookup.)
        let looks_up = !matches!(&cmd, Command::Store(st)
            if st.mode != StoreMode::Set && st.key.len() + st.data.len() > MAX_ITEM);
        if looks_up
            && m.get(&k)
                .is_some_and(|it| it.exptime != 0 && it.exptime <= now)
        {
            m.remove(&k);
        }
        let got = store.execute(&cmd, now);
        let new_cas = reply_cas(&got);
        if new_cas != 0 {
            // Unique, and increasing for a key (a shard's uniques increase;
            // the store's do not across shards).
            assert!(seen_cas.insert(new_cas), "CAS {new_cas} handed out twice");
            let before = key_cas.insert(k.clone(), new_cas).unwrap_or(0);
            assert!(new_cas > before, "a key's CAS uniques increase");
            last_cas = last_cas.max(new_cas);
        }
        let had = m.get(&k).cloned();
        let (mut want, mut after) = model(&cmd, had.as_ref(), now, new_cas);
        if let (Command::Get(_), Some(it)) = (&cmd, &had) {
            let Response::Get(v) = &got else {
                panic!("get answered {got:?}")
            };
            match v.as_slice() {
                [Some(f)] => {
                    assert_eq!(&f.data[..], &it.value[..], "value of {k:?}");
                    assert_eq!((f.flags, f.cas), (it.flags, it.cas), "{k:?}");
                    want = got.clone();
                }
                [None] if lenient => after = None,
                other => panic!("get {k:?}: {other:?}, model {it:?}"),
            }
        }
        if got != want && lenient && had.is_some() {
            // Evicted: the store answered as if the key were absent.
            (want, after) = model(&cmd, None, now, new_cas);
        }
        if got == Response::Error(ErrorReply::OutOfMemory) && lenient {
            // The item does not fit the shard's budget. Whether the old one
            // is left depends on the command and the shard: look.
            want = got.clone();
            after = peek(&store, &k, now);
        }
        assert_eq!(got, want, "{cmd:?} with {had:?} at {now}");
        match after {
            Some(it) => m.insert(k.clone(), it),
            None => m.remove(&k),
        };
        let u = store.usage();
        assert!(u.bytes <= limit as u64, "{u:?}");
        if !lenient {
            let live: Vec<_> = m.iter().collect();
            assert_eq!(u.items, live.len() as u64, "items");
            let (least, most) = live
                .iter()
                .map(|(k, it)| {
                    let exptime = u32::from(it.exptime != 0);
                    charge_range(k.len(), it.value.len(), it.flags, exptime)
                })
                .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
            assert!(
                (least as u64..=most as u64).contains(&u.bytes),
                "bytes {} not in {least}..={most}",
                u.bytes
            );
        }
    }
});
