//! An item's header in a segment: variable length, so that an item pays
//! only for the fields it uses. `docs/STORE.md` has the layout byte by byte.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | bits: [`FETCHED`], [`STALE`], [`TOKEN_SENT`], the read credit, [`COMPACT`], [`C_VLEN2`], [`DEAD`] |
//! | 0 or 1 | shape: which optional fields follow and how wide ([`S_VLEN`], [`S_FLAGS`], [`S_EXP`], [`S_CAS`]); absent in a compact header |
//! | 1 | key length |
//! | 1–3 | value length, little-endian |
//! | 2 or 4 | last access, unix seconds: its distance from the segment's time base (signed), or whole |
//! | 0 or 4 | client flags, only when non-zero |
//! | 0 or 4 | exptime, only when non-zero |
//! | 1–3 or 7 | CAS: its distance above the segment's CAS base, or all 56 bits |
//!
//! A 32-byte key with a 100-byte value, no flags and no TTL takes 6 bytes
//! of header (8 or 9 with a wider CAS), against 24 when every field was
//! fixed.
//!
//! # Compact headers
//! Most items have no flags, no TTL, an access time within the 2-byte
//! distance, a one-byte CAS distance and a value under 64 KiB. Their shape
//! is then implied by [`COMPACT`] in the bits byte (with [`C_VLEN2`] for a
//! 2-byte value length) and the shape byte is left out, one byte of the 7
//! such an item took before. Any other shape has its shape byte. An
//! in-place change keeps the shape, so a compact header stays compact.
//!
//! # Bases
//! Each segment has a [`Base`]: the CAS counter and the clock when it
//! became a write segment. Both fields that follow are stored as distances
//! from it when they fit, else whole; which, the shape says.
//!
//! # CAS
//! CAS uniques come from the shard's counter, `seq << 4 | shard`
//! (`Shard::next_cas`): unique in the store and increasing for each key
//! (`store.rs` says why that is enough). An item written to a segment after
//! it became a write segment stores `(cas - base.cas) >> 4`, the shard's
//! uniques handed out since, which stays small while the segment is being
//! filled. An item
//! whose CAS is older than the base (moved by merge-eviction, rewritten
//! keeping its CAS) or too far above it stores the whole CAS. The value a
//! reply shows is always the item's CAS, never a function of where it sits:
//! moving an item keeps it, and a change that needs a new one takes the
//! counter's next.
//!
//! # Last access
//! Stored as `time - base.time` in two bytes (signed: an item moved in
//! keeps its older time) when that fits, about 9 hours either way, else
//! whole. A bump past what the field holds (a read of an item whose segment
//! became a write segment over 9 hours ago) writes a fresh copy, whose
//! field then fits: `la`, `mg l`, `me la=` and a delayed `flush_all` see
//! the exact second, as memcached's do.
//!
//! # In-place changes
//! A header is rewritten in place (a touch, a bump, an in-place `incr`, an
//! invalidation) only when the new values fit the fields it has
//! ([`Header::rewrite`]); otherwise the store writes a fresh copy of the
//! item (`Shard::update`), so that no field is ever narrowed or lost.

/// Item bit: fetched at least once (memcached `ITEM_FETCHED`).
pub(crate) const FETCHED: u8 = 1;
/// Item bit: marked stale by a meta invalidation (`ITEM_STALE`).
pub(crate) const STALE: u8 = 2;
/// Item bit: a recache win was handed out (`ITEM_TOKEN_SENT`).
pub(crate) const TOKEN_SENT: u8 = 4;
/// Item bit: unlinked; its bytes stay until the segment goes.
pub(crate) const DEAD: u8 = 0x80;
/// Format bit: a compact header, with no shape byte (see the module
/// comment); its shape is [`COMPACT_SHAPE`].
pub(crate) const COMPACT: u8 = 0x40;
/// Format bit of a compact header: its value length takes 2 bytes, not 1.
pub(crate) const C_VLEN2: u8 = 0x20;
/// The bits of the bits byte that say how the header is laid out, not
/// what the item is: kept when the item's bits are rewritten.
const FORMAT: u8 = COMPACT | C_VLEN2;

pub(crate) const O_BITS: usize = 0;
const O_SHAPE: usize = 1;

