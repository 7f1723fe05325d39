//! One shard of a [`Store`](super::Store): log-structured segments, a
//! compact hash index over them, S3-FIFO-style eviction by segment, and byte
//! accounting against the shard's share of the cache's limit.
//! `docs/STORE.md` has the layout byte by byte.
//!
//! - **Items** live packed in segments: a header of 7 to 25 bytes (only
//!   the fields an item uses, some as distances from the segment's base:
//!   see [`header`](super::header)), the key, the value, no padding and no
//!   per-item allocation.
//! - **Segments** are `seg_size` bytes, sized to the shard (1/128 of its
//!   budget, a power of two from 64 bytes to 1 MiB), so that a small cache is
//!   not rounded up to a large unit. An item bigger than a quarter of a
//!   segment gets a segment of its own, of exactly its size ("dedicated").
//!   New items are appended to the write segment of their queue and TTL
//!   class, which starts at a quarter of a segment and doubles as it fills;
//!   a write segment that cannot take the next item is sealed.
//! - **The index** is a `HashTable<u32>` of locators (`segment << 20 |
//!   offset`): 4 bytes plus hashbrown's control byte per bucket. The key is
//!   stored once, in the segment; hashbrown's 7-bit tags keep key compares
//!   to about one per lookup.
//! - **Eviction** is by segment, oldest first, merging: the items of the
//!   evicted segment that were read since they were last written or moved
//!   (a credit in the header) are copied, compacted, to the write segment
//!   at the tail, spending it; the rest are evicted
//!   (Segcache's merge-based eviction), in S3-FIFO's queues (Yang et al.,
//!   SOSP '23): new items in a small queue of a tenth of the budget,
//!   promoted to main only if read there, so one-hit items (scans) never
//!   displace main. The what-if tracker simulates this policy per item
//!   (`mrc::mini`), with [`SMALL_SHARE`] and [`MAX_CREDIT`].
//! - **Expiry**: items go to write segments by TTL class, so that a segment
//!   holds items that expire at about the same time; each segment keeps the
//!   latest expiry of its items, and a wholly expired segment is found from
//!   the segment table (a few hundred entries at most), not by scanning
//!   items.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::header::{
    self, item_len, least_hdr, most_hdr, Base, Header, CAS_MASK, CAS_SHARD_BITS, DEAD, MAX_HDR,
    O_BITS,
};

/// The eviction credit: reads since the item last moved, saturating at 3.
const FREQ_SHIFT: u8 = 3;
const FREQ_MASK: u8 = 3 << FREQ_SHIFT;
/// Bytes charged per index entry: a `u32` plus one control byte, divided by
/// hashbrown's load factor, which is between 7/16 (just grown) and 7/8
/// (about to grow): 5 / 0.66 on average, rounded up.
pub const INDEX_SLOT_CHARGE: usize = 8;
/// The largest version a copy may bring as its CAS ([`Shard::take_cas`]):
/// 56 bits less one of the shard's steps, so that the CAS the shard hands
/// out next is still greater and still fits.
pub const MAX_VERSION: u64 = CAS_MASK - (1 << CAS_SHARD_BITS);

/// The bytes an item with this key and value length is charged in the
/// common case: no client flags, no TTL, a one-byte CAS distance, so a
/// compact header (see [`header`](super::header)), plus its share of the
/// index. Flags and a TTL add 4 bytes each and the shape byte; a CAS
/// stored whole adds up to 6 and the shape byte.
pub fn charge(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + least_hdr(value_len, false, false) + INDEX_SLOT_CHARGE
}

/// The most an item with this key and value length can be charged: every
/// header field, the CAS whole. What the budget checks before storing, so
/// that an item once stored can always be rewritten with a wider header.
pub fn max_charge(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + MAX_HDR + INDEX_SLOT_CHARGE
}

/// The least and the most an item with this key, value length, flags and
/// exptime can be charged: its CAS field takes 1 to 7 bytes, its access
/// time 2 or 4, and an exptime field stays, holding 0, when a touch clears
/// the TTL of an item that had one.
pub fn charge_range(key_len: usize, value_len: usize, flags: u32, exptime: u32) -> (usize, usize) {
    let item = key_len + value_len + INDEX_SLOT_CHARGE;
    (
        item + least_hdr(value_len, flags != 0, exptime != 0),
        item + most_hdr(value_len, flags != 0),
    )
}

/// Offset bits in a locator; segments are at most `1 << OFF_BITS` bytes
/// (dedicated ones, holding one item at offset 0, may be larger).
const OFF_BITS: u32 = 20;
const MAX_SEG_SIZE: usize = 1 << OFF_BITS;
const MIN_SEG_SIZE: usize = 64;
/// Segment ids a shard can have: 4096 × 1 MiB is 4 GiB per shard, 64 GiB
/// for a 16-shard cache. Past that, the shard evicts rather than grow.
const MAX_SEGS: usize = 1 << (32 - OFF_BITS);
/// Segments per shard budget aimed at: fine enough that evicting one loses
/// little, coarse enough that the segment table stays small.
const SEGS_PER_SHARD: usize = 128;
/// "No segment".
const NIL: u32 = u32::MAX;
/// A segment's `max_exp` when one of its items never expires.
const NEVER: u32 = u32::MAX;

const SMALL: usize = 0;
const MAIN: usize = 1;
const FREE: u8 = 2;
/// The small queue is evicted from while it holds at least
/// `limit / SMALL_SHARE` bytes (or main is empty).
pub const SMALL_SHARE: usize = 10;
/// TTL classes of write segments: none, up to 5 minutes, up to 2 hours,
/// longer. Few, because each active class holds a partly written segment.
const CLASSES: usize = 4;

/// The segment size for a shard of `limit` bytes.
fn seg_size_for(limit: usize) -> usize {
    let target = (limit / SEGS_PER_SHARD).clamp(MIN_SEG_SIZE, MAX_SEG_SIZE);
    // A power of two at most the target, so segments divide the budget.
    1 << target.ilog2()
}

