//! One shard of a [`Store`](super::Store): log-structured segments, a
//! compact hash index over them, S3-FIFO-style eviction by segment, and byte
//! accounting against the shard's share of the cache's limit.
//! `docs/STORE.md` has the layout byte by byte.
//!
//! - **Items** live packed in segments: a 24-byte header, the key, the
//!   value, no padding and no per-item allocation (see [`HDR`]).
//! - **Segments** are `seg_size` bytes, sized to the shard (1/64 of its
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

/// Header bytes before the key: bits (1), key length (1), value length (3,
/// little-endian), client flags (4), exptime (4), last access (4), CAS (7).
pub const HDR: usize = 24;
const O_BITS: usize = 0;
const O_KLEN: usize = 1;
const O_VLEN: usize = 2;
const O_FLAGS: usize = 5;
const O_EXP: usize = 9;
const O_TIME: usize = 13;
const O_CAS: usize = 17;

/// Largest value the 3-byte length holds.
pub const MAX_VALUE_LEN: usize = (1 << 24) - 1;
/// CAS uniques are 56 bits: 7 bytes in the header (2^56 stores is over
/// 2,000 years at a million a second).
pub const CAS_MASK: u64 = (1 << 56) - 1;

/// Item bit: fetched at least once (memcached `ITEM_FETCHED`).
pub(super) const FETCHED: u8 = 1;
/// Item bit: marked stale by a meta invalidation (`ITEM_STALE`).
pub(super) const STALE: u8 = 2;
/// Item bit: a recache win was handed out (`ITEM_TOKEN_SENT`).
pub(super) const TOKEN_SENT: u8 = 4;
/// The eviction credit: reads since the item last moved, saturating at 3.
const FREQ_SHIFT: u8 = 3;
const FREQ_MASK: u8 = 3 << FREQ_SHIFT;
/// Item bit: unlinked; its bytes stay until the segment goes.
const DEAD: u8 = 0x80;

/// Bytes charged per index entry: a `u32` plus one control byte, divided by
/// hashbrown's load factor, which is between 7/16 (just grown) and 7/8
/// (about to grow): 5 / 0.66 on average, rounded up.
pub const INDEX_SLOT_CHARGE: usize = 8;

/// Per-item bytes charged on top of key and value: the header and the index.
pub const PER_ITEM_OVERHEAD: usize = HDR + INDEX_SLOT_CHARGE;

/// The bytes an item with this key and value length is charged: its bytes
/// in a segment plus its share of the index.
pub fn charge(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + PER_ITEM_OVERHEAD
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
const SEGS_PER_SHARD: usize = 64;
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

fn rd_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn wr_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Total bytes of the item whose header starts `b`.
fn item_len(b: &[u8]) -> usize {
    let vlen =
        usize::from(b[O_VLEN]) | usize::from(b[O_VLEN + 1]) << 8 | usize::from(b[O_VLEN + 2]) << 16;
    HDR + usize::from(b[O_KLEN]) + vlen
}

/// An item's metadata, decoded from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// [`FETCHED`], [`STALE`], [`TOKEN_SENT`] and the eviction credit.
    pub bits: u8,
    pub flags: u32,
    /// Absolute unix seconds; 0 never expires.
    pub exptime: u32,
    /// Unix seconds of the last store or bumping access (memcached `it->time`).
    pub time: u32,
    pub cas: u64,
}