/// Shape: value-length width minus one (0–2: 1 to 3 bytes).
pub(crate) const S_VLEN: u8 = 0b11;
/// Shape: a 4-byte client flags field follows the access time.
pub(crate) const S_FLAGS: u8 = 1 << 2;
/// Shape: a 4-byte exptime field follows.
pub(crate) const S_EXP: u8 = 1 << 3;
/// Shape: the CAS field's code (0: the whole CAS in 7 bytes; 1–3: the
/// distance above the segment's base in that many bytes).
pub(crate) const S_CAS: u8 = 0b11 << S_CAS_SHIFT;
const S_CAS_SHIFT: u8 = 4;
/// Shape: the access time is whole (4 bytes), not a 2-byte distance.
pub(crate) const S_TIME: u8 = 1 << 6;

/// What a segment's items are stored relative to: the CAS counter and the
/// clock (unix seconds) when it became a write segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Base {
    pub cas: u64,
    pub time: u32,
}

/// CAS uniques are 56 bits: 7 bytes when stored whole (2^52 stores a shard
/// is over 100 years at a million a second).
pub const CAS_MASK: u64 = (1 << 56) - 1;
/// The low bits of a CAS unique name the shard that handed it out
/// (`Shard::next_cas`); a shard's uniques step by `1 << CAS_SHARD_BITS`, and
/// a distance is stored in those steps.
pub const CAS_SHARD_BITS: u32 = 4;
/// Largest value the 3-byte length holds.
pub const MAX_VALUE_LEN: usize = (1 << 24) - 1;

/// The longest header: every field, the widest value length, a whole
/// access time and CAS.
pub const MAX_HDR: usize = 1 + 1 + 1 + 3 + 4 + 4 + 4 + 7;

/// The shape a compact header implies, less its value-length width: no
/// flags, no exptime, the access time as a distance, a one-byte CAS
/// distance.
const COMPACT_SHAPE: u8 = 1 << S_CAS_SHIFT;

/// Whether a header of this shape is written compact.
const fn is_compact(shape: u8) -> bool {
    shape & !S_VLEN == COMPACT_SHAPE && shape & S_VLEN <= 1
}

/// Header bytes for each shape, as written: a compact one has no shape
/// byte (the top bit of a shape is unused).
const HDR_LEN: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut s = 0;
    while s < 128 {
        let shape = s as u8;
        let vw = (shape & S_VLEN) as usize + 1;
        let cw = cas_width((shape & S_CAS) >> S_CAS_SHIFT);
        let tw = if shape & S_TIME != 0 { 4 } else { 2 };
        let mut n = 3 + vw + tw + cw;
        if shape & S_FLAGS != 0 {
            n += 4;
        }
        if shape & S_EXP != 0 {
            n += 4;
        }
        if is_compact(shape) {
            n -= 1;
        }
        t[s] = n as u8;
        s += 1;
    }
    t
};

/// Bytes of the CAS field for a shape's CAS code.
const fn cas_width(code: u8) -> usize {
    if code == 0 {
        7
    } else {
        code as usize
    }
}

/// The shape of the header that starts `b`: its shape byte, or the one
/// its compact bits imply.
#[inline]
fn shape_of(b: &[u8]) -> u8 {
    let bits = b[O_BITS];
    if bits & COMPACT != 0 {
        COMPACT_SHAPE | ((bits & C_VLEN2) >> C_VLEN2.trailing_zeros())
    } else {
        b[O_SHAPE] & 127
    }
}

/// Offset of the key length: after the bits, and the shape byte if there
/// is one.
#[inline]
fn klen_at(b: &[u8]) -> usize {
    2 - usize::from(b[O_BITS] & COMPACT != 0)
}

/// The header length of the item whose header starts `b`; the key
/// follows it.
#[inline]
pub(crate) fn hdr_len(b: &[u8]) -> usize {
    usize::from(HDR_LEN[usize::from(shape_of(b))])
}

pub(crate) fn key_len(b: &[u8]) -> usize {
    usize::from(b[klen_at(b)])
}

fn value_width(b: &[u8]) -> usize {
    usize::from(shape_of(b) & S_VLEN) + 1
}

pub(crate) fn value_len(b: &[u8]) -> usize {
    rd(b, klen_at(b) + 1, value_width(b)) as usize
}

/// Give the item whose header starts `b` these item bits (as
/// [`Header::bits`]), keeping its layout and whether it is [`DEAD`].
pub(crate) fn set_bits(b: &mut [u8], bits: u8) {
    b[O_BITS] = (b[O_BITS] & (FORMAT | DEAD)) | (bits & !(FORMAT | DEAD));
}