fn ttl_class(exptime: u32, now: u64) -> usize {
    if exptime == 0 {
        return 0;
    }
    match u64::from(exptime).saturating_sub(now) {
        0..=300 => 1,
        301..=7200 => 2,
        _ => 3,
    }
}

fn freq(bits: u8) -> u8 {
    (bits & FREQ_MASK) >> FREQ_SHIFT
}

fn with_freq(bits: u8, f: u8) -> u8 {
    (bits & !FREQ_MASK) | (f.min(3) << FREQ_SHIFT)
}

/// `bits` with the read credit of `old` (a rewrite of a read item).
pub(super) fn carry_freq(bits: u8, old: u8) -> u8 {
    with_freq(bits, freq(old))
}

/// The most read credit an item holds (S3-FIFO's main-queue counter): an
/// item read often survives up to three evictions of its segment unread.
pub const MAX_CREDIT: u8 = 3;

/// `bits` after one more read.
pub(super) fn bumped(bits: u8) -> u8 {
    with_freq(bits, freq(bits).saturating_add(1).min(MAX_CREDIT))
}

fn loc(seg: u32, off: usize) -> u32 {
    (seg << OFF_BITS) | off as u32
}

fn seg_of(loc: u32) -> usize {
    (loc >> OFF_BITS) as usize
}

fn off_of(loc: u32) -> usize {
    (loc & ((1 << OFF_BITS) - 1)) as usize
}

/// An item to write: the key, a value in up to two parts (append and
/// prepend write the concatenation straight into the segment), its header.
pub(super) struct NewItem<'a> {
    pub key: &'a [u8],
    pub parts: [&'a [u8]; 2],
    pub header: Header,
    /// Store the CAS whole, not as a distance from the segment's base: for
    /// an item whose CAS then changes in place (`incr`, an invalidation).
    pub whole_cas: bool,
}

impl NewItem<'_> {
    fn value_len(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }

    /// Its bytes in a segment whose base is `base`.
    fn len(&self, base: Base) -> usize {
        self.header
            .item_len(self.key.len(), self.value_len(), base, self.whole_cas)
    }

    /// Write it into `b`, exactly [`Self::len`]`(base)` bytes.
    fn write(&self, b: &mut [u8], base: Base) {
        self.header
            .write_item(b, base, self.whole_cas, self.key, self.parts);
    }
}

/// Where the next item goes.
#[derive(Clone, Copy)]
enum Target {
    /// Appended to write segment `id`, grown to `cap` bytes first.
    Append { id: usize, cap: usize },
    /// At the start of a new segment of `size` bytes, whose base is
    /// `base`: a new write segment, or a dedicated one.
    New {
        size: usize,
        base: Base,
        dedicated: bool,
    },
}

/// Why items were taken out while making room or sweeping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Removed {
    /// Live items evicted to make room.
    pub evicted: u64,
    /// Items removed because their TTL had passed.
    pub expired: u64,
    /// Items removed because a flush_all had invalidated them.
    pub flushed: u64,
}

impl Removed {
    fn add(&mut self, o: Removed) {
        self.evicted += o.evicted;
        self.expired += o.expired;
        self.flushed += o.flushed;
    }
}

/// The flush_all state a shard needs to tell a flushed item from a live one.
///
/// memcached also keeps `settings.oldest_cas`, to tell the items stored in
/// the second of an immediate `flush_all` before it from those after it.
/// Here an immediate flush removes every item there is ([`Shard::purge`])
/// before it answers, so every item left was stored after it, and the CAS
/// (which orders a shard's items, not the store's) is not needed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Flush {
    /// memcached `settings.oldest_live`: 0 none.
    pub oldest_live: u64,
}

impl Flush {
    fn active(&self, now: u64) -> bool {
        self.oldest_live != 0 && self.oldest_live <= now
    }

    /// memcached's `item_is_flushed`.
    pub fn flushed(&self, h: &Header, now: u64) -> bool {
        if !self.active(now) {
            return false;
        }
        u64::from(h.time) <= self.oldest_live
    }
}

/// What eviction does with one item.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Flushed,
    Expired,
    Evicted,
    /// Kept, with this header (its credit adjusted).
    Keep(u8),
}

struct Seg {
    /// Empty when the id is free.
    data: Box<[u8]>,
    /// Bytes written.
    used: usize,
    /// Items in it still indexed.
    live: u32,
    /// Latest exptime of its items ([`NEVER`] if one never expires; 0 when
    /// none was written).
    max_exp: u32,
    /// Latest `time` of its items, for a delayed flush_all.
    max_time: u32,
    /// [`SMALL`], [`MAIN`] or [`FREE`].
    queue: u8,
    class: u8,
    dedicated: bool,
    /// The CAS counter and the clock when it became a write segment (or,
    /// dedicated, its item's CAS and access time): its items store theirs
    /// as distances from it when they fit.
    base: Base,
}

impl Seg {
    fn empty() -> Seg {
        Seg {
            data: Box::default(),
            used: 0,
            live: 0,
            max_exp: 0,
            max_time: 0,
            queue: FREE,
            class: 0,
            dedicated: false,
            base: Base { cas: 0, time: 0 },
        }
    }

    fn note(&mut self, h: &Header) {
        let exp = if h.exptime == 0 { NEVER } else { h.exptime };
        self.max_exp = self.max_exp.max(exp);
        self.max_time = self.max_time.max(h.time);
    }

    /// Every item in it is expired or flushed at `now`.
    fn all_dead(&self, now: u64, flush: &Flush) -> bool {
        let expired = self.max_exp != 0 && self.max_exp != NEVER && u64::from(self.max_exp) <= now;
        expired || (flush.active(now) && u64::from(self.max_time) <= flush.oldest_live)
    }
}

