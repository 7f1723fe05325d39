//! One cache's items: memcached 1.6.18 semantics over a byte budget that
//! counts real memory, in log-structured segments with S3-FIFO eviction,
//! TTL and CAS. `docs/STORE.md` explains the layout byte by byte.
//!
//! # Layout
//! The store is split into up to 16 shards by key hash, each behind its own
//! `std::sync::Mutex` and each with `limit / shards` bytes of the budget and
//! its own queues. The shard count is chosen so that each shard's budget
//! holds at least two maximum-size items; small caches get fewer shards,
//! down to one. A shard is a table of segments holding packed items plus a
//! `HashTable<u32>` index of locators; see [`shard`].
//!
//! # Budget
//! The budget counts every segment a shard holds (written or not) plus 8
//! bytes of index per item. Each item is charged (`bytes`, `me size`) what
//! it takes: its header (6 to 25 bytes, only the fields it uses: see
//! [`header`]), key, value, and its share of the hash index (a 4-byte slot
//! and a control byte at hashbrown's average load factor, 8). A 32-byte key
//! with a 100-byte value, no flags and no TTL costs 146 bytes ([`charge`];
//! 148 with a 2-byte CAS distance), against the 192-byte slab chunk
//! memcached uses for it.
//! What is checked before storing is [`max_charge`], the widest header, so
//! that an item once stored can always be rewritten with a wider one.
//!
//! # CAS
//! Each shard hands out its own CAS uniques, `seq << 4 | shard`
//! (`Shard::next_cas`): unique in the store, increasing for each key
//! (which is what `cas`, meta `C` and meta `I`'s "older than the item's"
//! compare), not across shards (which no command compares: memcached's
//! `flush_all` does, with `oldest_cas`, and here an immediate flush removes
//! every item before it answers instead). A segment stores its items' CAS
//! as a distance from the last one handed out when it started, mostly one
//! byte. A change that needs a new CAS takes the shard's next; a move
//! (merge-eviction, a copy for a wider header) keeps it. A sidecar's
//! versioned copy ([`Store::copy`]) brings its own, stored whole when it is
//! out of a distance's reach; the shard's counter then moves past it
//! (`Shard::take_cas`), so that a key's uniques still increase.
//!
//! # Choices where memcached is loose or the model is ambiguous
//! - `cas: Some(0)` on a store or delete is a check that always fails, since
//!   no item has CAS 0 (memcached 1.6.18: text `cas … 0` is EXISTS, meta
//!   `ms`/`md` `C0` is EX); binary CAS 0 means "no check" and parses as
//!   `None`. `ma C0` is no check, as in memcached.
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
//! - `me` reports as `cls` the slab class memcached would give the item
//!   (there are no slab classes here), and as `size` the bytes it is charged.
//! - Values are at most 16 MiB (a 3-byte length): the command line refuses
//!   a larger `--max-item-size`, and a store built with one caps it there.
//!   CAS uniques are 56 bits (52 of a shard's sequence).
//! - A touch, `gat` or `mg T` that gives a TTL to an item that had none, a
//!   change of CAS its header has no room for (an in-place `incr`, an
//!   invalidation), and a bump of an item whose segment started over 9
//!   hours ago write a fresh copy of the item (same queue, credit, CAS
//!   unless it changes), which moves it to the tail of its queue, and may
//!   evict to make room, as a write does. memcached changes these in place.

mod header;
mod shard;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use self::header::{Header, FETCHED, STALE, TOKEN_SENT};
use self::shard::{bumped, carry_freq, Flush, NewItem, Removed, Shard, MAX_VERSION};
use crate::clock::unix_now;
use crate::mrc::Tracker;
use crate::node::counters::CacheStats;
use crate::protocol::decimal;
use crate::protocol::request::{self, Arith, Command, Delete, Exptime, Get, StoreMode};
use crate::protocol::{ErrorReply, Found, Response, MAX_KEY_LEN};
use crate::sync::lock;

