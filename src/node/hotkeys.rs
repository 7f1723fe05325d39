//! Hot keys: which keys take a cache's traffic now, by operations and by
//! bytes, for the admin API (`GET /admin/caches/{id}/hotkeys`) and the
//! owner's analytics.
//!
//! - **On demand.** A cache's tracker starts at the first question about
//!   its hot keys and stops [`IDLE_SECS`] after the last one. Until then a
//!   request pays one relaxed atomic load and the cache holds a few dozen
//!   bytes, so 10,000 caches that nobody watches cost nothing to speak of.
//!   A tracked cache holds four sketches of at most [`CAPACITY`] counters
//!   (about 70 bytes each plus the key).
//! - **Sketch.** Space-Saving ([`space_saving`]), one by operations (each
//!   key of a command is one) and one by bytes (the key plus the value
//!   written or read: a `set`'s data, a `get` hit's value).
//! - **Window.** Buckets of [`WINDOW_SECS`] seconds, aligned on unix time:
//!   the current one fills while the previous, complete one is kept, and a
//!   view adds the two. A view thus covers the last 5 to 10 s up to the
//!   moment it is asked, and a key that turns hot shows in the next view.
//!   A key's estimate is `count - error` of each bucket: exact for a key
//!   that stayed in the sketch since the bucket began, and missing only what
//!   came before it entered otherwise (a key that turns hot mid-bucket is
//!   not charged the count of the key it displaced). `error` is reported too.
//! - **Sampling.** Each key of a command is sampled with probability
//!   `2^-shift`, by a thread-local xorshift draw (no shared cache line),
//!   and counted with weight `2^shift` (ops) or `bytes × 2^shift`: an
//!   unbiased estimate whatever the rate was when the key was drawn. Once
//!   a second the shift is set from the last second's estimated rate so
//!   that about [`SAMPLES_PER_SEC`] keys a second are sampled: every key at
//!   under 32k ops/s, one in four at 100k. A key with 0.5% of 100k ops/s
//!   is then sampled about 625 times in 5 s: 4% relative error (one
//!   standard deviation). `benches/HOTKEYS.md` measures the goals.
//! - **Keys are the tenant's data**: never logged, never a metric label;
//!   the Debug output of every type here hides them. The admin API shows
//!   them hashed unless asked for the owner's view.

mod space_saving;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use self::space_saving::SpaceSaving;
use crate::protocol::request::Command;
use crate::sync::lock;

/// Seconds per bucket; a view covers one to two of them.
pub const WINDOW_SECS: u64 = 5;
/// Counters per sketch: a key with more than 1/CAPACITY of a bucket's
/// weight is always listed, and one with 0.5% stays counted from its first
/// sample on (its count grows faster than the smallest counter).
pub const CAPACITY: usize = 512;
/// Sampled keys a second the sampling rate aims at, at most.
pub const SAMPLES_PER_SEC: u64 = 32_768;
/// A tracker nobody asked about for this long stops and frees its memory.
pub const IDLE_SECS: u64 = 600;
/// The largest shift: one key in 2^16 at over 2 G ops/s.
const MAX_SHIFT: u8 = 16;

/// `state`'s value while the tracker is off.
const OFF: u8 = u8::MAX;

/// One cache's hot-key tracker. `Send + Sync`; every method takes `&self`.
pub struct HotKeys {
    /// [`OFF`], or the sampling shift the request path uses.
    state: AtomicU8,
    tracking: Mutex<Option<Box<Tracking>>>,
}

impl Default for HotKeys {
    fn default() -> HotKeys {
        HotKeys {
            state: AtomicU8::new(OFF),
            tracking: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for HotKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotKeys")
            .field("tracking", &self.is_tracking())
            .finish_non_exhaustive()
    }
}

/// One key in a [`View`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKey {
    pub key: Vec<u8>,
    /// The estimated operations (or bytes) in the view's window.
    pub count: u64,
    /// How much more than `count` the key may have had, beyond sampling
    /// noise: Space-Saving's bound.
    pub error: u64,
}