pub(super) struct Shard<S> {
    segs: Vec<Seg>,
    free_ids: Vec<u32>,
    /// FIFO order of the segments of each queue, oldest first.
    queues: [VecDeque<u32>; 2],
    /// Segment bytes held by each queue.
    queue_bytes: [usize; 2],
    /// The write segment of each queue and TTL class, or [`NIL`].
    active: [[u32; CLASSES]; 2],
    index: HashTable<u32>,
    items: usize,
    /// Charged bytes of the items (`bytes` in stats).
    bytes: usize,
    /// Bytes of all segments, written or not.
    seg_bytes: usize,
    limit: usize,
    seg_size: usize,
    /// The second of the last look for wholly expired segments.
    last_expiry_scan: u64,
    /// Survivors of the segment being evicted, on their way to main.
    scratch: Vec<u8>,
    /// The base of the next write segment: the last CAS handed out and the
    /// clock of the last insert.
    clock: Base,
    /// This shard's index: the low bits of its CAS uniques.
    idx: u64,
    /// CAS uniques handed out (the high bits of the last).
    seq: u64,
    hasher: S,
}

impl<S: BuildHasher> Shard<S> {
    /// Shard `idx` (below `1 << CAS_SHARD_BITS`) of a store, with `limit`
    /// bytes.
    pub fn new(limit: usize, hasher: S, idx: usize) -> Self {
        Shard {
            segs: Vec::new(),
            free_ids: Vec::new(),
            queues: [VecDeque::new(), VecDeque::new()],
            queue_bytes: [0, 0],
            active: [[NIL; CLASSES]; 2],
            index: HashTable::new(),
            items: 0,
            bytes: 0,
            seg_bytes: 0,
            limit,
            seg_size: seg_size_for(limit),
            last_expiry_scan: 0,
            scratch: Vec::new(),
            clock: Base { cas: 0, time: 0 },
            idx: idx as u64 & ((1 << CAS_SHARD_BITS) - 1),
            seq: 0,
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.items
    }

    /// A new CAS unique: this shard's next, with its index in the low bits,
    /// so that no two shards hand out the same one. A shard's (and so a
    /// key's) uniques increase; the store's do not across shards, which no
    /// command compares (meta `I` compares a key's own).
    pub fn next_cas(&mut self) -> u64 {
        self.seq += 1;
        self.last_cas()
    }

    /// The CAS of a new write: `version`, when it brings its own (memgate's
    /// versioned copy, `Command::Copy`), else the shard's next. A version
    /// moves the sequence up to it first, as a Lamport clock: every CAS
    /// handed out afterwards is greater, so that a key's uniques keep
    /// increasing here whichever node picked the version. The caller
    /// checked it against [`MAX_VERSION`].
    pub fn take_cas(&mut self, version: Option<u64>) -> u64 {
        match version {
            Some(version) => {
                self.seq = self.seq.max(version >> CAS_SHARD_BITS);
                version
            }
            None => self.next_cas(),
        }
    }

    fn last_cas(&self) -> u64 {
        ((self.seq << CAS_SHARD_BITS) | self.idx) & CAS_MASK
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Memory held against the budget: every segment, written or not, and
    /// the index's share per item.
    fn used(&self) -> usize {
        self.seg_bytes + self.items * INDEX_SLOT_CHARGE
    }

    /// The segment's bytes from the item at `l` on. What reads only a
    /// field or the key starts from, without first working out where the
    /// item ends (a lookup's every probe reads a key).
    fn from(&self, l: u32) -> &[u8] {
        &self.segs[seg_of(l)].data[off_of(l)..]
    }

    fn item(&self, l: u32) -> &[u8] {
        let b = self.from(l);
        &b[..item_len(b)]
    }

    pub fn key(&self, l: u32) -> &[u8] {
        header::key(self.from(l))
    }

    pub fn value(&self, l: u32) -> &[u8] {
        let b = self.from(l);
        let at = header::hdr_len(b) + header::key_len(b);
        &b[at..at + header::value_len(b)]
    }

    pub fn header(&self, l: u32) -> Header {
        Header::read(self.from(l), self.segs[seg_of(l)].base)
    }

    /// Rewrite an item's header in place (touch, bump, invalidation) if its
    /// fields have room for `h` ([`Header::rewrite`]); its segment's expiry
    /// bounds follow. False, with nothing changed, when they do not.
    pub fn set_header(&mut self, l: u32, h: Header) -> bool {
        let seg = &mut self.segs[seg_of(l)];
        let base = seg.base;
        if !h.rewrite(&mut seg.data[off_of(l)..], base) {
            return false;
        }
        seg.note(&h);
        true
    }

    /// Give the item at `l` (key hash `hash`) header `h` and, if `value` is
    /// given (as long as the old one: an in-place `incr`), that value: in
    /// place when its header has room for `h`, else as a fresh copy in the
    /// same queue (with its CAS whole, so that the next in-place change
    /// fits), which may evict others to make room. Returns the items that
    /// removed; the item itself is among the evicted if even its widest
    /// copy cannot fit (only after the budget was lowered under it).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        hash: u64,
        l: u32,
        h: Header,
        value: Option<&[u8]>,
        now: u64,
        flush: &Flush,
    ) -> Removed {
        if self.set_header(l, h) {
            if let Some(v) = value {
                let b = &mut self.segs[seg_of(l)].data[off_of(l)..];
                let at = header::hdr_len(b) + header::key_len(b);
                b[at..at + v.len()].copy_from_slice(v);
            }
            return Removed::default();
        }
        let key = self.key(l).to_vec();
        let value = value.map_or_else(|| self.value(l).to_vec(), <[u8]>::to_vec);
        let main = self.in_main(l);
        self.remove(l);
        let item = NewItem {
            key: &key,
            parts: [&value, &[]],
            header: h,
            whole_cas: true,
        };
        match self.insert(hash, &item, main, now, flush) {
            Some((_, removed)) => removed,
            None => Removed {
                evicted: 1,
                ..Removed::default()
            },
        }
    }

    /// The charge of the item at `l`.
    pub fn charge_of(&self, l: u32) -> usize {
        self.item(l).len() + INDEX_SLOT_CHARGE
    }

    /// Whether the item at `l` is in the main queue.
    pub fn in_main(&self, l: u32) -> bool {
        usize::from(self.segs[seg_of(l)].queue) == MAIN
    }

    /// The locator of `key`, whose hash is `hash`, if present (expired or not).
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index.find(hash, |&l| self.key(l) == key).copied()
    }

