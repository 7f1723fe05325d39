//! One cache's items: memcached 1.6.18 semantics over a byte budget that
//! counts real memory, with LRU eviction, TTL and CAS.
//!
//! # Layout
//! The store is split into up to 16 shards by key hash, each behind its own
//! `std::sync::Mutex` and each with `limit / shards` bytes of the budget and
//! its own LRU (memcached's LRU is per slab class, so it is approximate
//! there too). The shard count is chosen so that each shard's budget holds at
//! least two maximum-size items; small caches get fewer shards, down to one.
//! A shard is a dense slab of 48-byte entries plus a `HashTable<u32>` index;
//! see [`shard`].
//!
//! # Budget
//! Every item is charged `alloc_size(key + value) + PER_ITEM_OVERHEAD`: the
//! allocator's real chunk for the single `key ‖ value` box (glibc rounds
//! `n + 8` up to 16 bytes, minimum 32) plus 56 bytes: the entry (48) and its
//! share of the hash index (a 4-byte slot and a control byte at hashbrown's
//! average load factor, 8). A 15-byte key with a 100-byte value costs 184
//! bytes, against the 192-byte slab chunk memcached uses for it.
//!
//! # Choices where memcached is loose or the model is ambiguous
//! - `cas: Some(0)` means "no CAS check", as a zero CAS does in memcached.
//! - `add` ignores a supplied CAS (meta `ms ME C..` semantics).
//! - An append/prepend whose result exceeds `max_item_size` answers
//!   `TooLarge` and keeps the old item (memcached answers NOT_STORED and
//!   keeps it); an over-size `set` unlinks the old item, as memcached does.
//! - decr to a shorter number overwrites in place and pads with spaces, as
//!   memcached's in-place path does (`decr` 100 by 1 reads back `"99 "`).
//! - `gat`/`mg T` count as touches (`cmd_touch`, `touch_hits/misses`), not as
//!   gets, as memcached counts them.
//! - `flush_all` with no delay also purges the flushed items at once, so
//!   `bytes`/`curr_items` drop immediately; a delayed flush is lazy.

mod shard;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use self::shard::{Entry, Flush, Removed, Shard, FETCHED, STALE, TOKEN_SENT};
use crate::clock::unix_now;
use crate::node::counters::CacheStats;
use crate::protocol::request::{self, Arith, Command, Delete, Exptime, Get, StoreMode};
use crate::protocol::{ErrorReply, Found, Response, MAX_KEY_LEN};

pub use self::shard::{alloc_size, charge, PER_ITEM_OVERHEAD};

/// Largest relative exptime (30 days); larger values are unix times.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;
/// Most shards a store is split into.
const MAX_SHARDS: usize = 16;
/// Slab positions the expiry sweep looks at per shard lock hold, at most.
const SWEEP_CHUNK: usize = 256;

/// A cache's occupancy, for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `curr_items`
    pub items: u64,
    /// `bytes`: the memory charged for the items.
    pub bytes: u64,
    /// `limit_maxbytes`
    pub limit: u64,
}

/// One cache's items. `Send + Sync`; every method takes `&self`.
pub struct Store {
    shards: Box<[Mutex<Shard<RandomState>>]>,
    hasher: RandomState,
    /// The last CAS unique handed out.
    cas: AtomicU64,
    /// memcached `settings.oldest_live` (0 none) and `oldest_cas` (0 none).
    oldest_live: AtomicU64,
    oldest_cas: AtomicU64,
    limit: AtomicUsize,
    max_item_size: usize,
    /// The shard the next expiry sweep starts at.
    sweep_next: AtomicUsize,
    stats: Arc<CacheStats>,
}