impl Header {
    fn read(b: &[u8]) -> Header {
        let mut cas = [0u8; 8];
        cas[..7].copy_from_slice(&b[O_CAS..O_CAS + 7]);
        Header {
            bits: b[O_BITS],
            flags: rd_u32(b, O_FLAGS),
            exptime: rd_u32(b, O_EXP),
            time: rd_u32(b, O_TIME),
            cas: u64::from_le_bytes(cas),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[O_BITS] = self.bits & !DEAD;
        wr_u32(b, O_FLAGS, self.flags);
        wr_u32(b, O_EXP, self.exptime);
        wr_u32(b, O_TIME, self.time);
        b[O_CAS..O_CAS + 7].copy_from_slice(&(self.cas & CAS_MASK).to_le_bytes()[..7]);
    }

    /// Expired by TTL at `now` (memcached: `exptime != 0 && exptime <= now`).
    pub fn is_expired(&self, now: u64) -> bool {
        self.exptime != 0 && u64::from(self.exptime) <= now
    }
}

/// An item to write: the key, a value in up to two parts (append and
/// prepend write the concatenation straight into the segment), its header.
pub(super) struct NewItem<'a> {
    pub key: &'a [u8],
    pub parts: [&'a [u8]; 2],
    pub header: Header,
}

impl NewItem<'_> {
    fn value_len(&self) -> usize {
        self.parts[0].len() + self.parts[1].len()
    }

    fn len(&self) -> usize {
        HDR + self.key.len() + self.value_len()
    }