    /// Take the item at `l` out of the shard.
    pub fn remove(&mut self, l: u32) {
        let hash = self.hasher.hash_one(self.key(l));
        self.unlink(hash, l);
        self.free_if_empty(seg_of(l));
    }

    /// Unindex the item at `l` and mark it dead; its segment stays.
    fn unlink(&mut self, hash: u64, l: u32) {
        if let Ok(slot) = self.index.find_entry(hash, |&v| v == l) {
            slot.remove();
        }
        let charge = self.charge_of(l);
        let seg = &mut self.segs[seg_of(l)];
        seg.data[off_of(l) + O_BITS] |= DEAD;
        seg.live -= 1;
        self.items -= 1;
        self.bytes -= charge;
    }

    fn is_active(&self, id: usize) -> bool {
        let s = &self.segs[id];
        s.queue != FREE
            && !s.dedicated
            && self.active[usize::from(s.queue)][usize::from(s.class)] == id as u32
    }

    fn free_if_empty(&mut self, id: usize) {
        if self.segs[id].live == 0 && !self.is_active(id) {
            self.free_seg(id, true);
        }
    }

    /// Give a segment's memory back and take it off its queue. With
    /// `reuse_id` false the id stays out of the free list (the caller still
    /// has index entries that name it).
    fn free_seg(&mut self, id: usize, reuse_id: bool) {
        let s = &mut self.segs[id];
        let q = usize::from(s.queue);
        if q != usize::from(FREE) {
            if !s.dedicated && self.active[q][usize::from(s.class)] == id as u32 {
                self.active[q][usize::from(s.class)] = NIL;
            }
            if let Some(p) = self.queues[q].iter().position(|&x| x == id as u32) {
                self.queues[q].remove(p);
            }
            self.queue_bytes[q] -= s.data.len();
        }
        self.seg_bytes -= s.data.len();
        *s = Seg::empty();
        if reuse_id {
            self.free_ids.push(id as u32);
        }
    }

    fn alloc_seg(
        &mut self,
        size: usize,
        q: usize,
        class: usize,
        dedicated: bool,
        base: Base,
    ) -> Option<usize> {
        let id = match self.free_ids.pop() {
            Some(id) => id as usize,
            None if self.segs.len() < MAX_SEGS => {
                self.segs.push(Seg::empty());
                self.segs.len() - 1
            }
            None => return None,
        };
        self.segs[id] = Seg {
            data: vec![0u8; size].into_boxed_slice(),
            used: 0,
            live: 0,
            max_exp: 0,
            max_time: 0,
            queue: q as u8,
            class: class as u8,
            dedicated,
            base,
        };
        self.queues[q].push_back(id as u32);
        self.queue_bytes[q] += size;
        self.seg_bytes += size;
        Some(id)
    }

    fn dedicated(&self, len: usize) -> bool {
        len > self.seg_size / 4
    }

    /// Where `item` goes in queue `q`, class `class`, and its length there
    /// (which depends on the segment's CAS base): appended to the write
    /// segment if it fits (grown if need be), else at the start of a new
    /// write segment whose base is the CAS counter now, or of a dedicated
    /// segment whose base is its own CAS.
    fn target(&self, item: &NewItem<'_>, q: usize, class: usize) -> (Target, usize) {
        let a = self.active[q][class];
        if a != NIL {
            let s = &self.segs[a as usize];
            let len = item.len(s.base);
            if !self.dedicated(len) {
                if let Some(cap) = self.grown_cap(s, len) {
                    let id = a as usize;
                    return (Target::Append { id, cap }, len);
                }
            }
        }
        let base = self.clock;
        let len = item.len(base);
        if self.dedicated(len) {
            let base = Base {
                cas: item.header.cas,
                time: item.header.time,
            };
            let len = item.len(base);
            let t = Target::New {
                size: len,
                base,
                dedicated: true,
            };
            return (t, len);
        }
        let t = Target::New {
            size: self.first_cap(),
            base,
            dedicated: false,
        };
        (t, len)
    }

    /// New segment bytes that writing to `t` takes.
    fn growth(&self, t: Target) -> usize {
        match t {
            Target::Append { id, cap } => cap - self.segs[id].data.len(),
            Target::New { size, .. } => size,
        }
    }

    /// A new write segment's size: a quarter of a segment, doubled as it
    /// fills, so that a shard's partly written segments (one per queue and
    /// TTL class) hold less unwritten memory, and a cache with one small
    /// item does not hold a whole segment. Every non-dedicated item fits.
    fn first_cap(&self) -> usize {
        self.seg_size / 4
    }

    /// The size write segment `s` needs to take `len` more bytes: its own
    /// if they fit, doubled (up to a segment) if that makes them fit, None
    /// when it is full and must be sealed.
    fn grown_cap(&self, s: &Seg, len: usize) -> Option<usize> {
        let cap = s.data.len();
        let need = s.used + len;
        if need <= cap {
            return Some(cap);
        }
        if cap >= self.seg_size || need > self.seg_size {
            return None;
        }
        let mut new = cap.max(1);
        while new < need {
            new *= 2;
        }
        Some(new.min(self.seg_size))
    }

    /// Whether `item` fits in queue `q` without eviction.
    fn fits(&self, item: &NewItem<'_>, q: usize, class: usize) -> bool {
        let grow = self.growth(self.target(item, q, class).0);
        let ids = grow == 0 || !self.free_ids.is_empty() || self.segs.len() < MAX_SEGS;
        ids && self.used() + grow + INDEX_SLOT_CHARGE <= self.limit
    }