/// Convert a client exptime to absolute unix seconds (0 never), as
/// memcached's `realtime(EXPTIME_TO_POSITIVE_TIME(e))`: negative and past
/// absolute times give a time that is already over.
fn abs_exptime(e: Exptime, now: u64) -> u32 {
    let e = if e < 0 { REALTIME_MAXDELTA + 1 } else { e };
    if e == 0 {
        return 0;
    }
    let e = e.unsigned_abs();
    let abs = if e > REALTIME_MAXDELTA as u64 {
        // Absolute: at or before now is already over (1, as memcached's
        // realtime() gives a time before the server started).
        if e <= now {
            1
        } else {
            e
        }
    } else {
        now.saturating_add(e)
    };
    u32::try_from(abs).unwrap_or(u32::MAX)
}

/// Seconds as stored in an entry.
fn secs(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

/// Remaining TTL as the protocols report it: -1 for none.
fn ttl(e: &Entry, now: u64) -> i64 {
    if e.exptime == 0 {
        -1
    } else {
        i64::from(e.exptime) - i64::try_from(now).unwrap_or(i64::MAX)
    }
}

/// memcached's `safe_strtoull` over an item's data, which memcached follows
/// with `\r\n`: leading whitespace and a sign are allowed, the digits must be
/// followed by whitespace, a NUL or the end, and overflow is an error.
fn parse_number(v: &[u8]) -> Option<u64> {
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut i = v.iter().take_while(|&&c| is_space(c)).count();
    let mut neg = false;
    if let Some(&c) = v.get(i) {
        if c == b'+' || c == b'-' {
            neg = c == b'-';
            i += 1;
        }
    }
    let start = i;
    let mut val: u64 = 0;
    while let Some(&c) = v.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        val = val.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    if i == start {
        return None;
    }
    if let Some(&c) = v.get(i) {
        if !(is_space(c) || c == 0) {
            return None;
        }
    }
    let val = if neg { val.wrapping_neg() } else { val };
    // strtoull negates "-N"; memcached refuses it when the result looks
    // negative as a signed number.
    if (val as i64) < 0 && v.contains(&b'-') {
        return None;
    }
    Some(val)
}

/// `n` in decimal, into `buf`; returns the digits.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// memcached's slab class for an item of `size` bytes (`-n 48 -f 1.25`),
/// reported by `me` as `cls`.
fn slab_class(size: usize) -> u32 {
    let mut chunk = 96usize;
    let mut cls = 1;
    while chunk < size && cls < 63 {
        chunk = ((chunk * 5 / 4) + 7) & !7;
        cls += 1;
    }
    cls
}

fn bump(c: &AtomicU64) {
    CacheStats::incr(c);
}

fn client_error() -> Response {
    Response::Error(ErrorReply::Client("bad command line format".into()))
}

/// How a supplied CAS compares to an item's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CasResult {
    None,
    Match,
    /// Older than the item's, with meta `I`: store but mark stale.
    Stale,
    BadVal,
}

impl Store {
    pub fn new(limit_bytes: usize, max_item_size: usize, stats: Arc<CacheStats>) -> Store {
        let mut n = MAX_SHARDS;
        while n > 1 && limit_bytes / n < 2 * charge(0, max_item_size) {
            n /= 2;
        }
        let hasher = RandomState::new();
        let shards = (0..n)
            .map(|_| Mutex::new(Shard::new(limit_bytes / n, hasher.clone())))
            .collect();
        Store {
            shards,
            hasher,
            cas: AtomicU64::new(0),
            oldest_live: AtomicU64::new(0),
            oldest_cas: AtomicU64::new(0),
            limit: AtomicUsize::new(limit_bytes),
            max_item_size,
            sweep_next: AtomicUsize::new(0),
            stats,
        }
    }

    /// Execute a data command: Get, Store, Delete, Arith, Touch, FlushAll,
    /// MetaDebug. Anything else is `Error(UnknownCommand)`. `now` is unix
    /// seconds.
    pub fn execute(&self, cmd: &Command, now: u64) -> Response {
        match cmd {
            Command::Get(g) => self.get(g, now),
            Command::Store(s) => self.store(s, now),
            Command::Delete(d) => self.delete(d, now),
            Command::Arith(a) => self.arith(a, now),
            Command::Touch { key, exptime } => self.touch(key, *exptime, now),
            Command::FlushAll { delay } => self.flush_all(*delay, now),
            Command::MetaDebug { key } => self.meta_debug(key, now),
            _ => Response::Error(ErrorReply::UnknownCommand),
        }
    }

