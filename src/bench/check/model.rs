//! What `--check` knows and judges, sans-IO: the self-describing values each
//! connection writes, the per-connection per-key model of its own writes,
//! and the verdict on every read.
//!
//! A value is `mgc<writer>:<key>:<seq>:<filler>:<hash>`: the writing
//! connection, the key's index, the write's sequence number (per key, from
//! one counter shared by every connection, so a seq names one write),
//! filler up to the value size, and an FNV-1a 64 hash of everything before
//! it, in hex. A changed byte always changes FNV-1a's hash (each step is a
//! bijection of the state), so one flipped byte is always `corrupt`.
//!
//! The model follows Jepsen's for indeterminate operations: a write whose
//! outcome is unknown (an error reply, a timeout, a broken connection) may
//! take effect at any time after it was sent, so reading its value, or a
//! miss after an unknown delete, is never a violation. Only what is provably
//! wrong is flagged:
//! - `stale`: this connection's own value, older than its last acknowledged
//!   write of the key (its writes to a key execute in the order sent, so the
//!   older one cannot come back), and not in doubt;
//! - `foreign`: a value for another key, or a (key, seq) no connection ever
//!   wrote, or (own keys) another connection's value;
//! - `lost`: a miss after an acknowledged set, with no delete since that
//!   could explain it (only a candidate here: evictions, a flush or a restart
//!   seen in the server's stats explain it, `super::ServerChange`);
//! - `corrupt`: the bytes do not hash to what they say;
//! - `out_of_order`: this connection's own write sent after the read (a
//!   reply to a later request, or requests run out of order); the wire layer
//!   adds replies matched to the wrong request.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use super::super::keys::mix;

/// The shortest value `--check` writes: the longest header (`mgc`, a u32,
/// two u64 and three colons: 56 bytes), filler and the hash (17) fit, so
/// every write of a key is exactly as long and a shorter value is damaged.
pub const MIN_VALUE_LEN: usize = 80;

/// Every violation kind, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Stale,
    Foreign,
    Lost,
    Corrupt,
    OutOfOrder,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Stale,
        Kind::Foreign,
        Kind::Lost,
        Kind::Corrupt,
        Kind::OutOfOrder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Stale => "stale",
            Kind::Foreign => "foreign",
            Kind::Lost => "lost",
            Kind::Corrupt => "corrupt",
            Kind::OutOfOrder => "out_of_order",
        }
    }
}

/// What a value says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub writer: u32,
    pub key: u64,
    pub seq: u64,
}

/// Why a value could not be read as one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undecodable {
    /// Our shape, but the bytes do not hash to what they say.
    Corrupt,
    /// Not a value `--check` writes at all.
    NotOurs,
}