    /// The caller checked `key.len() <= 255` and the value against
    /// [`MAX_VALUE_LEN`].
    fn write(&self, b: &mut [u8]) {
        self.header.write(b);
        b[O_KLEN] = u8::try_from(self.key.len()).unwrap_or(u8::MAX);
        let vlen = self.value_len().to_le_bytes();
        b[O_VLEN..O_VLEN + 3].copy_from_slice(&vlen[..3]);
        let mut at = HDR;
        for p in [self.key, self.parts[0], self.parts[1]] {
            b[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
    }
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
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Flush {
    /// memcached `settings.oldest_live`: 0 none.
    pub oldest_live: u64,
    /// memcached `settings.oldest_cas`: 0 none.
    pub oldest_cas: u64,
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
            || (self.oldest_cas != 0 && h.cas != 0 && h.cas < self.oldest_cas)
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
    hasher: S,
}

impl<S: BuildHasher> Shard<S> {
    pub fn new(limit: usize, hasher: S) -> Self {
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
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.items
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

    fn item(&self, l: u32) -> &[u8] {
        let b = &self.segs[seg_of(l)].data[off_of(l)..];
        &b[..item_len(b)]
    }

    pub fn key(&self, l: u32) -> &[u8] {
        let b = self.item(l);
        &b[HDR..HDR + usize::from(b[O_KLEN])]
    }

    pub fn value(&self, l: u32) -> &[u8] {
        let b = self.item(l);
        &b[HDR + usize::from(b[O_KLEN])..]
    }

    /// Overwrite the value in place (incr/decr that fits the old length).
    pub fn value_mut(&mut self, l: u32) -> &mut [u8] {
        let off = off_of(l);
        let b = &mut self.segs[seg_of(l)].data[off..];
        let len = item_len(b);
        let k = usize::from(b[O_KLEN]);
        &mut b[HDR + k..len]
    }

    pub fn header(&self, l: u32) -> Header {
        Header::read(self.item(l))
    }

    /// Rewrite an item's header in place (touch, bump, CAS of an in-place
    /// incr, invalidation); its segment's expiry bounds follow.
    pub fn set_header(&mut self, l: u32, h: Header) {
        let seg = &mut self.segs[seg_of(l)];
        seg.note(&h);
        h.write(&mut seg.data[off_of(l)..]);
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

    fn alloc_seg(&mut self, size: usize, q: usize, class: usize, dedicated: bool) -> Option<usize> {
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
        };
        self.queues[q].push_back(id as u32);
        self.queue_bytes[q] += size;
        self.seg_bytes += size;
        Some(id)
    }

    fn dedicated(&self, len: usize) -> bool {
        len > self.seg_size / 4
    }

    /// New segment bytes that writing an item of `len` bytes to queue `q`,
    /// class `class` takes.
    fn growth(&self, len: usize, q: usize, class: usize) -> usize {
        if self.dedicated(len) {
            return len;
        }
        match self.active[q][class] {
            NIL => self.first_cap(),
            a => {
                let s = &self.segs[a as usize];
                match self.grown_cap(s, len) {
                    Some(cap) => cap - s.data.len(),
                    None => self.first_cap(),
                }
            }
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

    /// Whether an item of `len` bytes fits in queue `q` without eviction.
    fn fits(&self, len: usize, q: usize, class: usize) -> bool {
        let grow = self.growth(len, q, class);
        let ids = grow == 0 || !self.free_ids.is_empty() || self.segs.len() < MAX_SEGS;
        ids && self.used() + grow + INDEX_SLOT_CHARGE <= self.limit
    }

    /// Write `len` bytes with `write` into queue `q`'s write segment for
    /// `class` (or a new or dedicated segment); the caller checked
    /// [`Self::fits`]. Returns the locator.
    fn place(
        &mut self,
        len: usize,
        q: usize,
        class: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Option<u32> {
        let (id, off) = if self.dedicated(len) {
            (self.alloc_seg(len, q, class, true)?, 0)
        } else {
            let a = self.active[q][class];
            let grown = match a {
                NIL => None,
                a => self.grown_cap(&self.segs[a as usize], len),
            };
            let id = if let Some(cap) = grown {
                let seg = &mut self.segs[a as usize];
                let old = seg.data.len();
                if cap > old {
                    // Locators are offsets, so the bytes may move.
                    let mut v = std::mem::take(&mut seg.data).into_vec();
                    v.resize(cap, 0);
                    seg.data = v.into_boxed_slice();
                    self.seg_bytes += cap - old;
                    self.queue_bytes[q] += cap - old;
                }
                a as usize
            } else {
                if a != NIL {
                    // Sealed: it takes no more writes and goes once empty.
                    self.active[q][class] = NIL;
                    self.free_if_empty(a as usize);
                }
                let id = self.alloc_seg(self.first_cap(), q, class, false)?;
                self.active[q][class] = id as u32;
                id
            };
            (id, self.segs[id].used)
        };
        let seg = &mut self.segs[id];
        write(&mut seg.data[off..off + len]);
        let h = Header::read(&seg.data[off..]);
        seg.note(&h);
        seg.used = off + len;
        seg.live += 1;
        Some(loc(id as u32, off))
    }

    fn index_insert(&mut self, hash: u64, l: u32) {
        let (segs, hasher) = (&self.segs, &self.hasher);
        self.index.insert_unique(hash, l, |&v| {
            let b = &segs[seg_of(v)].data[off_of(v)..];
            hasher.hash_one(&b[HDR..HDR + usize::from(b[O_KLEN])])
        });
    }

    /// Insert `item`, whose key hashes to `hash` and is absent, into the
    /// main queue if `main`, else the small one, evicting to make room.
    /// `None` (touching nothing it did not have to evict) when it cannot fit.
    pub fn insert(
        &mut self,
        hash: u64,
        item: &NewItem<'_>,
        main: bool,
        now: u64,
        flush: &Flush,
    ) -> Option<(u32, Removed)> {
        let len = item.len();
        if len + INDEX_SLOT_CHARGE > self.limit {
            return None;
        }
        let q = if main { MAIN } else { SMALL };
        let class = ttl_class(item.header.exptime, now);
        let mut removed = Removed::default();
        while !self.fits(len, q, class) {
            if !self.evict_one(now, flush, &mut removed) {
                return None;
            }
        }
        let l = self.place(len, q, class, |b| item.write(b))?;
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
                // One item: move the segment itself, no copy.
                self.set_header(l, Header { bits, ..h });
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
        let mut off = 0;
        while off < self.segs[id].used {
            let l = loc(id as u32, off);
            let b = &self.segs[id].data[off..];
            let len = item_len(b);
            if b[O_BITS] & DEAD == 0 {
                let h = Header::read(b);
                match self.fate(&h, q, now, flush) {
                    Fate::Keep(bits) => {
                        let at = scratch.len();
                        scratch.extend_from_slice(&b[..len]);
                        scratch[at + O_BITS] = bits;
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
            let b = &scratch[at..at + len];
            let h = Header::read(b);
            let key = &b[HDR..HDR + usize::from(b[O_KLEN])];
            let hash = self.hasher.hash_one(key);
            let class = ttl_class(h.exptime, now);
            let placed = if self.fits(len, MAIN, class) {
                self.place(len, MAIN, class, |d| d.copy_from_slice(b))
            } else {
                None
            };
            match placed.and_then(|new| Some((new, self.index.find_mut(hash, |&v| v == old)?))) {
                Some((new, slot)) => *slot = new,
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
                let h = Header::read(b);
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

    /// Remove every flushed or expired item (flush_all with no delay).
    pub fn purge(&mut self, now: u64, flush: &Flush) -> Removed {
        let mut removed = Removed::default();
        for id in 0..self.segs.len() {
            if self.segs[id].queue != FREE {
                removed.add(self.reclaim_seg(id, now, flush, usize::MAX));
            }
            // Write segments left empty go too: a flushed cache holds
            // (almost) no memory.
            if self.segs[id].queue != FREE && self.segs[id].live == 0 {
                self.free_seg(id, true);
            }
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
        let mut fresh = Shard::new(limit, self.hasher.clone());
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
            let b = self.item(l);
            let key = &b[HDR..HDR + usize::from(b[O_KLEN])];
            let item = NewItem {
                key,
                parts: [&b[HDR + key.len()..], &[]],
                header: Header::read(b),
            };
            let hash = self.hasher.hash_one(key);
            match fresh.insert(hash, &item, self.in_main(l), now, flush) {
                Some((_, r)) => removed.add(r),
                None => removed.evicted += 1,
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
    fn an_item_costs_its_bytes_plus_32() {
        assert_eq!(PER_ITEM_OVERHEAD, 32);
        assert_eq!(charge(32, 100), 164);
        assert_eq!(seg_size_for(4 << 20), 64 << 10);
        assert_eq!(seg_size_for(1000), 64);
        assert_eq!(seg_size_for(1 << 40), 1 << 20);
    }

    #[test]
    fn an_empty_shard_is_a_few_hundred_bytes() {
        // 10,000 caches of 16 shards each must fit a node (issue 22).
        let size = std::mem::size_of::<Shard<foldhash::fast::RandomState>>();
        assert!(size <= 320, "{size}");
        let s = Shard::new(64 << 20, RandomState::new());
        assert_eq!(
            (s.segs.capacity(), s.index.capacity(), s.scratch.capacity()),
            (0, 0, 0)
        );
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            bits: FETCHED | STALE,
            flags: 0xdead_beef,
            exptime: 1_700_000_000,
            time: 1_699_999_999,
            cas: CAS_MASK,
        };
        let mut b = [0u8; HDR];
        h.write(&mut b);
        assert_eq!(Header::read(&b), h);
    }

    fn put(s: &mut Shard<RandomState>, key: &str, val: &[u8]) -> Removed {
        let h = s.hasher.hash_one(key.as_bytes());
        let item = NewItem {
            key: key.as_bytes(),
            parts: [val, &[]],
            header: Header {
                bits: 0,
                flags: 0,
                exptime: 0,
                time: 0,
                cas: 1,
            },
        };
        s.insert(h, &item, false, 0, &Flush::default())
            .expect("fits")
            .1
    }

    fn has(s: &Shard<RandomState>, key: &str) -> bool {
        let h = s.hasher.hash_one(key.as_bytes());
        s.find(h, key.as_bytes()).is_some()
    }

    #[test]
    fn removal_and_eviction_keep_index_and_segments_consistent() {
        let mut s = Shard::new(64 << 10, RandomState::new());
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
                s.set_header(
                    l,
                    Header {
                        bits: bumped(hd.bits),
                        ..hd
                    },
                );
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
        s.purge(0, &Flush::default());
        assert_eq!(s.seg_bytes, 0, "a flush gives them back");
    }
}