/// Total bytes of the item whose header starts `b`.
#[inline]
pub(crate) fn item_len(b: &[u8]) -> usize {
    hdr_len(b) + key_len(b) + value_len(b)
}

/// The key of the item that starts `b`.
pub(crate) fn key(b: &[u8]) -> &[u8] {
    let h = hdr_len(b);
    &b[h..h + key_len(b)]
}

/// Offset of the access time: after the value length.
fn time_at(b: &[u8]) -> usize {
    klen_at(b) + 1 + value_width(b)
}

fn time_width(shape: u8) -> usize {
    if shape & S_TIME != 0 {
        4
    } else {
        2
    }
}

/// `time`'s distance from `base` if it fits the 2-byte field.
fn time_delta(time: u32, base: u32) -> Option<i16> {
    i16::try_from(i64::from(time) - i64::from(base)).ok()
}

/// The `n`-byte little-endian field at `at`. The widths every common
/// header has (1, 2, 4) are loads of their own: a copy of a variable length
/// is a call to `memcpy`, several per request (callgrind, benches/STORE.md).
#[inline]
fn rd(b: &[u8], at: usize, n: usize) -> u64 {
    match n {
        1 => u64::from(b[at]),
        2 => u64::from(u16::from_le_bytes([b[at], b[at + 1]])),
        4 => u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])),
        _ => {
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(&b[at..at + n]);
            u64::from_le_bytes(x)
        }
    }
}

/// Write `v`'s low `n` bytes at `at`, little-endian (as [`rd`] reads them).
#[inline]
fn wr(b: &mut [u8], at: usize, n: usize, v: u64) {
    match n {
        1 => b[at] = v as u8,
        2 => b[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes()),
        4 => b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes()),
        _ => b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]),
    }
}

/// Bytes of a value length.
fn width_of_len(value_len: usize) -> u8 {
    match value_len {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        _ => 3,
    }
}

/// `cas`'s distance above `base` in the shard's steps, if it is a whole
/// number of them above it.
fn cas_steps(cas: u64, base: u64) -> Option<u64> {
    let d = cas.checked_sub(base)?;
    (d & ((1 << CAS_SHARD_BITS) - 1) == 0).then_some(d >> CAS_SHARD_BITS)
}

/// The CAS code for `cas` in a segment whose base is `base`: the fewest
/// bytes its distance above the base fits in, or 0 (whole) when it is
/// below the base, too far above it, not a whole number of steps from it,
/// or `whole` is asked for.
fn cas_code(cas: u64, base: u64, whole: bool) -> u8 {
    let Some(d) = cas_steps(cas, base).filter(|_| !whole) else {
        return 0;
    };
    match d {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => 0,
    }
}