pub use self::header::MAX_VALUE_LEN;
pub use self::shard::{charge, charge_range, max_charge, MAX_CREDIT, SMALL_SHARE};

/// The key hash: foldhash, seeded per store, as hashbrown's default (SipHash
/// cost as much as the whole lookup). A tenant can only aim collisions at
/// its own cache's shards.
type RandomState = foldhash::fast::RandomState;

/// Largest relative exptime (30 days); larger values are unix times.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;
/// Most shards a store is split into.
const MAX_SHARDS: usize = 16;
/// Items the expiry sweep removes per shard lock hold, at most.
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
    /// memcached `settings.oldest_live` (0 none).
    oldest_live: AtomicU64,
    limit: AtomicUsize,
    max_item_size: usize,
    /// The shard the next expiry sweep starts at.
    sweep_next: AtomicUsize,
    stats: Arc<CacheStats>,
    /// The what-if tracker (`mrc`), fed after each command from the
    /// command and its reply, outside the shard lock; None when turned off.
    what_if: Option<Tracker>,
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
fn ttl(e: &Header, now: u64) -> i64 {
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

/// memcached's slab class for an item with this key and value (`-n 48 -f
/// 1.25`): its 48-byte header, the 8-byte CAS, the key and its NUL, the
/// value and its CRLF. Reported by `me` as `cls`.
fn slab_class(key_len: usize, value_len: usize) -> u32 {
    let size = 48 + 8 + key_len + 1 + value_len + 2;
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
        let max_item_size = max_item_size.min(MAX_VALUE_LEN);
        while n > 1 && limit_bytes / n < 2 * max_charge(0, max_item_size) {
            n /= 2;
        }
        let hasher = RandomState::default();
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(limit_bytes / n, hasher, i)))
            .collect();
        Store {
            shards,
            hasher,
            oldest_live: AtomicU64::new(0),
            limit: AtomicUsize::new(limit_bytes),
            max_item_size,
            sweep_next: AtomicUsize::new(0),
            stats,
            what_if: Some(Tracker::new(limit_bytes as u64)),
        }
    }

    /// The same store without the what-if tracker (`memgate node --what-if
    /// off`): no command then touches it, not even to hash the key.
    pub fn without_what_if(mut self) -> Store {
        self.what_if = None;
        self
    }

    pub fn what_if(&self) -> Option<&Tracker> {
        self.what_if.as_ref()
    }

    /// Execute a data command: Get, Store, Delete, Arith, Touch, FlushAll,
    /// MetaDebug. Anything else is `Error(UnknownCommand)`. `now` is unix
    /// seconds.
    pub fn execute(&self, cmd: &Command, now: u64) -> Response {
        let response = match cmd {
            // Tracked key by key, as it is answered.
            Command::Get(g) => return self.get(g, now),
            Command::Store(s) => self.store(s, None, now),
            Command::Delete(d) => match self.delete(d, now) {
                Ok(_) => Response::Deleted,
                Err(refusal) => refusal,
            },
            Command::Arith(a) => self.arith(a, now),
            Command::Touch { key, exptime } => self.touch(key, *exptime, now),
            Command::FlushAll { delay } => self.flush_all(*delay, now),
            Command::MetaDebug { key } => self.meta_debug(key, now),
            _ => Response::Error(ErrorReply::UnknownCommand),
        };
        if let Some(tracker) = &self.what_if {
            track(tracker, cmd, &response);
        }
        response
    }

    /// memgate's sidecar copy ([`Command::Copy`]; the caller has checked the
    /// key's tombstones): `st` as an add, or with a version as a set that
    /// only a live item with an older CAS lets through (`Exists` otherwise);
    /// with a version, the item stored takes it as its CAS. Stored, counted,
    /// charged, expired, flushed and evicted as the add or set it is.
    pub fn copy(&self, st: &request::Store, version: Option<u64>, now: u64) -> Response {
        let copy = match (st.mode, version) {
            (StoreMode::Add, None) => true,
            (StoreMode::Add | StoreMode::Set, Some(v)) => (1..=MAX_VERSION).contains(&v),
            _ => false,
        };
        // A CAS the store cannot hold (56 bits, never 0), or a shape the
        // parser never builds, is a bad command.
        if !copy || st.cas.is_some() || st.invalidate {
            return client_error();
        }
        let response = self.store(st, version, now);
        if let Some(tracker) = &self.what_if {
            track_store(tracker, st, &response);
        }
        response
    }

    /// memgate's delete under a tombstone ([`Command::Bury`]): `key`'s
    /// plain delete, as `md <key>` makes it, which also tells the CAS the
    /// removed item had (`DeletedCas`), or, when there was none, the CAS
    /// the key would get next (`NotFoundCas`): every write of the key
    /// before this delete has a lower one. The sidecar buries the key on a
    /// replica with that version.
    pub fn delete_reporting(&self, key: &Bytes, now: u64) -> Response {
        let delete = Delete {
            key: key.clone(),
            cas: None,
            invalidate: false,
            exptime: None,
        };
        match self.delete(&delete, now) {
            Ok(cas) => {
                self.forget(key);
                Response::DeletedCas { cas }
            }
            Err(Response::NotFound) => {
                let cas = self.lock(self.hasher.hash_one(&key[..])).next_cas();
                Response::NotFoundCas { cas }
            }
            Err(refusal) => refusal,
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
        drop(s);
        self.forget(key);
    }

    /// The item is gone at every size (unlinked, expired, flushed): its
    /// next read must not count as a hit in the what-if curve.
    fn forget(&self, key: &[u8]) {
        if let Some(tracker) = &self.what_if {
            tracker.remove(key);
        }
    }

    /// Change the budget; shrinking evicts down to the new limit at once.
    pub fn set_limit(&self, limit_bytes: usize) {
        self.limit.store(limit_bytes, Ordering::Relaxed);
        if let Some(tracker) = &self.what_if {
            tracker.set_limit(limit_bytes as u64);
        }
        let per_shard = limit_bytes / self.shards.len();
        let flush = self.flush_state();
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            let removed = s.set_limit(per_shard, unix_now(), &flush);
            drop(s);
            self.count_removed(removed);
        }
    }

    /// `stats cachedump`: memcached's `ITEM <key> [<bytes> b; <exptime> s]`
    /// for up to `limit` live items (0: no limit), as (key, the bracket),
    /// within memcached's 2 MiB of reply. Each shard is walked under its
    /// lock, newest items first within it; shards come one after another,
    /// so the list is not in recency order overall (nor is memcached's,
    /// which lists its cold LRU only).
    pub fn dump(&self, limit: usize, now: u64) -> Vec<(Vec<u8>, String)> {
        const MAX_REPLY: usize = 2 << 20;
        let flush = self.flush_state();
        let mut out = Vec::new();
        // memcached counts each line and the closing "END\r\n\0".
        let mut reply = 6;
        for shard in self.shards.iter() {
            let more = lock(shard).for_each_live(now, &flush, |key, len, exptime| {
                let info = format!("[{len} b; {exptime} s]");
                let line = "ITEM ".len() + key.len() + 1 + info.len() + 2;
                if limit != 0 && out.len() >= limit || reply + line > MAX_REPLY {
                    return false;
                }
                reply += line;
                out.push((key.to_vec(), info));
                true
            });
            if !more {
                break;
            }
        }
        out
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
    /// Only segments whose every item is expired (or flushed) are looked
    /// at, found from each shard's segment table, so the cost is the
    /// segment tables plus the items reclaimed. Each shard lock is held for
    /// at most 256 removals at a time; the next call starts at the next
    /// shard.
    pub fn reclaim_expired(&self, now: u64, max: usize) -> usize {
        let n = self.shards.len();
        let flush = self.flush_state();
        let start = self.sweep_next.fetch_add(1, Ordering::Relaxed);
        let mut total = 0usize;
        for k in 0..n {
            let shard = &self.shards[(start + k) % n];
            while total < max {
                let chunk = SWEEP_CHUNK.min(max - total);
                let mut s = lock(shard);
                let removed = s.sweep(now, &flush, chunk);
                drop(s);
                let got = (removed.expired + removed.flushed) as usize;
                total += got;
                self.count_removed(removed);
                if got < chunk {
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

    /// Lock a shard; one that a panic poisoned is still consistent enough to
    /// keep serving (every mutation is a few field writes).
    fn lock(&self, hash: u64) -> MutexGuard<'_, Shard<RandomState>> {
        lock(self.shard_of(hash))
    }

    fn flush_state(&self) -> Flush {
        Flush {
            oldest_live: self.oldest_live.load(Ordering::Relaxed),
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

    /// memcached's `do_item_get`: the live item for `key` and its header,
    /// lazily unlinking one that is flushed or expired.
    fn live(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        key: &[u8],
        now: u64,
        flush: &Flush,
    ) -> Option<(u32, Header)> {
        let i = s.find(hash, key)?;
        let h = s.header(i);
        if flush.flushed(&h, now) {
            s.remove(i);
            self.forget(key);
            bump(&self.stats.get_flushed);
            None
        } else if h.is_expired(now) {
            s.remove(i);
            self.forget(key);
            bump(&self.stats.get_expired);
            bump(&self.stats.expired);
            None
        } else {
            Some((i, h))
        }
    }

    /// Link a new item (the key is absent), evicting to make room; in the
    /// main queue if `main` (it replaces an item that was there). An item
    /// that is already expired is not kept: memcached would link it and
    /// reclaim it on the next access, which no client can tell apart.
    fn link(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        item: &NewItem<'_>,
        main: bool,
        now: u64,
        flush: &Flush,
    ) -> bool {
        bump(&self.stats.total_items);
        if item.header.is_expired(now) {
            return true;
        }
        match s.insert(hash, item, main, now, flush) {
            Some((_, removed)) => {
                self.count_removed(removed);
                true
            }
            None => false,
        }
    }

    /// Give item `i` header `h` (and, for an in-place `incr`, a value of
    /// the same length), in place if its header has room, else as a fresh
    /// copy ([`Shard::update`]).
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        i: u32,
        h: Header,
        value: Option<&[u8]>,
        now: u64,
        flush: &Flush,
    ) {
        let removed = s.update(hash, i, h, value, now, flush);
        self.count_removed(removed);
    }

    /// Replace item `old` with `item` (same key). The new item inherits the
    /// old one's queue and read credit: rewriting a hot key keeps it hot.
    fn replace(
        &self,
        s: &mut Shard<RandomState>,
        hash: u64,
        old: u32,
        mut item: NewItem<'_>,
        now: u64,
        flush: &Flush,
    ) -> Response {
        let cas = item.header.cas;
        if max_charge(item.key.len(), item.parts[0].len() + item.parts[1].len()) > s.limit() {
            return Response::Error(ErrorReply::OutOfMemory);
        }
        let main = s.in_main(old);
        item.header.bits = carry_freq(item.header.bits, s.header(old).bits);
        s.remove(old);
        if self.link(s, hash, &item, main, now, flush) {
            Response::Stored { cas }
        } else {
            Response::Error(ErrorReply::OutOfMemory)
        }
    }

    fn get(&self, g: &Get, now: u64) -> Response {
        let mut out = Vec::with_capacity(g.keys.len());
        match self.get_each(g, now, |_, found| out.push(found.map(|f| f.to_owned()))) {
            Ok(()) => Response::Get(out),
            Err(refused) => refused,
        }
    }

    /// A retrieval ([`Command::Get`]) whose result for each key, in the
    /// request's order, is handed to `each` with the key: a hit with its key
    /// and value borrowed, the value from its segment while the shard is
    /// locked, or `None`. A reply written from it copies the value once, straight into
    /// the reply, where a [`Response`] copied it twice and allocated for
    /// it (benches/STORE.md). `Err` is the reply that refuses the keys.
    /// Counted and fed to the what-if tracker as [`Self::execute`] does.
    pub fn get_each(
        &self,
        g: &Get,
        now: u64,
        mut each: impl FnMut(&[u8], Option<Found<&[u8]>>),
    ) -> Result<(), Response> {
        if g.keys.iter().any(|k| k.len() > MAX_KEY_LEN) {
            return Err(client_error());
        }
        let flush = self.flush_state();
        let stats = &*self.stats;
        for key in &g.keys {
            let value_len = self.get_one(g, key, now, &flush, &mut each);
            let (cmd, hits, misses) = match g.touch {
                Some(_) => (&stats.cmd_touch, &stats.touch_hits, &stats.touch_misses),
                None => (&stats.cmd_get, &stats.get_hits, &stats.get_misses),
            };
            bump(cmd);
            bump(if value_len.is_some() { hits } else { misses });
            // After the shard's lock is released: a sampled key takes the
            // tracker's.
            if let Some(tracker) = &self.what_if {
                let size = value_len.map_or(0, |len| charge(key.len(), len));
                tracker.record(key, size as u64);
            }
        }
        Ok(())
    }

    /// One key of [`Self::get_each`], handed to `each` under the shard's
    /// lock; the hit's value length, or `None` for a miss.
    fn get_one(
        &self,
        g: &Get,
        key: &[u8],
        now: u64,
        flush: &Flush,
        each: &mut impl FnMut(&[u8], Option<Found<&[u8]>>),
    ) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let mut s = self.lock(hash);
        let Some((i, mut h)) = self.live(&mut s, hash, key, now, flush) else {
            let Some(ttl_in) = g.vivify else {
                each(key, None);
                return None;
            };
            // meta N: create an empty item and hand this client the win.
            let header = Header {
                bits: TOKEN_SENT,
                flags: 0,
                exptime: abs_exptime(ttl_in, now),
                time: secs(now),
                cas: s.next_cas(),
            };
            let found = Found {
                key,
                flags: 0,
                cas: header.cas,
                data: &[][..],
                ttl: ttl(&header, now),
                last_access: 0,
                fetched: false,
                won: true,
                stale: false,
                win_sent: false,
            };
            let item = NewItem {
                key,
                parts: [b"", b""],
                header,
                whole_cas: false,
            };
            let linked = self.link(&mut s, hash, &item, false, now, flush);
            each(key, linked.then_some(found));
            return linked.then_some(0);
        };
        let read = h;
        let fetched = h.bits & FETCHED != 0;
        let win_sent = h.bits & TOKEN_SENT != 0;
        let stale = h.bits & STALE != 0;
        let last_access = now.saturating_sub(u64::from(h.time));
        let mut won = false;
        if let Some(r) = g.recache_below {
            // Judged on the TTL before this request's own touch.
            let below = abs_exptime(r, now);
            if !win_sent && h.exptime != 0 && below != 0 && h.exptime < below {
                won = true;
            }
        }
        if let Some(t) = g.touch {
            h.exptime = abs_exptime(t, now);
        }
        if stale && !win_sent {
            won = true;
        }
        if won {
            h.bits |= TOKEN_SENT;
        }
        let data = s.value(i);
        let value_len = data.len();
        // Before the bump below, which may move the item.
        each(
            key,
            Some(Found {
                key,
                flags: h.flags,
                cas: h.cas,
                data,
                ttl: ttl(&h, now),
                last_access,
                fetched,
                won,
                stale,
                win_sent,
            }),
        );
        if !g.no_bump {
            h.bits = bumped(h.bits | FETCHED);
            h.time = secs(now);
        }
        // A hot key read again in the same second, already fetched and at
        // full credit, has nothing to rewrite.
        if h != read {
            self.update(&mut s, hash, i, h, None, now, flush);
        }
        Some(value_len)
    }

    /// A store, with `version` the CAS a copy brings ([`Self::copy`]).
    fn store(&self, st: &request::Store, version: Option<u64>, now: u64) -> Response {
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
        if max_charge(st.key.len(), st.data.len()) > s.limit() {
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
        let cas_in = st.cas;
        let exptime = abs_exptime(st.exptime, now);
        let header = |exptime: u32, cas: u64| Header {
            bits: 0,
            flags: st.flags,
            exptime,
            time: secs(now),
            cas,
        };
        let Some((old, o)) = self.live(&mut s, hash, &st.key, now, &flush) else {
            let exptime = match (st.mode, st.vivify) {
                (StoreMode::Set | StoreMode::Replace, _) if cas_in.is_some() => {
                    bump(&self.stats.cas_misses);
                    return Response::NotFound;
                }
                (StoreMode::Set | StoreMode::Add, _) => exptime,
                (StoreMode::Append | StoreMode::Prepend, Some(v)) => abs_exptime(v, now),
                _ => return Response::NotStored,
            };
            let cas = s.take_cas(version);
            let item = NewItem {
                key: &st.key,
                parts: [&st.data, b""],
                header: header(exptime, cas),
                whole_cas: false,
            };
            return if self.link(&mut s, hash, &item, false, now, &flush) {
                Response::Stored { cas }
            } else {
                Response::Error(ErrorReply::OutOfMemory)
            };
        };
        let cas_res = match cas_in {
            None => CasResult::None,
            Some(c) if c == o.cas => CasResult::Match,
            Some(c) if st.invalidate && c < o.cas => CasResult::Stale,
            Some(_) => CasResult::BadVal,
        };
        match st.mode {
            StoreMode::Add => {
                // add only adds a missing item, but bumps an existing one.
                let h = Header {
                    time: secs(now),
                    bits: bumped(o.bits),
                    ..o
                };
                self.update(&mut s, hash, old, h, None, now, &flush);
                Response::NotStored
            }
            StoreMode::Set | StoreMode::Replace => {
                // A mirror older than the item (or the same write again)
                // must not undo a newer one.
                if version.is_some_and(|v| v <= o.cas) {
                    return Response::Exists;
                }
                let mut h = header(exptime, 0);
                match (cas_in.is_some(), cas_res) {
                    (false, _) => {}
                    (true, CasResult::Match) => bump(&self.stats.cas_hits),
                    (true, CasResult::Stale) => {
                        // Replaces the value but keeps the TTL, marked stale,
                        // keeping a win already handed out.
                        h.exptime = o.exptime;
                        h.bits = STALE | (o.bits & TOKEN_SENT);
                        bump(&self.stats.cas_hits);
                    }
                    (true, _) => {
                        bump(&self.stats.cas_badval);
                        return Response::Exists;
                    }
                }
                h.cas = s.take_cas(version);
                let item = NewItem {
                    key: &st.key,
                    parts: [&st.data, b""],
                    header: h,
                    whole_cas: false,
                };
                self.replace(&mut s, hash, old, item, now, &flush)
            }
            StoreMode::Append | StoreMode::Prepend => {
                if !matches!(cas_res, CasResult::None | CasResult::Match) {
                    return Response::Exists;
                }
                let old_len = s.value(old).len();
                if st.key.len() + old_len + st.data.len() > self.max_item_size {
                    return Response::Error(ErrorReply::TooLarge);
                }
                // The old value is copied out: its segment may be evicted
                // while the new item makes room.
                let old_value = s.value(old).to_vec();
                let parts: [&[u8]; 2] = if st.mode == StoreMode::Append {
                    [&old_value, &st.data]
                } else {
                    [&st.data, &old_value]
                };
                let item = NewItem {
                    key: &st.key,
                    parts,
                    header: Header {
                        bits: 0,
                        flags: o.flags,
                        exptime: o.exptime,
                        time: secs(now),
                        cas: s.next_cas(),
                    },
                    whole_cas: false,
                };
                self.replace(&mut s, hash, old, item, now, &flush)
            }
        }
    }

    /// A delete: the CAS the item had when it was removed (or invalidated),
    /// or the reply that refuses it.
    fn delete(&self, d: &Delete, now: u64) -> Result<u64, Response> {
        if d.key.len() > MAX_KEY_LEN {
            return Err(client_error());
        }
        bump(&self.stats.cmd_delete);
        let hash = self.hasher.hash_one(&d.key[..]);
        let mut s = self.lock(hash);
        let flush = self.flush_state();
        let Some((i, mut h)) = self.live(&mut s, hash, &d.key, now, &flush) else {
            bump(&self.stats.delete_misses);
            return Err(Response::NotFound);
        };
        let cas = h.cas;
        if let Some(c) = d.cas {
            if c != cas {
                bump(&self.stats.delete_misses);
                return Err(Response::Exists);
            }
        }
        if d.invalidate {
            // meta I: keep the item, stale, with a new CAS, so the next
            // fetcher wins the recache.
            if let Some(t) = d.exptime {
                h.exptime = abs_exptime(t, now);
            }
            h.bits = (h.bits | STALE) & !TOKEN_SENT;
            h.cas = s.next_cas();
            self.update(&mut s, hash, i, h, None, now, &flush);
        } else {
            bump(&self.stats.delete_hits);
            s.remove(i);
        }
        Ok(cas)
    }

    fn arith(&self, a: &Arith, now: u64) -> Response {
        if a.key.len() > MAX_KEY_LEN {
            return client_error();
        }
        let hash = self.hasher.hash_one(&a.key[..]);
        let mut s = self.lock(hash);
        let flush = self.flush_state();
        let mut buf = [0u8; 20];
        let Some((i, mut h)) = self.live(&mut s, hash, &a.key, now, &flush) else {
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
            let header = Header {
                bits: 0,
                flags: 0,
                exptime,
                time: secs(now),
                cas: s.next_cas(),
            };
            let ttl = ttl(&header, now);
            let item = NewItem {
                key: &a.key,
                parts: [decimal(a.initial, &mut buf), b""],
                header,
                whole_cas: false,
            };
            return if self.link(&mut s, hash, &item, false, now, &flush) {
                Response::Number {
                    value: a.initial,
                    cas: header.cas,
                    ttl,
                }
            } else {
                Response::Error(ErrorReply::OutOfMemory)
            };
        };
        let old_len = s.value(i).len();
        if old_len == 0 {
            return Response::Error(ErrorReply::NonNumeric);
        }
        if let Some(c) = a.cas.filter(|&c| c != 0) {
            if c != h.cas {
                return Response::Exists;
            }
        }
        let Some(current) = parse_number(s.value(i)) else {
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
        let digits = decimal(value, &mut buf);
        let cas = s.next_cas();
        let exptime = a.touch.map(|t| abs_exptime(t, now));
        if digits.len() <= old_len {
            // memcached's in-place path: same length, padded with spaces.
            // (In place here too when the header has room for the new CAS,
            // else a fresh copy with the same padded value.)
            let mut v = vec![b' '; old_len];
            v[..digits.len()].copy_from_slice(digits);
            h.cas = cas;
            h.time = secs(now);
            if let Some(x) = exptime {
                h.exptime = x;
            }
            h.bits = bumped(h.bits);
            self.update(&mut s, hash, i, h, Some(&v), now, &flush);
            Response::Number {
                value,
                cas,
                ttl: ttl(&h, now),
            }
        } else {
            let header = Header {
                bits: 0,
                flags: h.flags,
                exptime: exptime.unwrap_or(h.exptime),
                time: secs(now),
                cas,
            };
            let ttl = ttl(&header, now);
            let item = NewItem {
                key: &a.key,
                parts: [digits, b""],
                header,
                whole_cas: false,
            };
            match self.replace(&mut s, hash, i, item, now, &flush) {
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
        let Some((i, h)) = self.live(&mut s, hash, key, now, &flush) else {
            bump(&self.stats.touch_misses);
            return Response::NotFound;
        };
        // memcached's item_touch fetches with a bump; the CAS is unchanged.
        let h = Header {
            exptime: abs_exptime(exptime, now),
            bits: bumped(h.bits | FETCHED),
            time: secs(now),
            ..h
        };
        self.update(&mut s, hash, i, h, None, now, &flush);
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
            // Effective now: every item there is was stored before it, those
            // of this second too (which memcached tells apart by CAS). Purge
            // them all so their memory is back at once.
            for shard in self.shards.iter() {
                let removed = lock(shard).purge();
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
        let Some((i, h)) = self.live(&mut s, hash, key, now, &flush) else {
            return Response::MetaDebug(None);
        };
        let size = s.charge_of(i);
        let value_len = s.value(i).len();
        let fields = vec![
            ("exp".to_string(), ttl(&h, now).to_string()),
            (
                "la".to_string(),
                now.saturating_sub(u64::from(h.time)).to_string(),
            ),
            ("cas".to_string(), h.cas.to_string()),
            (
                "fetch".to_string(),
                if h.bits & FETCHED != 0 { "yes" } else { "no" }.to_string(),
            ),
            (
                "cls".to_string(),
                slab_class(key.len(), value_len).to_string(),
            ),
            ("size".to_string(), size.to_string()),
        ];
        Response::MetaDebug(Some(fields))
    }
}

/// Feed a command's effect to the what-if tracker: writes store the key or
/// give it a credit as the store does; removals forget it. Reads, the
/// hit-or-miss events, are fed by [`Store::get_each`].
fn track(tracker: &Tracker, cmd: &Command, response: &Response) {
    match (cmd, response) {
        (Command::Store(st), response) => track_store(tracker, st, response),
        (Command::Arith(a), Response::Number { value, .. }) => {
            let digits = value.checked_ilog10().unwrap_or(0) as usize + 1;
            tracker.record_write(&a.key, charge(a.key.len(), digits) as u64);
        }
        (Command::Touch { key, .. }, Response::Touched) => tracker.record_write(key, 0),
        (Command::Delete(d), Response::Deleted) if !d.invalidate => tracker.remove(&d.key),
        (Command::FlushAll { delay }, Response::Ok) if *delay <= 0 => tracker.flush(),
        _ => {}
    }
}

/// [`track`] for a store (or a copy, which stores as one).
fn track_store(tracker: &Tracker, st: &request::Store, response: &Response) {
    match response {
        Response::Stored { .. } => {
            let size = match st.mode {
                // The result's size is not at hand; the key keeps its own.
                StoreMode::Append | StoreMode::Prepend => 0,
                // As the store charges it, with a one-byte CAS distance.
                _ => {
                    charge_range(
                        st.key.len(),
                        st.data.len(),
                        st.flags,
                        u32::from(st.exptime != 0),
                    )
                    .0
                }
            };
            tracker.record_write(&st.key, size as u64);
        }
        // add on an existing item bumps it.
        Response::NotStored if st.mode == StoreMode::Add => tracker.record_write(&st.key, 0),
        // A refused set unlinks the old item.
        Response::Error(ErrorReply::OutOfMemory) if st.mode == StoreMode::Set => {
            tracker.remove(&st.key)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