    /// Write `item` into queue `q`'s write segment for `class` (or a new or
    /// dedicated segment); the caller checked [`Self::fits`]. Returns the
    /// locator and the bytes it took.
    fn place(&mut self, item: &NewItem<'_>, q: usize, class: usize) -> Option<(u32, usize)> {
        let (t, len) = self.target(item, q, class);
        let id = match t {
            Target::Append { id, cap } => {
                let seg = &mut self.segs[id];
                let old = seg.data.len();
                if cap > old {
                    // Locators are offsets, so the bytes may move.
                    let mut v = std::mem::take(&mut seg.data).into_vec();
                    v.resize(cap, 0);
                    seg.data = v.into_boxed_slice();
                    self.seg_bytes += cap - old;
                    self.queue_bytes[q] += cap - old;
                }
                id
            }
            Target::New {
                size,
                base,
                dedicated: true,
            } => self.alloc_seg(size, q, class, true, base)?,
            Target::New {
                size,
                base,
                dedicated: false,
            } => {
                let a = self.active[q][class];
                if a != NIL {
                    // Sealed: it takes no more writes and goes once empty.
                    self.active[q][class] = NIL;
                    self.free_if_empty(a as usize);
                }
                let id = self.alloc_seg(size, q, class, false, base)?;
                self.active[q][class] = id as u32;
                id
            }
        };
        let seg = &mut self.segs[id];
        let off = seg.used;
        item.write(&mut seg.data[off..off + len], seg.base);
        seg.note(&item.header);
        seg.used = off + len;
        seg.live += 1;
        Some((loc(id as u32, off), len))
    }

    fn index_insert(&mut self, hash: u64, l: u32) {
        let (segs, hasher) = (&self.segs, &self.hasher);
        self.index.insert_unique(hash, l, |&v| {
            hasher.hash_one(header::key(&segs[seg_of(v)].data[off_of(v)..]))
        });
    }

    /// Insert `item`, whose key hashes to `hash` and is absent, into the
    /// main queue if `main`, else the small one, evicting to make room.
    /// `None` (touching nothing it did not have to evict) when it cannot
    /// fit.
    pub fn insert(
        &mut self,
        hash: u64,
        item: &NewItem<'_>,
        main: bool,
        now: u64,
        flush: &Flush,
    ) -> Option<(u32, Removed)> {
        // A write segment this starts is based on the last CAS and now.
        let clock = Base {
            cas: self.last_cas(),
            time: u32::try_from(now).unwrap_or(u32::MAX),
        };
        self.insert_based(hash, item, main, now, flush, clock)
    }

    /// [`Self::insert`], with `clock` the base of a write segment it starts.
    fn insert_based(
        &mut self,
        hash: u64,
        item: &NewItem<'_>,
        main: bool,
        now: u64,
        flush: &Flush,
        clock: Base,
    ) -> Option<(u32, Removed)> {
        self.clock = clock;
        let own = Base {
            cas: item.header.cas,
            time: item.header.time,
        };
        if item.len(own) + INDEX_SLOT_CHARGE > self.limit {
            return None;
        }
        let q = if main { MAIN } else { SMALL };
        let class = ttl_class(item.header.exptime, now);
        let mut removed = Removed::default();
        while !self.fits(item, q, class) {
            if !self.evict_one(now, flush, &mut removed) {
                return None;
            }
        }
        let (l, len) = self.place(item, q, class)?;
        self.index_insert(hash, l);
        self.items += 1;
        self.bytes += len + INDEX_SLOT_CHARGE;
        Some((l, removed))
    }

    /// Free one segment's worth: a wholly expired segment if there is one
    /// (looked for at most once a second), else S3-FIFO's victim. False when
    /// the shard holds no segment at all.
    fn evict_one(&mut self, now: u64, flush: &Flush, removed: &mut Removed) -> bool {
        if self.last_expiry_scan != now {
            self.last_expiry_scan = now;
            let dead = (0..self.segs.len())
                .find(|&i| self.segs[i].queue != FREE && self.segs[i].all_dead(now, flush));
            if let Some(id) = dead {
                removed.add(self.reclaim_seg(id, now, flush, usize::MAX));
                return true;
            }
        }
        let small = !self.queues[SMALL].is_empty()
            && (self.queue_bytes[SMALL] >= self.limit / SMALL_SHARE
                || self.queues[MAIN].is_empty());
        let q = if small { SMALL } else { MAIN };
        let Some(&id) = self.queues[q].front() else {
            return false;
        };
        removed.add(self.evict_seg(id as usize, q, now, flush));
        true
    }

    fn fate(&self, h: &Header, q: usize, now: u64, flush: &Flush) -> Fate {
        if flush.flushed(h, now) {
            Fate::Flushed
        } else if h.is_expired(now) {
            Fate::Expired
        } else if freq(h.bits) == 0 {
            Fate::Evicted
        } else if q == SMALL {
            // Promoted to main with a clean slate.
            Fate::Keep(with_freq(h.bits, 0))
        } else {
            Fate::Keep(with_freq(h.bits, freq(h.bits) - 1))
        }
    }

    fn count(removed: &mut Removed, f: Fate) {
        match f {
            Fate::Flushed => removed.flushed += 1,
            Fate::Expired => removed.expired += 1,
            Fate::Evicted => removed.evicted += 1,
            Fate::Keep(_) => {}
        }
    }