    /// Remove the key if present (used when an over-size set is refused:
    /// memcached unlinks the old value).
    pub fn unlink(&self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let mut s = self.lock(hash);
        if let Some(i) = s.find(hash, key) {
            s.remove(i);
        }
    }

    /// Change the budget; shrinking evicts down to the new limit at once.
    pub fn set_limit(&self, limit_bytes: usize) {
        self.limit.store(limit_bytes, Ordering::Relaxed);
        let per_shard = limit_bytes / self.shards.len();
        let flush = self.flush_state();
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            s.set_limit(per_shard);
            let removed = s.shrink_to_limit(unix_now(), &flush);
            drop(s);
            self.count_removed(removed);
        }
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage {
            limit: self.limit.load(Ordering::Relaxed) as u64,
            ..Usage::default()
        };
        for shard in self.shards.iter() {
            let s = lock(shard);
            u.items += s.len() as u64;
            u.bytes += s.bytes() as u64;
        }
        u
    }

    /// Reclaim up to `max` expired (or flushed) items; returns how many.
    ///
    /// Incremental: each call looks at no more than `max(4 × max, 1024)`
    /// slab positions in all, resuming where the previous call stopped, and
    /// holds each shard lock for at most 256 positions at a time.
    pub fn reclaim_expired(&self, now: u64, max: usize) -> usize {
        let n = self.shards.len();
        let flush = self.flush_state();
        let per_shard = (max.saturating_mul(4).max(1024) / n).max(1);
        let start = self.sweep_next.fetch_add(1, Ordering::Relaxed);
        let mut total = 0usize;
        for k in 0..n {
            let shard = &self.shards[(start + k) % n];
            let mut scanned = 0;
            while scanned < per_shard && total < max {
                let chunk = SWEEP_CHUNK.min(per_shard - scanned);
                let mut s = lock(shard);
                let len = s.len();
                let removed = s.sweep(now, &flush, chunk.min(len), max - total);
                drop(s);
                total += (removed.expired + removed.flushed) as usize;
                self.count_removed(removed);
                scanned += chunk;
                if len <= chunk {
                    break;
                }
            }
            if total >= max {
                break;
            }
        }
        total
    }

    fn shard_of(&self, hash: u64) -> &Mutex<Shard<RandomState>> {
        // Bits 48..52: hashbrown uses the low bits for the bucket and the
        // top 7 for its control byte.
        &self.shards[(hash >> 48) as usize & (self.shards.len() - 1)]
    }

    fn lock(&self, hash: u64) -> MutexGuard<'_, Shard<RandomState>> {
        lock(self.shard_of(hash))
    }

    fn next_cas(&self) -> u64 {
        self.cas.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn flush_state(&self) -> Flush {
        Flush {
            oldest_live: self.oldest_live.load(Ordering::Relaxed),
            oldest_cas: self.oldest_cas.load(Ordering::Relaxed),
        }
    }

    fn count_removed(&self, r: Removed) {
        if r.evicted > 0 {
            CacheStats::add(&self.stats.evictions, r.evicted);
        }
        if r.expired > 0 {
            CacheStats::add(&self.stats.expired, r.expired);
        }
    }

    /// memcached's `do_item_get`: the live item for `key`, lazily unlinking
    /// one that is flushed or expired.
    fn live(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        key: &[u8],
        now: u64,
        flush: &Flush,
    ) -> Option<u32> {
        let i = s.find(hash, key)?;
        let e = s.entry(i);
        if flush.flushed(e, now) {
            s.remove(i);
            bump(&self.stats.get_flushed);
            None
        } else if e.is_expired(now) {
            s.remove(i);
            bump(&self.stats.get_expired);
            bump(&self.stats.expired);
            None
        } else {
            Some(i)
        }
    }

    /// Link a new item (the key is absent), evicting to make room. An item
    /// that is already expired is not kept: memcached would link it and
    /// reclaim it on the next access, which no client can tell apart.
    fn link(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        e: Entry,
        now: u64,
        flush: &Flush,
    ) -> bool {
        bump(&self.stats.total_items);
        if e.is_expired(now) {
            return true;
        }
        match s.make_room(e.charge(), now, flush) {
            Some(removed) => {
                self.count_removed(removed);
                s.insert(hash, e);
                true
            }
            None => false,
        }
    }

    /// Replace item `old` with `e` (same key).
    fn replace(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        old: u32,
        e: Entry,
        now: u64,
        flush: &Flush,
    ) -> Response {
        let cas = e.cas;
        if e.charge() > s.limit() {
            return Response::Error(ErrorReply::OutOfMemory);
        }
        s.remove(old);
        self.link(s, hash, e, now, flush);
        Response::Stored { cas }
    }

    fn get(&self, g: &Get, now: u64) -> Response {
        if g.keys.iter().any(|k| k.len() > MAX_KEY_LEN) {
            return client_error();
        }
        let flush = self.flush_state();
        let stats = &*self.stats;
        let out = g
            .keys
            .iter()
            .map(|key| {
                let found = self.get_one(g, key, now, &flush);
                match (g.touch.is_some(), found.is_some()) {
                    (true, hit) => {
                        bump(&stats.cmd_touch);
                        bump(if hit {
                            &stats.touch_hits
                        } else {
                            &stats.touch_misses
                        });
                    }
                    (false, hit) => {
                        bump(&stats.cmd_get);
                        bump(if hit {
                            &stats.get_hits
                        } else {
                            &stats.get_misses
                        });
                    }
                }
                found
            })
            .collect();
        Response::Get(out)
    }

    fn get_one(&self, g: &Get, key: &Bytes, now: u64, flush: &Flush) -> Option<Found> {
        let hash = self.hasher.hash_one(&key[..]);
        let mut s = self.lock(hash);
        let Some(i) = self.live(&mut s, hash, key, now, flush) else {
            let ttl_in = g.vivify?;
            // meta N: create an empty item and hand this client the win.
            let mut e = Entry::new(
                key,
                b"",
                0,
                abs_exptime(ttl_in, now),
                self.next_cas(),
                secs(now),
            );
            e.bits = TOKEN_SENT;
            let found = Found {
                key: key.clone(),
                flags: 0,
                cas: e.cas,
                data: Bytes::new(),
                ttl: ttl(&e, now),
                last_access: 0,
                fetched: false,
                won: true,
                stale: false,
                win_sent: false,
            };
            return self.link(&mut s, hash, e, now, flush).then_some(found);
        };
        let e = s.entry_mut(i);
        let fetched = e.bits & FETCHED != 0;
        let win_sent = e.bits & TOKEN_SENT != 0;
        let stale = e.bits & STALE != 0;
        let last_access = now.saturating_sub(u64::from(e.time));
        let mut won = false;
        if let Some(r) = g.recache_below {
            // Judged on the TTL before this request's own touch.
            let below = abs_exptime(r, now);
            if !win_sent && e.exptime != 0 && below != 0 && e.exptime < below {
                won = true;
            }
        }
        if let Some(t) = g.touch {
            e.exptime = abs_exptime(t, now);
        }
        if stale && !win_sent {
            won = true;
        }
        if won {
            e.bits |= TOKEN_SENT;
        }
        let found = Found {
            key: key.clone(),
            flags: e.flags,
            cas: e.cas,
            data: Bytes::copy_from_slice(e.value()),
            ttl: ttl(e, now),
            last_access,
            fetched,
            won,
            stale,
            win_sent,
        };
        if !g.no_bump {
            e.bits |= FETCHED;
            e.time = secs(now);
            s.bump(i);
        }
        Some(found)
    }

    fn store(&self, st: &request::Store, now: u64) -> Response {
        if st.key.len() > MAX_KEY_LEN {
            return client_error();
        }
        if st.key.len() + st.data.len() > self.max_item_size {
            if st.mode == StoreMode::Set {
                self.unlink(&st.key);
            }
            return Response::Error(ErrorReply::TooLarge);
        }
        let hash = self.hasher.hash_one(&st.key[..]);
        let mut s = self.lock(hash);
        if charge(st.key.len(), st.data.len()) > s.limit() {
            // memcached fails the allocation before looking at the old item,
            // and a failed set unlinks it so no stale value survives.
            if st.mode == StoreMode::Set {
                if let Some(i) = s.find(hash, &st.key) {
                    s.remove(i);
                }
            }
            return Response::Error(ErrorReply::OutOfMemory);
        }
        bump(&self.stats.cmd_set);
        let flush = self.flush_state();
        let cas_in = st.cas.filter(|&c| c != 0);
        let exptime = abs_exptime(st.exptime, now);
        let Some(old) = self.live(&mut s, hash, &st.key, now, &flush) else {
            let exptime = match (st.mode, st.vivify) {
                (StoreMode::Set | StoreMode::Replace, _) if cas_in.is_some() => {
                    bump(&self.stats.cas_misses);
                    return Response::NotFound;
                }
                (StoreMode::Set | StoreMode::Add, _) => exptime,
                (StoreMode::Append | StoreMode::Prepend, Some(v)) => abs_exptime(v, now),
                _ => return Response::NotStored,
            };
            let cas = self.next_cas();
            let e = Entry::new(&st.key, &st.data, st.flags, exptime, cas, secs(now));
            return if self.link(&mut s, hash, e, now, &flush) {
                Response::Stored { cas }
            } else {
                Response::Error(ErrorReply::OutOfMemory)
            };
        };
        let o = s.entry(old);
        let cas_res = match cas_in {
            None => CasResult::None,
            Some(c) if c == o.cas => CasResult::Match,
            Some(c) if st.invalidate && c < o.cas => CasResult::Stale,
            Some(_) => CasResult::BadVal,
        };
        match st.mode {
            StoreMode::Add => {
                // add only adds a missing item, but bumps an existing one.
                s.entry_mut(old).time = secs(now);
                s.bump(old);
                Response::NotStored
            }
            StoreMode::Set | StoreMode::Replace => {
                let mut e = Entry::new(&st.key, &st.data, st.flags, exptime, 0, secs(now));
                match (cas_in.is_some(), cas_res) {
                    (false, _) => {}
                    (true, CasResult::Match) => bump(&self.stats.cas_hits),
                    (true, CasResult::Stale) => {
                        // Replaces the value but keeps the TTL, marked stale,
                        // keeping a win already handed out.
                        e.exptime = o.exptime;
                        e.bits = STALE | (o.bits & TOKEN_SENT);
                        bump(&self.stats.cas_hits);
                    }
                    (true, _) => {
                        bump(&self.stats.cas_badval);
                        return Response::Exists;
                    }
                }
                e.cas = self.next_cas();
                self.replace(&mut s, hash, old, e, now, &flush)
            }
            StoreMode::Append | StoreMode::Prepend => {
                if !matches!(cas_res, CasResult::None | CasResult::Match) {
                    return Response::Exists;
                }
                let old_value = o.value();
                if st.key.len() + old_value.len() + st.data.len() > self.max_item_size {
                    return Response::Error(ErrorReply::TooLarge);
                }
                let parts: [&[u8]; 2] = if st.mode == StoreMode::Append {
                    [old_value, &st.data]
                } else {
                    [&st.data, old_value]
                };
                let e = Entry::from_parts(
                    &st.key,
                    &parts,
                    o.flags,
                    o.exptime,
                    self.next_cas(),
                    secs(now),
                );
                self.replace(&mut s, hash, old, e, now, &flush)
            }
        }
    }

    fn delete(&self, d: &Delete, now: u64) -> Response {
        if d.key.len() > MAX_KEY_LEN {
            return client_error();
        }
        bump(&self.stats.cmd_delete);
        let hash = self.hasher.hash_one(&d.key[..]);
        let mut s = self.lock(hash);
        let flush = self.flush_state();
        let Some(i) = self.live(&mut s, hash, &d.key, now, &flush) else {
            bump(&self.stats.delete_misses);
            return Response::NotFound;
        };
        if let Some(c) = d.cas.filter(|&c| c != 0) {
            if c != s.entry(i).cas {
                bump(&self.stats.delete_misses);
                return Response::Exists;
            }
        }
        if d.invalidate {
            // meta I: keep the item, stale, with a new CAS, so the next
            // fetcher wins the recache.
            let cas = self.next_cas();
            let e = s.entry_mut(i);
            if let Some(t) = d.exptime {
                e.exptime = abs_exptime(t, now);
            }
            e.bits = (e.bits | STALE) & !TOKEN_SENT;
            e.cas = cas;
        } else {
            bump(&self.stats.delete_hits);
            s.remove(i);
        }
        Response::Deleted
    }

    fn arith(&self, a: &Arith, now: u64) -> Response {
        if a.key.len() > MAX_KEY_LEN {
            return client_error();
        }
        let hash = self.hasher.hash_one(&a.key[..]);
        let mut s = self.lock(hash);
        let flush = self.flush_state();
        let mut buf = [0u8; 20];
        let Some(i) = self.live(&mut s, hash, &a.key, now, &flush) else {
            let Some(v) = a.vivify else {
                bump(if a.incr {
                    &self.stats.incr_misses
                } else {
                    &self.stats.decr_misses
                });
                return Response::NotFound;
            };
            // Created with the initial value, which is what is returned.
            let mut exptime = abs_exptime(v, now);
            if let Some(t) = a.touch {
                exptime = abs_exptime(t, now);
            }
            let cas = self.next_cas();
            let e = Entry::new(
                &a.key,
                itoa(a.initial, &mut buf),
                0,
                exptime,
                cas,
                secs(now),
            );
            let ttl = ttl(&e, now);
            return if self.link(&mut s, hash, e, now, &flush) {
                Response::Number {
                    value: a.initial,
                    cas,
                    ttl,
                }
            } else {
                Response::Error(ErrorReply::OutOfMemory)
            };
        };
        let e = s.entry(i);
        if e.value().is_empty() {
            return Response::Error(ErrorReply::NonNumeric);
        }
        if let Some(c) = a.cas.filter(|&c| c != 0) {
            if c != e.cas {
                return Response::Exists;
            }
        }
        let Some(current) = parse_number(e.value()) else {
            return Response::Error(ErrorReply::NonNumeric);
        };
        let value = if a.incr {
            current.wrapping_add(a.delta)
        } else {
            current.saturating_sub(a.delta)
        };
        bump(if a.incr {
            &self.stats.incr_hits
        } else {
            &self.stats.decr_hits
        });
        let digits = itoa(value, &mut buf);
        let cas = self.next_cas();
        let exptime = a.touch.map(|t| abs_exptime(t, now));
        if digits.len() <= e.value().len() {
            // memcached's in-place path: same length, padded with spaces.
            let e = s.entry_mut(i);
            let v = e.value_mut();
            v[..digits.len()].copy_from_slice(digits);
            v[digits.len()..].fill(b' ');
            e.cas = cas;
            e.time = secs(now);
            if let Some(x) = exptime {
                e.exptime = x;
            }
            let ttl = ttl(e, now);
            s.bump(i);
            Response::Number { value, cas, ttl }
        } else {
            let mut n = Entry::new(&a.key, digits, e.flags, e.exptime, cas, secs(now));
            if let Some(x) = exptime {
                n.exptime = x;
            }
            let ttl = ttl(&n, now);
            match self.replace(&mut s, hash, i, n, now, &flush) {
                Response::Stored { .. } => Response::Number { value, cas, ttl },
                other => other,
            }
        }
    }

    fn touch(&self, key: &Bytes, exptime: Exptime, now: u64) -> Response {
        if key.len() > MAX_KEY_LEN {
            return client_error();
        }
        bump(&self.stats.cmd_touch);
        let hash = self.hasher.hash_one(&key[..]);
        let mut s = self.lock(hash);
        let flush = self.flush_state();
        let Some(i) = self.live(&mut s, hash, key, now, &flush) else {
            bump(&self.stats.touch_misses);
            return Response::NotFound;
        };
        // memcached's item_touch fetches with a bump; the CAS is unchanged.
        let e = s.entry_mut(i);
        e.exptime = abs_exptime(exptime, now);
        e.bits |= FETCHED;
        e.time = secs(now);
        s.bump(i);
        bump(&self.stats.touch_hits);
        Response::Touched
    }

    fn flush_all(&self, delay: Exptime, now: u64) -> Response {
        bump(&self.stats.cmd_flush);
        let new_oldest = if delay > 0 {
            u64::from(abs_exptime(delay, now))
        } else {
            now
        };
        let oldest_live = new_oldest.saturating_sub(1);
        self.oldest_live.store(oldest_live, Ordering::Relaxed);
        if oldest_live <= now {
            // Effective now: items stored earlier this second are told apart
            // by their CAS. Purge them so their memory is back at once.
            self.oldest_cas.store(self.next_cas(), Ordering::Relaxed);
            let flush = self.flush_state();
            for shard in self.shards.iter() {
                let mut s = lock(shard);
                let len = s.len();
                let removed = s.purge(now, &flush, len);
                drop(s);
                self.count_removed(Removed {
                    flushed: 0,
                    ..removed
                });
            }
        }
        Response::Ok
    }

    fn meta_debug(&self, key: &Bytes, now: u64) -> Response {
        if key.len() > MAX_KEY_LEN {
            return client_error();
        }
        let hash = self.hasher.hash_one(&key[..]);
        let mut s = self.lock(hash);
        let flush = self.flush_state();
        let Some(i) = self.live(&mut s, hash, key, now, &flush) else {
            return Response::MetaDebug(None);
        };
        let e = s.entry(i);
        let size = e.charge();
        let fields = vec![
            ("exp".to_string(), ttl(e, now).to_string()),
            (
                "la".to_string(),
                now.saturating_sub(u64::from(e.time)).to_string(),
            ),
            ("cas".to_string(), e.cas.to_string()),
            (
                "fetch".to_string(),
                if e.bits & FETCHED != 0 { "yes" } else { "no" }.to_string(),
            ),
            ("cls".to_string(), slab_class(size).to_string()),
            ("size".to_string(), size.to_string()),
        ];
        Response::MetaDebug(Some(fields))
    }
}