/// What the tracker saw, up to the moment it was asked.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// Unix seconds when this tracker started.
    pub since: u64,
    /// Unix milliseconds: the window covers `start_ms..end_ms`.
    pub start_ms: u64,
    pub end_ms: u64,
    /// The probability a key is sampled now.
    pub sample_rate: f64,
    /// Estimated operations and bytes in the window, all keys.
    pub ops: u64,
    pub bytes: u64,
    /// The heaviest keys, heaviest first.
    pub by_ops: Vec<HotKey>,
    pub by_bytes: Vec<HotKey>,
}

impl HotKeys {
    pub fn is_tracking(&self) -> bool {
        self.state.load(Ordering::Relaxed) != OFF
    }

    /// Count the key of a write (set, delete, incr, touch...) at `now`
    /// (unix seconds); a get's keys are counted one by one as the store
    /// answers them ([`Self::record_read`]). Off, this is one relaxed load.
    #[inline]
    pub fn record(&self, command: &Command, now: u64) {
        let shift = self.state.load(Ordering::Relaxed);
        if shift == OFF {
            return;
        }
        self.record_keys(command, shift, now);
    }

    /// One key of a retrieval, as the store answers it (`Store::get_each`),
    /// with its hit's value length (0 for a miss). Off, this is one relaxed
    /// load.
    #[inline]
    pub fn record_read(&self, key: &[u8], value_len: usize, now: u64) {
        let shift = self.state.load(Ordering::Relaxed);
        if shift != OFF {
            self.sample(key, (key.len() + value_len) as u64, shift, now);
        }
    }

    fn record_keys(&self, command: &Command, shift: u8, now: u64) {
        let len = |data: &[u8]| data.len() as u64;
        match command {
            Command::Store(store) => {
                self.sample(&store.key, len(&store.key) + len(&store.data), shift, now)
            }
            Command::Delete(d) => self.sample(&d.key, len(&d.key), shift, now),
            Command::Arith(a) => self.sample(&a.key, len(&a.key), shift, now),
            Command::Touch { key, .. } => self.sample(key, len(key), shift, now),
            _ => {}
        }
    }

    #[inline]
    fn sample(&self, key: &[u8], bytes: u64, shift: u8, now: u64) {
        if !coin(shift) {
            return;
        }
        let mut guard = lock(&self.tracking);
        let Some(tracking) = guard.as_mut() else {
            return;
        };
        if tracking.idle(now) {
            *guard = None;
            self.state.store(OFF, Ordering::Relaxed);
            return;
        }
        let next = tracking.add(key, bytes, shift, now);
        if next != shift {
            self.state.store(next, Ordering::Relaxed);
        }
    }

    /// The heaviest keys now (at most `limit` of each kind), at `now_ms`
    /// (unix milliseconds). The first question starts the tracker, and its
    /// view is empty; every question keeps it going for [`IDLE_SECS`].
    pub fn view(&self, now_ms: u64, limit: usize) -> View {
        let now = now_ms / 1000;
        let mut guard = lock(&self.tracking);
        let tracking = guard.get_or_insert_with(|| {
            self.state.store(0, Ordering::Relaxed);
            Box::new(Tracking::new(now))
        });
        tracking.last_asked = now;
        tracking.roll(now);
        let (by_ops, ops) = merged(&tracking.previous.ops, &tracking.current.ops, limit);
        let (by_bytes, bytes) = merged(&tracking.previous.bytes, &tracking.current.bytes, limit);
        View {
            since: tracking.since,
            start_ms: tracking.previous.start.max(tracking.since) * 1000,
            end_ms: now_ms,
            sample_rate: 1.0 / f64::from(1u32 << tracking.shift),
            ops,
            bytes,
            by_ops,
            by_bytes,
        }
    }

    /// Bytes the tracker holds on the heap (0 while off).
    pub fn heap_bytes(&self) -> usize {
        lock(&self.tracking).as_ref().map_or(0, |t| {
            std::mem::size_of::<Tracking>()
                + [&t.current, &t.previous]
                    .iter()
                    .map(|b| b.ops.heap_bytes() + b.bytes.heap_bytes())
                    .sum::<usize>()
        })
    }
}