    /// Evict segment `id`, the head of queue `q`: its read items go to the
    /// tail of main, the rest are dropped.
    fn evict_seg(&mut self, id: usize, q: usize, now: u64, flush: &Flush) -> Removed {
        let mut removed = Removed::default();
        if self.segs[id].dedicated {
            let l = loc(id as u32, 0);
            let h = self.header(l);
            let fate = self.fate(&h, q, now, flush);
            if let Fate::Keep(bits) = fate {
                // One item: move the segment itself, no copy. The bits
                // always fit in place.
                let rewritten = self.set_header(l, Header { bits, ..h });
                debug_assert!(rewritten);
                let len = self.segs[id].data.len();
                self.queues[q].pop_front();
                self.queue_bytes[q] -= len;
                self.queues[MAIN].push_back(id as u32);
                self.queue_bytes[MAIN] += len;
                self.segs[id].queue = MAIN as u8;
            } else {
                Self::count(&mut removed, fate);
                self.remove(l);
            }
            return removed;
        }
        // Walk the segment: drop what goes, copy what stays to scratch.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut kept: Vec<(u32, usize, usize)> = Vec::new();
        let base = self.segs[id].base;
        let mut off = 0;
        while off < self.segs[id].used {
            let l = loc(id as u32, off);
            let b = &self.segs[id].data[off..];
            let len = item_len(b);
            if b[O_BITS] & DEAD == 0 {
                let h = Header::read(b, base);
                match self.fate(&h, q, now, flush) {
                    Fate::Keep(bits) => {
                        let at = scratch.len();
                        scratch.extend_from_slice(&b[..len]);
                        header::set_bits(&mut scratch[at..], bits);
                        kept.push((l, at, len));
                    }
                    f => {
                        Self::count(&mut removed, f);
                        let hash = self.hasher.hash_one(self.key(l));
                        self.unlink(hash, l);
                    }
                }
            }
            off += len;
        }
        // The id stays reserved until every survivor's index entry is
        // repointed, so that no new locator can equal an old one.
        self.free_seg(id, false);
        for (old, at, len) in kept {
            // Re-encoded, not copied: its CAS is kept, as a distance from
            // the new segment's base if it is above it, else whole.
            let b = &scratch[at..at + len];
            let key = header::key(b);
            let item = NewItem {
                key,
                parts: [&b[header::hdr_len(b) + key.len()..], &[]],
                header: Header::read(b, base),
                whole_cas: false,
            };
            let hash = self.hasher.hash_one(key);
            let class = ttl_class(item.header.exptime, now);
            let placed = if self.fits(&item, MAIN, class) {
                self.place(&item, MAIN, class)
            } else {
                None
            };
            match placed.and_then(|new| Some((new, self.index.find_mut(hash, |&v| v == old)?))) {
                Some(((new, new_len), slot)) => {
                    *slot = new;
                    self.bytes = self.bytes + new_len - len;
                }
                None => {
                    // No room left for it after all: it is evicted.
                    if let Ok(slot) = self.index.find_entry(hash, |&v| v == old) {
                        slot.remove();
                    }
                    self.items -= 1;
                    self.bytes -= len + INDEX_SLOT_CHARGE;
                    removed.evicted += 1;
                }
            }
        }
        self.free_ids.push(id as u32);
        self.scratch = scratch;
        removed
    }

    /// Remove up to `max` expired or flushed items of segment `id`, and the
    /// segment once it holds no live item.
    fn reclaim_seg(&mut self, id: usize, now: u64, flush: &Flush, max: usize) -> Removed {
        let mut removed = Removed::default();
        let mut off = 0;
        while off < self.segs[id].used && ((removed.expired + removed.flushed) as usize) < max {
            let l = loc(id as u32, off);
            let b = &self.segs[id].data[off..];
            let len = item_len(b);
            if b[O_BITS] & DEAD == 0 {
                let h = Header::read(b, self.segs[id].base);
                let f = if flush.flushed(&h, now) {
                    Fate::Flushed
                } else if h.is_expired(now) {
                    Fate::Expired
                } else {
                    Fate::Evicted
                };
                if f != Fate::Evicted {
                    Self::count(&mut removed, f);
                    let hash = self.hasher.hash_one(self.key(l));
                    self.unlink(hash, l);
                }
            }
            off += len;
        }
        if self.segs[id].queue != FREE {
            self.free_if_empty(id);
        }
        removed
    }

    /// Remove up to `max` expired or flushed items, from segments that hold
    /// nothing else. Looks at the segment table and those segments only.
    pub fn sweep(&mut self, now: u64, flush: &Flush, max: usize) -> Removed {
        let mut removed = Removed::default();
        for id in 0..self.segs.len() {
            let done = (removed.expired + removed.flushed) as usize;
            if done >= max {
                break;
            }
            if self.segs[id].queue != FREE && self.segs[id].all_dead(now, flush) {
                removed.add(self.reclaim_seg(id, now, flush, max - done));
            }
        }
        removed
    }

    /// Remove every item, counted as flushed (flush_all with no delay: each
    /// was stored before it), and give every segment back, write segments
    /// too: a flushed cache holds no memory.
    pub fn purge(&mut self) -> Removed {
        let mut removed = Removed::default();
        for id in 0..self.segs.len() {
            if self.segs[id].queue == FREE {
                continue;
            }
            let mut off = 0;
            while off < self.segs[id].used {
                let l = loc(id as u32, off);
                let b = &self.segs[id].data[off..];
                let len = item_len(b);
                if b[O_BITS] & DEAD == 0 {
                    removed.flushed += 1;
                    let hash = self.hasher.hash_one(self.key(l));
                    self.unlink(hash, l);
                }
                off += len;
            }
            self.free_seg(id, true);
        }
        removed
    }