const MAGIC: &[u8] = b"mgc";
/// `:` and 16 hex digits.
const TRAILER: usize = 17;

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The value `stamp` writes, `len` bytes long (longer if the header needs it).
pub fn encode(stamp: Stamp, len: usize) -> Bytes {
    let header = format!("mgc{}:{}:{}:", stamp.writer, stamp.key, stamp.seq);
    let len = len.max(header.len() + TRAILER + 1);
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(header.as_bytes());
    // Filler that differs per write, so that a value spliced from two
    // writes does not hash right by accident of equal filler.
    let mut h = mix(stamp.key ^ mix(stamp.seq ^ (u64::from(stamp.writer) << 48)));
    while out.len() < len - TRAILER {
        out.put_u8(b'a' + (h % 26) as u8);
        h = h.rotate_right(5).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    let hash = fnv1a(&out);
    out.put_slice(format!(":{hash:016x}").as_bytes());
    out.freeze()
}

/// Read a value back. `expected_len` is the length this key's values have:
/// a value of that length that does not hash right is ours, damaged.
pub fn decode(value: &[u8], expected_len: usize) -> Result<Stamp, Undecodable> {
    let ours_shape = value.starts_with(MAGIC) || value.len() == expected_len;
    let damaged = if ours_shape {
        Undecodable::Corrupt
    } else {
        Undecodable::NotOurs
    };
    let Some(split) = value.len().checked_sub(TRAILER) else {
        return Err(damaged);
    };
    let (body, trailer) = value.split_at(split);
    // Compared as the exact bytes written: parsing the hex would take
    // `A` for `a`, and miss a flipped case bit.
    if trailer != format!(":{:016x}", fnv1a(body)).as_bytes() {
        return Err(damaged);
    }
    let header = body.strip_prefix(MAGIC).ok_or(Undecodable::NotOurs)?;
    let mut fields = header.splitn(4, |&b| b == b':');
    let mut number = || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    let (Some(writer), Some(key), Some(seq)) = (number(), number(), number()) else {
        return Err(Undecodable::NotOurs);
    };
    let writer = u32::try_from(writer).map_err(|_| Undecodable::NotOurs)?;
    Ok(Stamp { writer, key, seq })
}

/// The per-key write counters every connection shares: `seqs[k]` is the last
/// sequence number handed out for key `k`.
pub struct Seqs(Vec<AtomicU64>);

impl Seqs {
    pub fn new(keys: u64) -> Seqs {
        Seqs((0..keys).map(|_| AtomicU64::new(0)).collect())
    }

    /// A fresh sequence number for a write of `key` (never 0).
    pub fn next(&self, key: u64) -> u64 {
        self.slot(key)
            .map_or(0, |s| s.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// The last sequence number handed out for `key`.
    pub fn last(&self, key: u64) -> u64 {
        self.slot(key).map_or(0, |s| s.load(Ordering::SeqCst))
    }

    fn slot(&self, key: u64) -> Option<&AtomicU64> {
        usize::try_from(key).ok().and_then(|k| self.0.get(k))
    }
}

/// One connection's history of one key.
#[derive(Clone, Debug, Default)]
struct KeyLog {
    /// The last acknowledged write (0: none yet) and whether it was a delete.
    acked: u64,
    acked_delete: bool,
    /// Writes whose outcome is unknown, by seq: `true` for a delete.
    doubt: BTreeMap<u64, bool>,
}

/// The verdict on one key of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Consistent with the model (a hit or a miss).
    Verified {
        hit: bool,
    },
    /// A miss after an acknowledged set: `lost` unless the server's stats
    /// explain it.
    MissAfterAck,
    Violation(Kind, String),
}

/// One connection's model: what it wrote, and which of it is certain.
pub struct Model {
    conn: u32,
    /// Every connection reads and writes every key (else only its own).
    shared: bool,
    keys: HashMap<u64, KeyLog>,
}

impl Model {
    pub fn new(conn: u32, shared: bool) -> Model {
        Model {
            conn,
            shared,
            keys: HashMap::new(),
        }
    }

    /// The connection this model is of.
    pub fn conn(&self) -> u32 {
        self.conn
    }

    /// A write of `key` with `seq` was acknowledged.
    pub fn ack(&mut self, key: u64, seq: u64, delete: bool) {
        let log = self.keys.entry(key).or_default();
        // Acks come in the order the writes were sent, so this one is the
        // latest; `max` only guards against a server that reorders replies,
        // which the wire layer reports as out of order.
        if seq > log.acked {
            log.acked = seq;
            log.acked_delete = delete;
        }
    }

    /// The outcome of a write of `key` with `seq` is unknown.
    pub fn doubt(&mut self, key: u64, seq: u64, delete: bool) {
        self.keys.entry(key).or_default().doubt.insert(seq, delete);
    }

    /// Judge what a read of `key` returned. `sent_after` is this
    /// connection's last write of `key` sent before the read (0: none);
    /// `last_issued` the last seq any connection was given for `key`;
    /// `expected_len` the length of `key`'s values.
    pub fn judge(
        &self,
        key: u64,
        sent_after: u64,
        last_issued: u64,
        expected_len: usize,
        value: Option<&[u8]>,
    ) -> Verdict {
        let empty = KeyLog::default();
        let log = self.keys.get(&key).unwrap_or(&empty);
        let Some(value) = value else {
            let explained =
                log.acked == 0 || log.acked_delete || log.doubt.values().any(|&delete| delete);
            return if explained {
                Verdict::Verified { hit: false }
            } else {
                Verdict::MissAfterAck
            };
        };
        let stamp = match decode(value, expected_len) {
            Ok(stamp) => stamp,
            Err(Undecodable::Corrupt) => {
                return Verdict::Violation(
                    Kind::Corrupt,
                    format!("key {key}: {} bytes that do not hash right", value.len()),
                )
            }
            Err(Undecodable::NotOurs) => {
                return Verdict::Violation(
                    Kind::Foreign,
                    format!(
                        "key {key}: a value no connection wrote ({:?})",
                        Preview(value)
                    ),
                )
            }
        };
        let foreign = |why: String| Verdict::Violation(Kind::Foreign, format!("key {key}: {why}"));
        if stamp.key != key {
            return foreign(format!(
                "key {}'s value (conn {} seq {})",
                stamp.key, stamp.writer, stamp.seq
            ));
        }
        if stamp.seq == 0 || stamp.seq > last_issued {
            return foreign(format!("seq {} was never written", stamp.seq));
        }
        if stamp.writer != self.conn {
            // With own keys nobody else writes this key; shared, another
            // connection's write may be ordered anywhere after it was sent.
            return if self.shared {
                Verdict::Verified { hit: true }
            } else {
                foreign(format!("conn {}'s value (seq {})", stamp.writer, stamp.seq))
            };
        }
        if stamp.seq > sent_after {
            return Verdict::Violation(
                Kind::OutOfOrder,
                format!(
                    "key {key}: read sees seq {}, written after the read (last before it: {sent_after})",
                    stamp.seq
                ),
            );
        }
        if stamp.seq < log.acked && !log.doubt.contains_key(&stamp.seq) {
            return Verdict::Violation(
                Kind::Stale,
                format!(
                    "key {key}: read seq {} after seq {} was acknowledged{}",
                    stamp.seq,
                    log.acked,
                    if log.acked_delete { " (a delete)" } else { "" }
                ),
            );
        }
        Verdict::Verified { hit: true }
    }
}

/// The start of a value, for an example line.
struct Preview<'a>(&'a [u8]);

impl fmt::Debug for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.get(..40).unwrap_or(self.0);
        write!(f, "\"{}\"", shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            write!(f, "…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(writer: u32, key: u64, seq: u64) -> Stamp {
        Stamp { writer, key, seq }
    }

    #[test]
    fn values_read_back_and_any_flipped_byte_is_corrupt() {
        let s = stamp(3, 42, 7);
        let v = encode(s, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(decode(&v, 100), Ok(s));
        for i in 0..v.len() {
            let mut bad = v.to_vec();
            bad[i] ^= 0x20;
            assert_eq!(decode(&bad, 100), Err(Undecodable::Corrupt), "byte {i}");
        }
        // Truncated: still our shape by its magic.
        assert_eq!(decode(&v[..99], 100), Err(Undecodable::Corrupt));
        assert_eq!(decode(b"hello", 100), Err(Undecodable::NotOurs));
        // Too short for its header, the value grows; the longest header
        // fits the shortest value the checker writes.
        assert!(encode(stamp(999, 123_456_789, 1 << 40), 8).len() > 40);
        let longest = stamp(u32::MAX, u64::MAX, u64::MAX);
        assert_eq!(encode(longest, MIN_VALUE_LEN).len(), MIN_VALUE_LEN);
    }

    fn model() -> (Model, usize) {
        (Model::new(1, false), MIN_VALUE_LEN)
    }

    #[test]
    fn reads_of_the_last_acknowledged_write_verify() {
        let (mut m, len) = model();
        assert_eq!(
            m.judge(5, 0, 0, len, None),
            Verdict::Verified { hit: false }
        );
        m.ack(5, 1, false);
        let v = encode(stamp(1, 5, 1), len);
        assert_eq!(
            m.judge(5, 1, 1, len, Some(&v)),
            Verdict::Verified { hit: true }
        );
    }

    #[test]
    fn an_older_own_write_is_stale_unless_in_doubt() {
        let (mut m, len) = model();
        m.ack(5, 1, false);
        m.doubt(5, 2, false);
        m.ack(5, 3, false);
        let old = encode(stamp(1, 5, 1), len);
        assert!(matches!(
            m.judge(5, 3, 3, len, Some(&old)),
            Verdict::Violation(Kind::Stale, _)
        ));
        // Seq 2's outcome is unknown: it may have landed late.
        let doubtful = encode(stamp(1, 5, 2), len);
        assert_eq!(
            m.judge(5, 3, 3, len, Some(&doubtful)),
            Verdict::Verified { hit: true }
        );
        // After an acknowledged delete, the deleted value is stale too.
        m.ack(5, 4, true);
        let v3 = encode(stamp(1, 5, 3), len);
        assert!(matches!(
            m.judge(5, 4, 4, len, Some(&v3)),
            Verdict::Violation(Kind::Stale, _)
        ));
    }

    #[test]
    fn misses_after_an_acknowledged_set_are_lost_candidates() {
        let (mut m, len) = model();
        m.ack(5, 1, false);
        assert_eq!(m.judge(5, 1, 1, len, None), Verdict::MissAfterAck);
        // An unknown delete may explain it.
        m.doubt(5, 2, true);
        assert_eq!(
            m.judge(5, 2, 2, len, None),
            Verdict::Verified { hit: false }
        );
        // So does an acknowledged one.
        m.ack(6, 1, false);
        m.ack(6, 2, true);
        assert_eq!(
            m.judge(6, 2, 2, len, None),
            Verdict::Verified { hit: false }
        );
    }

    #[test]
    fn foreign_values_and_writes_from_the_future() {
        let (mut m, len) = model();
        m.ack(5, 2, false);
        let other_key = encode(stamp(1, 6, 1), len);
        let other_conn = encode(stamp(2, 5, 1), len);
        let never = encode(stamp(1, 5, 9), len);
        let later = encode(stamp(1, 5, 3), len);
        for (value, kind) in [
            (&other_key, Kind::Foreign),
            (&other_conn, Kind::Foreign),
            (&never, Kind::Foreign),
            (&later, Kind::OutOfOrder),
        ] {
            assert!(
                matches!(m.judge(5, 2, 3, len, Some(value)), Verdict::Violation(k, _) if k == kind),
                "{value:?}"
            );
        }
        // Shared keys: another connection's write is fine, an own older one
        // still stale.
        let mut shared = Model::new(1, true);
        shared.ack(5, 3, false);
        assert_eq!(
            shared.judge(5, 3, 4, len, Some(&encode(stamp(2, 5, 4), len))),
            Verdict::Verified { hit: true }
        );
        assert!(matches!(
            shared.judge(5, 3, 4, len, Some(&encode(stamp(1, 5, 1), len))),
            Verdict::Violation(Kind::Stale, _)
        ));
    }

    #[test]
    fn seqs_are_handed_out_once_per_key() {
        let seqs = Seqs::new(2);
        assert_eq!((seqs.next(0), seqs.next(0), seqs.next(1)), (1, 2, 1));
        assert_eq!(seqs.last(0), 2);
        assert_eq!(seqs.next(7), 0, "out of range");
    }
}
