//! Packet headers and bodies, read and written the same way in both
//! directions.

use super::{status, Unsupported, HEADER_LEN};
use crate::protocol::ProtocolError;
use bytes::{BufMut, BytesMut};

pub(super) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A decoded packet header. Lengths are widened to `usize` once, here.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub(super) opcode: u8,
    pub(super) key_len: usize,
    pub(super) extras_len: usize,
    /// The status in a response; the (ignored) vbucket in a request.
    pub(super) status: u16,
    pub(super) body_len: usize,
    pub(super) opaque: u32,
    pub(super) cas: u64,
}

impl Header {
    /// Decode the header at the front of `buf`, or `None` until all 24 bytes
    /// are there. A wrong magic is reported as soon as the first byte is.
    pub(super) fn read(buf: &[u8], magic: u8) -> Result<Option<Header>, ProtocolError> {
        match buf.first() {
            None => return Ok(None),
            Some(&m) if m != magic => return Err(ProtocolError::BadMagic(m)),
            Some(_) => {}
        }
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        // Constant indices into a fixed-size array: checked at compile time.
        let body_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let header = Header {
            opcode: h[1],
            key_len: usize::from(u16::from_be_bytes([h[2], h[3]])),
            extras_len: usize::from(h[4]),
            status: u16::from_be_bytes([h[6], h[7]]),
            body_len: body_len as usize,
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        };
        if header.extras_len + header.key_len > header.body_len {
            return Err(ProtocolError::BadBodyLength(body_len));
        }
        Ok(Some(header))
    }

    pub(super) fn value_len(&self) -> usize {
        self.body_len - self.extras_len - self.key_len
    }

    /// Extras, key and value of a packet whose body is entirely in `buf`.
    pub(super) fn body<'a>(&self, buf: &'a [u8]) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
        let key_at = HEADER_LEN + self.extras_len;
        let value_at = key_at + self.key_len;
        Some((
            buf.get(HEADER_LEN..key_at)?,
            buf.get(key_at..value_at)?,
            buf.get(value_at..HEADER_LEN + self.body_len)?,
        ))
    }
}

/// A packet to write: everything but the magic and the lengths.
#[derive(Clone, Copy)]
pub(super) struct Packet<'a> {
    pub(super) opcode: u8,
    /// Status in a response, vbucket (always 0) in a request.
    pub(super) status: u16,
    pub(super) opaque: u32,
    pub(super) cas: u64,
    pub(super) extras: &'a [u8],
    pub(super) key: &'a [u8],
    pub(super) value: &'a [u8],
}

impl<'a> Packet<'a> {
    pub(super) fn new(opcode: u8, opaque: u32) -> Packet<'a> {
        Packet {
            opcode,
            status: status::NO_ERROR,
            opaque,
            cas: 0,
            extras: &[],
            key: &[],
            value: &[],
        }
    }

    /// Append the packet to `out`, or write nothing if a length overflows its
    /// header field.
    pub(super) fn write(&self, magic: u8, out: &mut BytesMut) -> Result<(), Unsupported> {
        let key_len =
            u16::try_from(self.key.len()).map_err(|_| Unsupported("a key over 64 KiB"))?;
        let extras_len =
            u8::try_from(self.extras.len()).map_err(|_| Unsupported("extras over 255 bytes"))?;
        let body_len = u32::try_from(self.extras.len() + self.key.len() + self.value.len())
            .map_err(|_| Unsupported("a body over 4 GiB"))?;
        out.reserve(HEADER_LEN + body_len as usize);
        out.put_u8(magic);
        out.put_u8(self.opcode);
        out.put_u16(key_len);
        out.put_u8(extras_len);
        out.put_u8(0); // data type: raw bytes
        out.put_u16(self.status);
        out.put_u32(body_len);
        out.put_u32(self.opaque);
        out.put_u64(self.cas);
        out.put_slice(self.extras);
        out.put_slice(self.key);
        out.put_slice(self.value);
        Ok(())
    }
}