    /// Change the budget. A lower one is met at once: the shard is rebuilt
    /// with segments sized to it, keeping what the eviction order would keep
    /// longest (the main queue, then the small one, newest first) as far as
    /// it fits.
    pub fn set_limit(&mut self, limit: usize, now: u64, flush: &Flush) -> Removed
    where
        S: Clone,
    {
        self.limit = limit;
        self.seg_size = seg_size_for(limit);
        let mut removed = Removed::default();
        if self.used() <= limit {
            return removed;
        }
        // Newest first: what to keep.
        // Main (read more than once) before small, newest first in each.
        let mut order: Vec<u32> = Vec::with_capacity(self.items);
        for q in [MAIN, SMALL] {
            for &id in self.queues[q].iter().rev() {
                let seg = &self.segs[id as usize];
                let mut offs = Vec::new();
                let mut off = 0;
                while off < seg.used {
                    let b = &seg.data[off..];
                    if b[O_BITS] & DEAD == 0 {
                        offs.push(off);
                    }
                    off += item_len(b);
                }
                order.extend(offs.into_iter().rev().map(|o| loc(id, o)));
            }
        }
        let mut fresh = Shard::new(limit, self.hasher.clone(), self.idx as usize);
        fresh.seq = self.seq;
        let mut budget = limit;
        let mut keep = Vec::new();
        for &l in &order {
            let h = self.header(l);
            let f = if flush.flushed(&h, now) {
                Fate::Flushed
            } else if h.is_expired(now) {
                Fate::Expired
            } else {
                let c = self.charge_of(l);
                if c <= budget {
                    budget -= c;
                    keep.push(l);
                    continue;
                }
                Fate::Evicted
            };
            Self::count(&mut removed, f);
        }
        // Oldest first into the new shard, so that FIFO order is kept.
        for &l in keep.iter().rev() {
            let item = NewItem {
                key: self.key(l),
                parts: [self.value(l), &[]],
                header: self.header(l),
                whole_cas: false,
            };
            let hash = self.hasher.hash_one(item.key);
            // A segment this starts takes the first item's CAS as its base:
            // the items are old, so the last CAS would be above them all.
            let clock = Base {
                cas: item.header.cas,
                time: u32::try_from(now).unwrap_or(u32::MAX),
            };
            match fresh.insert_based(hash, &item, self.in_main(l), now, flush, clock) {
                Some((_, r)) => removed.add(r),
                None => removed.evicted += 1,
            }
        }
        // New items go to new write segments, based on the last CAS.
        for q in [SMALL, MAIN] {
            for class in 0..CLASSES {
                let a = fresh.active[q][class];
                if a != NIL {
                    fresh.active[q][class] = NIL;
                    fresh.free_if_empty(a as usize);
                }
            }
        }
        *self = fresh;
        removed
    }

    /// Check the invariants (tests and fuzzing): counts, bytes, index.
    #[cfg(test)]
    pub fn check(&self) {
        let mut items = 0;
        let mut bytes = 0;
        let mut seg_bytes = 0;
        for (id, s) in self.segs.iter().enumerate() {
            if s.queue == FREE {
                assert!(s.data.is_empty());
                continue;
            }
            seg_bytes += s.data.len();
            let mut live = 0;
            let mut off = 0;
            while off < s.used {
                let l = loc(id as u32, off);
                let b = &s.data[off..];
                if b[O_BITS] & DEAD == 0 {
                    live += 1;
                    let key = self.key(l);
                    assert_eq!(self.find(self.hasher.hash_one(key), key), Some(l));
                    bytes += self.charge_of(l);
                }
                off += item_len(b);
            }
            assert_eq!(live, s.live, "segment {id}");
            assert!(live > 0 || self.is_active(id), "empty segment {id} kept");
            items += live as usize;
            assert!(self.queues[usize::from(s.queue)].contains(&(id as u32)));
        }
        assert_eq!(items, self.items);
        assert_eq!(items, self.index.len());
        assert_eq!(bytes, self.bytes);
        assert_eq!(seg_bytes, self.seg_bytes);
        assert!(self.used() <= self.limit || self.items == 0, "over budget");
    }