/// Lock a shard; a panic elsewhere while holding it leaves the shard
/// consistent enough to keep serving (every mutation is a few field writes).
fn lock(m: &Mutex<Shard<RandomState>>) -> MutexGuard<'_, Shard<RandomState>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::Store as StoreCmd;
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
            mode,
            key: Bytes::copy_from_slice(key.as_bytes()),
            flags: 0,
            exptime,
            data: Bytes::copy_from_slice(val),
            cas: None,
            invalidate: false,
            vivify: None,
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
        get_with(s, mg(key), now)
    }

    fn mg(key: &str) -> Get {
        Get {
            keys: vec![Bytes::copy_from_slice(key.as_bytes())],
            ..Get::default()
        }
    }

    fn value(s: &Store, key: &str, now: u64) -> Option<Vec<u8>> {
        get(s, key, now).map(|f| f.data.to_vec())
    }

    fn arith(key: &str, incr: bool, delta: u64) -> Arith {
        Arith {
            key: Bytes::copy_from_slice(key.as_bytes()),
            incr,
            delta,
            cas: None,
            vivify: None,
            initial: 0,
            touch: None,
        }
    }

    fn del(key: &str) -> Delete {
        Delete {
            key: Bytes::copy_from_slice(key.as_bytes()),
            cas: None,
            invalidate: false,
            exptime: None,
        }
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
        // A zero CAS is "no check" (binary semantics).
        let mut zero = st(StoreMode::Set, "k", b"z", 0);
        zero.cas = Some(0);
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

    /// One shard holding ten 100-byte items with 2-byte keys.
    fn ten_item_store() -> (Store, Arc<CacheStats>) {
        let stats = Arc::new(CacheStats::default());
        let s = Store::new(10 * charge(2, 100), 1000, stats.clone());
        assert_eq!(s.shards.len(), 1);
        (s, stats)
    }

    #[test]
    fn lru_evicts_least_recently_used() {
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
        let mut g = mg("k4");
        g.no_bump = true;
        assert!(get_with(&s, g, NOW).is_some());
        let lru = lock(&s.shards[0]).lru_keys();
        assert_eq!(lru.last().map(Vec::as_slice), Some(&b"k5"[..]));
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

    #[test]
    fn byte_accounting_returns_to_zero() {
        let (s, stats) = new_store();
        let mut expect = 0;
        for i in 0..1000 {
            let key = format!("key-{i}");
            let val = vec![b'x'; i % 300];
            set(&s, &key, &val, 0, NOW);
            expect += charge(key.len(), val.len());
        }
        // Overwrite, append and incr change sizes.
        set(&s, "key-1", &[b'y'; 500], 0, NOW);
        expect = expect - charge(5, 1) + charge(5, 500);
        run_store(&s, st(StoreMode::Append, "key-2", b"abc", 0), NOW);
        expect = expect - charge(5, 2) + charge(5, 5);
        set(&s, "key-3", b"9", 0, NOW);
        expect = expect - charge(5, 3) + charge(5, 1);
        s.execute(&Command::Arith(arith("key-3", true, 1)), NOW);
        expect = expect - charge(5, 1) + charge(5, 2);
        let u = s.usage();
        assert_eq!((u.items, u.bytes), (1000, expect as u64));
        for i in 0..1000 {
            assert_eq!(
                s.execute(&Command::Delete(del(&format!("key-{i}"))), NOW),
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
            s.execute(&Command::Delete(del("key-1")), NOW),
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
        let mut g = mg("k");
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
        let mut g = mg("k");
        g.recache_below = Some(30);
        let f = get_with(&s, g.clone(), NOW).expect("hit");
        assert!(!f.won && !f.win_sent, "70s+ left");
        let f = get_with(&s, g.clone(), NOW + 80).expect("hit");
        assert!(f.won && !f.win_sent, "20s left < 30");
        let f = get_with(&s, g.clone(), NOW + 81).expect("hit");
        assert!(!f.won && f.win_sent);
        // No TTL: never wins.
        set(&s, "forever", b"v", 0, NOW);
        let mut g = mg("forever");
        g.recache_below = Some(30);
        assert!(!get_with(&s, g, NOW).expect("hit").won);
    }

    #[test]
    fn meta_delete_invalidate_marks_stale() {
        let (s, stats) = new_store();
        let c1 = set(&s, "k", b"v", 0, NOW);
        let mut d = del("k");
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
        let mut d = del("k");
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
        let mut quiet = mg("k");
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
        let mut gat = mg("k");
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
        let size = charge(1, 100).to_string();
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
        assert_eq!(itoa(0, &mut buf), b"0");
        assert_eq!(itoa(u64::MAX, &mut buf), b"18446744073709551615");
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
            .flat_map(|t| (0..500).map(move |i| charge(format!("t{t}-{i}").len(), 50)))
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
                        prop_assert_eq!(s.execute(&Command::Delete(del(&key)), NOW), want);
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
}