/// The two buckets' estimates added, heaviest first, and their total.
fn merged(previous: &SpaceSaving, current: &SpaceSaving, limit: usize) -> (Vec<HotKey>, u64) {
    let buckets = [previous, current];
    // Per key: estimate, error, and which buckets counted it.
    let mut keys: HashMap<&[u8], (u64, u64, [bool; 2])> = HashMap::new();
    for (i, sketch) in buckets.iter().enumerate() {
        for c in sketch.counted() {
            let k = keys.entry(c.key).or_default();
            k.0 += c.count - c.error;
            k.1 += c.error;
            k.2[i] = true;
        }
    }
    let mut list: Vec<HotKey> = keys
        .into_iter()
        .map(|(key, (count, mut error, seen))| {
            // A bucket that did not count the key may have had up to its
            // floor of it.
            for (sketch, seen) in buckets.iter().zip(seen) {
                if !seen {
                    error += sketch.floor();
                }
            }
            HotKey {
                key: key.to_vec(),
                count,
                error,
            }
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    list.truncate(limit);
    (list, previous.total() + current.total())
}

/// A running tracker.
struct Tracking {
    /// Unix seconds it started.
    since: u64,
    last_asked: u64,
    current: Bucket,
    previous: Bucket,
    /// The shift samples are drawn with now.
    shift: u8,
    /// The second being measured for the next shift, and the estimated
    /// operations seen in it.
    second: u64,
    second_ops: u64,
}

/// One bucket of [`WINDOW_SECS`] seconds from `start`.
struct Bucket {
    start: u64,
    ops: SpaceSaving,
    bytes: SpaceSaving,
}

impl Bucket {
    fn new(start: u64) -> Bucket {
        Bucket {
            start,
            ops: SpaceSaving::new(CAPACITY),
            bytes: SpaceSaving::new(CAPACITY),
        }
    }

    fn clear(&mut self, start: u64) {
        self.start = start;
        self.ops.clear();
        self.bytes.clear();
    }
}

/// The start of the bucket `now` falls in.
fn bucket_start(now: u64) -> u64 {
    now - now % WINDOW_SECS
}

impl Tracking {
    fn new(now: u64) -> Tracking {
        let start = bucket_start(now);
        Tracking {
            since: now,
            last_asked: now,
            current: Bucket::new(start),
            previous: Bucket::new(start.saturating_sub(WINDOW_SECS)),
            shift: 0,
            second: now,
            second_ops: 0,
        }
    }

    fn idle(&self, now: u64) -> bool {
        now > self.last_asked.saturating_add(IDLE_SECS)
    }

    /// Move to the bucket `now` falls in: the current one becomes the
    /// previous one if it just ended, and both are emptied if more time
    /// went by. Their memory is kept.
    fn roll(&mut self, now: u64) {
        let start = bucket_start(now);
        if start <= self.current.start {
            return;
        }
        if start == self.current.start + WINDOW_SECS {
            std::mem::swap(&mut self.current, &mut self.previous);
        } else {
            self.previous.clear(start - WINDOW_SECS);
        }
        self.current.clear(start);
    }

    /// Count one sampled key drawn with `shift`; the shift to draw with
    /// from now on.
    fn add(&mut self, key: &[u8], bytes: u64, shift: u8, now: u64) -> u8 {
        self.roll(now);
        let weight = 1u64 << shift;
        self.current.ops.add(key, weight);
        self.current.bytes.add(key, bytes.saturating_mul(weight));
        if now != self.second {
            // Seconds without a sample measured nothing; the last one that
            // had any decides.
            self.shift = shift_for(self.second_ops);
            self.second = now;
            self.second_ops = 0;
        }
        self.second_ops += weight;
        self.shift
    }
}

/// The smallest shift that samples at most [`SAMPLES_PER_SEC`] keys a second
/// at `rate` keys a second.
fn shift_for(rate: u64) -> u8 {
    let mut shift = 0;
    while shift < MAX_SHIFT && rate >> shift > SAMPLES_PER_SEC {
        shift += 1;
    }
    shift
}

thread_local! {
    /// This thread's xorshift state (never 0).
    static COIN: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// True with probability `2^-shift`.
#[inline]
fn coin(shift: u8) -> bool {
    if shift == 0 {
        return true;
    }
    COIN.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x & ((1u64 << shift) - 1) == 0
    })
}

#[cfg(test)]
mod tests;