    /// Visit the live items (not dead, expired or flushed at `now`), newest
    /// first within each queue (as memcached walks an LRU from its head),
    /// main queue first: key, value length and exptime. Stops, returning
    /// false, when `visit` does.
    pub fn for_each_live(
        &self,
        now: u64,
        flush: &Flush,
        mut visit: impl FnMut(&[u8], usize, u32) -> bool,
    ) -> bool {
        let mut live = Vec::new();
        for q in [MAIN, SMALL] {
            for &id in self.queues[q].iter().rev() {
                // Items are found front to back; they are visited back to front.
                let s = &self.segs[id as usize];
                live.clear();
                let mut off = 0;
                while off < s.used {
                    let b = &s.data[off..];
                    if b[O_BITS] & DEAD == 0 {
                        live.push(loc(id, off));
                    }
                    off += item_len(b);
                }
                for &l in live.iter().rev() {
                    let h = self.header(l);
                    if h.is_expired(now) || flush.flushed(&h, now) {
                        continue;
                    }
                    if !visit(self.key(l), self.value(l).len(), h.exptime) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Keys in the order the shard would evict them, oldest segment of each
    /// queue first (tests).
    #[cfg(test)]
    pub fn fifo_keys(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for q in [SMALL, MAIN] {
            for &id in &self.queues[q] {
                let s = &self.segs[id as usize];
                let mut off = 0;
                while off < s.used {
                    let b = &s.data[off..];
                    if b[O_BITS] & DEAD == 0 {
                        out.push(self.key(loc(id, off)).to_vec());
                    }
                    off += item_len(b);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    #[test]
    fn segments_are_sized_to_the_shard() {
        assert_eq!(seg_size_for(4 << 20), 32 << 10);
        assert_eq!(seg_size_for(1000), 64);
        assert_eq!(seg_size_for(1 << 40), 1 << 20);
    }

    #[test]
    fn an_empty_shard_is_a_few_hundred_bytes() {
        // 10,000 caches of 16 shards each must fit a node (issue 22).
        let size = std::mem::size_of::<Shard<foldhash::fast::RandomState>>();
        assert!(size <= 320, "{size}");
        let s = Shard::new(64 << 20, RandomState::new(), 0);
        assert_eq!(
            (s.segs.capacity(), s.index.capacity(), s.scratch.capacity()),
            (0, 0, 0)
        );
    }

    /// Store `key` as the store would: with the counter's next CAS.
    fn put(s: &mut Shard<RandomState>, key: &str, val: &[u8]) -> Removed {
        let h = s.hasher.hash_one(key.as_bytes());
        let cas = s.next_cas();
        let item = NewItem {
            key: key.as_bytes(),
            parts: [val, &[]],
            header: Header {
                bits: 0,
                flags: 0,
                exptime: 0,
                time: 0,
                cas,
            },
            whole_cas: false,
        };
        s.insert(h, &item, false, 0, &Flush::default())
            .expect("fits")
            .1
    }

    fn header_of(s: &Shard<RandomState>, key: &str) -> Option<Header> {
        let h = s.hasher.hash_one(key.as_bytes());
        s.find(h, key.as_bytes()).map(|l| s.header(l))
    }

    fn read(s: &mut Shard<RandomState>, key: &str) {
        let h = s.hasher.hash_one(key.as_bytes());
        if let Some(l) = s.find(h, key.as_bytes()) {
            let hd = s.header(l);
            let bits = bumped(hd.bits);
            assert!(s.set_header(l, Header { bits, ..hd }), "bits fit");
        }
    }

    #[test]
    fn a_common_item_costs_its_bytes_plus_14() {
        // 6 bytes of compact header (bits, key length, value length, a
        // 2-byte access time and a one-byte CAS distance) and 8 of index.
        assert_eq!(charge(32, 100), 32 + 100 + 14);
        assert_eq!(charge(32, 1000), 32 + 1000 + 15);
        assert_eq!(max_charge(32, 100), 32 + 100 + 33);
        assert_eq!(charge_range(32, 100, 1, 1), (32 + 100 + 23, 32 + 100 + 31));
        assert_eq!(charge_range(32, 100, 0, 0), (32 + 100 + 14, 32 + 100 + 27));
        let mut s = Shard::new(64 << 20, RandomState::new(), 0);
        put(&mut s, "k", &[b'v'; 100]);
        assert_eq!(s.bytes(), charge(1, 100));
    }

    #[test]
    fn merge_moves_keep_the_cas() {
        let mut s = Shard::new(64 << 10, RandomState::new(), 0);
        put(&mut s, "hot", &[b'v'; 20]);
        let before = header_of(&s, "hot").expect("stored");
        read(&mut s, "hot");
        // Enough writes that "hot"'s segment is evicted, several times:
        // each time it is copied to main's write segment, whose base is
        // above its CAS.
        for i in 0..6000 {
            put(&mut s, &format!("k{i}"), &[b'v'; 20]);
            if i % 500 == 0 {
                read(&mut s, "hot");
            }
            s.check();
        }
        let after = header_of(&s, "hot").expect("kept: it was read");
        assert_eq!(after.cas, before.cas);
        assert!(s.last_cas() > before.cas + (5000 << CAS_SHARD_BITS));
    }

    #[test]
    fn update_rewrites_in_place_or_copies() {
        let mut s = Shard::new(64 << 20, RandomState::new(), 0);
        put(&mut s, "a", b"123");
        let hash = s.hasher.hash_one(b"a");
        let l = s.find(hash, b"a").expect("stored");
        let h = s.header(l);
        let bytes = s.bytes();
        // A new CAS within the field's reach: in place.
        let h2 = Header {
            cas: s.next_cas(),
            ..h
        };
        s.update(hash, l, h2, Some(b"124"), 0, &Flush::default());
        assert_eq!(s.find(hash, b"a"), Some(l), "same place");
        assert_eq!((s.header(l), s.value(l)), (h2, &b"124"[..]));
        assert_eq!(s.bytes(), bytes);
        // A TTL it has no field for: a fresh copy, with the CAS whole.
        let h3 = Header { exptime: 99, ..h2 };
        s.update(hash, l, h3, None, 0, &Flush::default());
        let l3 = s.find(hash, b"a").expect("copied");
        assert_ne!(l3, l);
        assert_eq!((s.header(l3), s.value(l3)), (h3, &b"124"[..]));
        assert_eq!(
            s.bytes(),
            bytes + 1 + 4 + 6,
            "a shape byte, a TTL field, a whole CAS"
        );
        s.check();
        // Now any CAS fits in place.
        let h4 = Header { cas: 1 << 40, ..h3 };
        s.update(hash, l3, h4, None, 0, &Flush::default());
        assert_eq!(s.find(hash, b"a"), Some(l3));
        assert_eq!(s.header(l3), h4);
        s.check();
    }

    fn has(s: &Shard<RandomState>, key: &str) -> bool {
        let h = s.hasher.hash_one(key.as_bytes());
        s.find(h, key.as_bytes()).is_some()
    }

    #[test]
    fn removal_and_eviction_keep_index_and_segments_consistent() {
        let mut s = Shard::new(64 << 10, RandomState::new(), 0);
        for i in 0..2000 {
            put(&mut s, &format!("k{i}"), &[b'v'; 20]);
            s.check();
        }
        assert!(s.len() < 2000, "evicted");
        assert!(has(&s, "k1999"));
        // Read the newest half: it survives the next round into main.
        for i in 1000..2000 {
            let k = format!("k{i}");
            let h = s.hasher.hash_one(k.as_bytes());
            if let Some(l) = s.find(h, k.as_bytes()) {
                let hd = s.header(l);
                let bits = bumped(hd.bits);
                assert!(s.set_header(l, Header { bits, ..hd }));
            }
        }
        let n = 2000;
        for i in 0..n {
            put(&mut s, &format!("x{i}"), &[b'v'; 20]);
        }
        s.check();
        assert!(has(&s, "k1999"), "read items survive");
        assert!(!has(&s, "k0"), "unread ones go first");
        assert!(!has(&s, "x0"), "one-hit items leave from small");
        let keys: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
        for k in &keys {
            let h = s.hasher.hash_one(k.as_bytes());
            if let Some(l) = s.find(h, k.as_bytes()) {
                s.remove(l);
            }
        }
        s.check();
        while let Some(k) = s.fifo_keys().pop() {
            let h = s.hasher.hash_one(&k[..]);
            let l = s.find(h, &k).expect("indexed");
            s.remove(l);
        }
        s.check();
        // Only the write segments are left, empty, for the next writes.
        assert_eq!((s.len(), s.bytes()), (0, 0));
        assert!(s.seg_bytes <= 2 * s.seg_size, "{}", s.seg_bytes);
        assert!(s.seg_bytes > 0);
        s.purge();
        assert_eq!(s.seg_bytes, 0, "a flush gives them back");
    }
}
