//! A connection's input buffer: dialect detection, one request at a time,
//! and the discarding of refused over-size values. Shared by the node's and
//! the proxy's client sessions; still sans-IO (the caller does the reads).

use bytes::{Buf, BytesMut};

use super::request::Key;
use super::{Dialect, ErrorReply, Frame, Limits, Parsed, ProtocolError, Request};

/// Initial read buffer; small so that thousands of idle connections are cheap.
const INITIAL: usize = 4 * 1024;
/// Buffers that grew past this (a big value) are released once drained.
const KEEP: usize = 64 * 1024;
/// Replies should be written out once this much is pending, even mid-batch.
pub const FLUSH_THRESHOLD: usize = 256 * 1024;

/// What the buffered input holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Request(Request),
    /// A request refused by the parser: answer `error`; for an over-size set,
    /// `unlink` names the key whose old value must go.
    Reject {
        frame: Frame,
        error: ErrorReply,
        unlink: Option<Key>,
    },
}

/// Bytes read from a client and not yet parsed.
#[derive(Debug)]
pub struct Input {
    buf: BytesMut,
    dialect: Option<Dialect>,
    /// Bytes of a refused value still to be discarded as they arrive.
    skip: usize,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            buf: BytesMut::with_capacity(INITIAL),
            dialect: None,
            skip: 0,
        }
    }
}

impl Input {
    /// The buffer to read into, with room reserved.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(INITIAL);
        }
        &mut self.buf
    }

    /// The next request, if a whole one is buffered. The connection's first
    /// byte decides its dialect (0x80: binary).
    pub fn next(&mut self, limits: &Limits) -> Result<Option<Next>, ProtocolError> {
        self.discard_skipped();
        if self.skip > 0 {
            return Ok(None);
        }
        let Some(&first) = self.buf.first() else {
            self.release_if_drained();
            return Ok(None);
        };
        let dialect = *self.dialect.get_or_insert_with(|| Dialect::detect(first));
        match super::parse(dialect, &self.buf, limits)? {
            Parsed::Incomplete => Ok(None),
            Parsed::Request(request, used) => {
                self.buf.advance(used);
                Ok(Some(Next::Request(request)))
            }
            Parsed::Reject {
                frame,
                error,
                consumed,
                skip,
                unlink,
            } => {
                self.buf.advance(consumed);
                self.skip = skip;
                self.discard_skipped();
                Ok(Some(Next::Reject {
                    frame,
                    error,
                    unlink,
                }))
            }
        }
    }

    /// Drop the part of a refused value that has arrived, without keeping it.
    fn discard_skipped(&mut self) {
        let k = self.skip.min(self.buf.len());
        self.buf.advance(k);
        self.skip -= k;
    }

    /// A buffer that grew for a big value is given back once drained.
    fn release_if_drained(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP {
            self.buf = BytesMut::with_capacity(INITIAL);
        }
    }
}

/// After writing `out`: clear it, and give back the memory a big reply took.
pub fn written(out: &mut BytesMut) {
    out.clear();
    if out.capacity() > KEEP {
        *out = BytesMut::new();
    }
}

#[cfg(test)]
mod tests;