/// An item's metadata, decoded from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
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
    /// Decode the header that starts `b`, in a segment whose base is
    /// `base`.
    pub fn read(b: &[u8], base: Base) -> Header {
        let shape = shape_of(b);
        let mut at = time_at(b);
        let time = if shape & S_TIME != 0 {
            rd(b, at, 4) as u32
        } else {
            let d = rd(b, at, 2) as u16 as i16;
            base.time.wrapping_add_signed(i32::from(d))
        };
        at += time_width(shape);
        let mut flags = 0;
        if shape & S_FLAGS != 0 {
            flags = rd(b, at, 4) as u32;
            at += 4;
        }
        let mut exptime = 0;
        if shape & S_EXP != 0 {
            exptime = rd(b, at, 4) as u32;
            at += 4;
        }
        let code = (shape & S_CAS) >> S_CAS_SHIFT;
        let cas = match code {
            0 => rd(b, at, 7),
            n => base.cas + (rd(b, at, usize::from(n)) << CAS_SHARD_BITS),
        };
        Header {
            bits: b[O_BITS] & !(FORMAT | DEAD),
            flags,
            exptime,
            time,
            cas,
        }
    }

    /// The shape this header takes for a value of `value_len` bytes in a
    /// segment whose base is `base`; with `whole`, the CAS is stored whole
    /// (so that later in-place changes of it fit).
    fn shape(&self, value_len: usize, base: Base, whole: bool) -> u8 {
        let mut s = width_of_len(value_len) - 1;
        if time_delta(self.time, base.time).is_none() {
            s |= S_TIME;
        }
        if self.flags != 0 {
            s |= S_FLAGS;
        }
        if self.exptime != 0 {
            s |= S_EXP;
        }
        s | cas_code(self.cas & CAS_MASK, base.cas, whole) << S_CAS_SHIFT
    }

    /// Bytes of an item with this header, a `key_len`-byte key and a
    /// `value_len`-byte value, in a segment whose base is `base`.
    pub fn item_len(&self, key_len: usize, value_len: usize, base: Base, whole: bool) -> usize {
        usize::from(HDR_LEN[usize::from(self.shape(value_len, base, whole))]) + key_len + value_len
    }

    /// Write an item: this header, the key, and the value in up to two
    /// parts, into `b`, which is exactly [`Self::item_len`] bytes. The
    /// caller checked `key.len() <= 255` and the value against
    /// [`MAX_VALUE_LEN`].
    pub fn write_item(&self, b: &mut [u8], base: Base, whole: bool, key: &[u8], parts: [&[u8]; 2]) {
        let vlen = parts[0].len() + parts[1].len();
        let shape = self.shape(vlen, base, whole);
        if is_compact(shape) {
            b[O_BITS] = COMPACT | ((shape & S_VLEN) << C_VLEN2.trailing_zeros());
        } else {
            b[O_BITS] = 0;
            b[O_SHAPE] = shape;
        }
        let at = klen_at(b);
        b[at] = u8::try_from(key.len()).unwrap_or(u8::MAX);
        wr(b, at + 1, value_width(b), vlen as u64);
        self.write_fields(b, base);
        let mut at = hdr_len(b);
        for p in [key, parts[0], parts[1]] {
            b[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
    }

    /// Rewrite the header that starts `b` in place, keeping its shape. False,
    /// with nothing written, when a value does not fit the fields the header
    /// has: flags or an exptime it has no field for, or a CAS or access time
    /// its field cannot hold. Storing 0 in a field that is there is fine.
    pub fn rewrite(&self, b: &mut [u8], base: Base) -> bool {
        let shape = shape_of(b);
        if shape & S_TIME == 0 && time_delta(self.time, base.time).is_none() {
            return false;
        }
        if self.flags != 0 && shape & S_FLAGS == 0 {
            return false;
        }
        if self.exptime != 0 && shape & S_EXP == 0 {
            return false;
        }
        let code = (shape & S_CAS) >> S_CAS_SHIFT;
        let cas = self.cas & CAS_MASK;
        if code != 0 {
            let fits = cas_steps(cas, base.cas).is_some_and(|d| d < 1 << (8 * u32::from(code)));
            if !fits {
                return false;
            }
        }
        self.write_fields(b, base);
        true
    }

    /// Write bits, time and the optional fields per the shape already in
    /// `b`, which the caller made fit.
    fn write_fields(&self, b: &mut [u8], base: Base) {
        let shape = shape_of(b);
        b[O_BITS] = (b[O_BITS] & FORMAT) | (self.bits & !(FORMAT | DEAD));
        let mut at = time_at(b);
        if shape & S_TIME != 0 {
            wr(b, at, 4, u64::from(self.time));
        } else {
            // The shape (or `rewrite`'s check) made sure it fits.
            let d = time_delta(self.time, base.time);
            debug_assert!(d.is_some());
            wr(b, at, 2, u64::from(d.unwrap_or(0) as u16));
        }
        at += time_width(shape);
        if shape & S_FLAGS != 0 {
            wr(b, at, 4, u64::from(self.flags));
            at += 4;
        }
        if shape & S_EXP != 0 {
            wr(b, at, 4, u64::from(self.exptime));
            at += 4;
        }
        let cas = self.cas & CAS_MASK;
        match (shape & S_CAS) >> S_CAS_SHIFT {
            0 => wr(b, at, 7, cas),
            n => wr(b, at, usize::from(n), (cas - base.cas) >> CAS_SHARD_BITS),
        }
    }

    /// Expired by TTL at `now` (memcached: `exptime != 0 && exptime <= now`).
    pub fn is_expired(&self, now: u64) -> bool {
        self.exptime != 0 && u64::from(self.exptime) <= now
    }
}

/// Header bytes of the narrowest header an item with this value length
/// takes, with or without client flags and an exptime: its access time
/// and CAS as the shortest distances, compact if it can be.
pub fn least_hdr(value_len: usize, flags: bool, exptime: bool) -> usize {
    let mut shape = (width_of_len(value_len) - 1) | COMPACT_SHAPE;
    if flags {
        shape |= S_FLAGS;
    }
    if exptime {
        shape |= S_EXP;
    }
    usize::from(HDR_LEN[usize::from(shape)])
}

/// Header bytes of the widest header an item with this value length, with
/// or without client flags, can come to have: its access time and CAS
/// whole, and an exptime field (a touch that clears a TTL keeps it).
pub fn most_hdr(value_len: usize, flags: bool) -> usize {
    let mut shape = (width_of_len(value_len) - 1) | S_TIME | S_EXP;
    if flags {
        shape |= S_FLAGS;
    }
    usize::from(HDR_LEN[usize::from(shape)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Base = Base {
        cas: 1000,
        time: 1_700_000_000,
    };

    fn round_trip(h: Header, key: &[u8], value: &[u8], base: Base, whole: bool) -> usize {
        let len = h.item_len(key.len(), value.len(), base, whole);
        let mut b = vec![0xaau8; len + 3];
        let (a, c) = value.split_at(value.len() / 2);
        h.write_item(&mut b[..len], base, whole, key, [a, c]);
        assert_eq!(item_len(&b), len, "{h:?}");
        assert_eq!(self::key(&b), key);
        assert_eq!(value_len(&b), value.len());
        assert_eq!(&b[len - value.len()..len], value);
        assert_eq!(Header::read(&b, base), h);
        assert_eq!(&b[len..], &[0xaa; 3], "nothing written past the item");
        len
    }

    #[test]
    fn every_shape_round_trips() {
        let key = b"some-key-of-32-bytes-0123456789a";
        let t = B.time;
        for vlen in [0, 1, 255, 256, 65535, 65536, MAX_VALUE_LEN] {
            let value = vec![b'v'; vlen];
            for flags in [0, 1, u32::MAX] {
                for exptime in [0, 1_700_000_000, u32::MAX] {
                    for (time, tw) in [
                        (t, 2),
                        (t + 32767, 2),
                        (t + 32768, 4),
                        (t - 32768, 2),
                        (t - 32769, 4),
                        (0, 4),
                        (u32::MAX, 4),
                    ] {
                        let step = |n: u64| 1000 + (n << CAS_SHARD_BITS);
                        for (cas, base_cas) in [
                            (1000, 1000),
                            (step(0xff), 1000),
                            (step(0x100), 1000),
                            (step(0xffff), 1000),
                            (step(0x1_0000), 1000),
                            (step(0xff_ffff), 1000),
                            (step(0x100_0000), 1000),
                            (999, 1000),
                            (1001, 1000),
                            (CAS_MASK, 0),
                            (CAS_MASK & !15, 0),
                            (1, 0),
                            (16, 0),
                        ] {
                            for whole in [false, true] {
                                let h = Header {
                                    bits: FETCHED | STALE | TOKEN_SENT | 0x18,
                                    flags,
                                    exptime,
                                    time,
                                    cas,
                                };
                                let base = Base {
                                    cas: base_cas,
                                    time: t,
                                };
                                let len = round_trip(h, key, &value, base, whole);
                                let d = cas
                                    .checked_sub(base_cas)
                                    .filter(|d| !whole && d % 16 == 0)
                                    .map(|d| d / 16);
                                let cw = match d {
                                    Some(0..=0xff) => 1,
                                    Some(0x100..=0xffff) => 2,
                                    Some(0x1_0000..=0xff_ffff) => 3,
                                    _ => 7,
                                };
                                let vw = usize::from(width_of_len(vlen));
                                let compact =
                                    flags == 0 && exptime == 0 && tw == 2 && cw == 1 && vw <= 2;
                                let want = 3
                                    + vw
                                    + tw
                                    + if flags != 0 { 4 } else { 0 }
                                    + if exptime != 0 { 4 } else { 0 }
                                    + cw
                                    - usize::from(compact);
                                assert_eq!(len, want + key.len() + vlen, "{h:?} {base:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_common_item_has_a_six_byte_header() {
        let h = Header {
            bits: 0,
            flags: 0,
            exptime: 0,
            time: B.time + 5,
            cas: B.cas,
        };
        assert_eq!(h.item_len(32, 100, B, false), 32 + 100 + 6);
        assert_eq!(least_hdr(100, false, false), 6);
        assert_eq!(h.item_len(32, 1000, B, false), 32 + 1000 + 7);
        // A 3-byte value length, or a 2-byte CAS distance, takes the shape
        // byte.
        assert_eq!(least_hdr(1 << 16, false, false), 3 + 3 + 2 + 1);
        let later = Header {
            cas: B.cas + 16 * 256,
            ..h
        };
        assert_eq!(later.item_len(32, 100, B, false), 32 + 100 + 8);
        assert_eq!(most_hdr(100, true), MAX_HDR - 2);
        let far = Header { time: 0, ..h };
        let all = Header {
            flags: 1,
            exptime: 1,
            ..far
        };
        assert_eq!(
            all.item_len(0, MAX_VALUE_LEN, B, true) - MAX_VALUE_LEN,
            MAX_HDR
        );
    }

    #[test]
    fn rewrite_only_when_the_fields_fit() {
        let h = Header {
            bits: 0,
            flags: 0,
            exptime: 0,
            time: B.time,
            cas: B.cas + 16 * 10,
        };
        let len = h.item_len(1, 1, B, false);
        assert_eq!(len, 1 + 1 + 6, "compact: a one-byte CAS distance");
        let mut b = vec![0u8; len];
        h.write_item(&mut b, B, false, b"k", [b"v", b""]);
        let before = b.clone();
        // A TTL, flags, a CAS too far from the base or an access time too
        // far from it do not fit: untouched.
        for bad in [
            Header { exptime: 9, ..h },
            Header { flags: 9, ..h },
            Header {
                cas: B.cas + 16 * 256,
                ..h
            },
            Header { cas: 999, ..h },
            Header {
                cas: B.cas + 17,
                ..h
            },
            Header {
                time: B.time + 40_000,
                ..h
            },
        ] {
            assert!(!bad.rewrite(&mut b, B), "{bad:?}");
            assert_eq!(b, before);
        }
        // Bits, a time and a CAS within their fields do.
        let ok = Header {
            bits: FETCHED,
            time: B.time + 32_000,
            cas: B.cas + 16 * 255,
            ..h
        };
        assert!(ok.rewrite(&mut b, B));
        assert_eq!(Header::read(&b, B), ok);
        assert_eq!(key(&b), b"k");
        // A whole CAS takes any new one; a present exptime takes 0; a whole
        // time takes any.
        let h2 = Header {
            exptime: 50,
            time: 7,
            ..h
        };
        let len = h2.item_len(1, 1, B, true);
        let mut b = vec![0u8; len];
        h2.write_item(&mut b, B, true, b"k", [b"v", b""]);
        let ok = Header {
            exptime: 0,
            cas: 3,
            time: B.time + 1_000_000,
            ..h2
        };
        assert!(ok.rewrite(&mut b, B));
        assert_eq!(Header::read(&b, B), ok);
        assert_eq!(item_len(&b), len, "same shape, same length");
    }

    #[test]
    fn item_bits_keep_the_layout() {
        for vlen in [100, 1000] {
            let h = Header {
                bits: 0,
                flags: 0,
                exptime: 0,
                time: B.time,
                cas: B.cas,
            };
            let value = vec![b'v'; vlen];
            let len = h.item_len(3, vlen, B, false);
            let mut b = vec![0u8; len];
            h.write_item(&mut b, B, false, b"key", [&value, b""]);
            assert_ne!(b[O_BITS] & COMPACT, 0);
            let all = FETCHED | STALE | TOKEN_SENT | 0x18;
            set_bits(&mut b, all);
            let with = Header { bits: all, ..h };
            assert_eq!(Header::read(&b, B), with);
            assert_eq!(
                (key(&b), value_len(&b), item_len(&b)),
                (&b"key"[..], vlen, len)
            );
            assert!(Header { bits: 0, ..with }.rewrite(&mut b, B));
            assert_eq!(Header::read(&b, B), h);
            assert_eq!(item_len(&b), len);
        }
    }

    #[test]
    fn dead_is_not_part_of_the_header() {
        let h = Header {
            bits: FETCHED,
            flags: 0,
            exptime: 0,
            time: B.time,
            cas: B.cas,
        };
        let mut b = vec![0u8; h.item_len(1, 0, B, false)];
        h.write_item(&mut b, B, false, b"k", [b"", b""]);
        b[O_BITS] |= DEAD;
        assert_eq!(Header::read(&b, B), h);
    }
}
