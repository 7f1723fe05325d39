//! memcached's wire protocols, sans-IO.
//!
//! Bytes in, `(request, consumed) | Incomplete | Reject | fatal error` out; a
//! [`Response`] plus the request's [`Frame`] in, bytes out. Nothing in here
//! touches a socket, a clock or tokio, so every rule is unit-testable.
//!
//! - [`text`]: classic text commands.
//! - [`meta`]: `mg ms md ma mn me`.
//! - `line`: the line discipline text and meta share; [`parse`] splits the
//!   line and picks the dialect by the command name.
//! - [`binary`]: the binary protocol, both the server side (node, proxy's
//!   client side) and the client side (proxy's upstream).
//! - [`sasl`]: SASL PLAIN payloads.

pub mod binary;
pub mod input;
mod line;
pub mod meta;

pub mod request;
pub mod response;
pub mod sasl;
#[cfg(test)]
pub(crate) mod test_util;
pub mod text;

use bytes::BytesMut;

/// `n` in decimal without `fmt` or the heap, for the store's numbers too.
pub(crate) use line::decimal;
use line::{Line, Unencodable};
use request::TextFrame;
pub use request::{Command, Frame, Request};
pub use response::{ErrorReply, Found, Response};

/// Longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;
/// A text line longer than this without a newline closes the connection.
pub const MAX_LINE_LEN: usize = 2048;
/// The hosted service's limit on key + value.
pub const DEFAULT_MAX_ITEM_SIZE: usize = 1024 * 1024;

/// Limits enforced while parsing, before a value is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Key + value must not exceed this.
    pub max_item_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
        }
    }
}

/// Which protocol a connection speaks; its first byte decides (0x80 = binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Classic text commands and meta commands, freely mixed.
    Text,
    Binary,
}

impl Dialect {
    /// Decide from the first byte a client sent.
    pub fn detect(first: u8) -> Dialect {
        if first == binary::REQUEST_MAGIC {
            Dialect::Binary
        } else {
            Dialect::Text
        }
    }
}

/// The result of trying to parse one request from the front of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request that used the first `usize` bytes.
    Request(Request, usize),
    /// The buffer holds only a prefix of a request: read more.
    Incomplete,
    /// A bad or refused request the connection survives: answer `error` framed
    /// by `frame`, drop `consumed` bytes now, then discard the next `skip`
    /// bytes as they arrive (an over-size value) without buffering them.
    Reject {
        frame: Frame,
        error: ErrorReply,
        consumed: usize,
        skip: usize,
        /// The key of a refused over-size `set`: memcached unlinks its old
        /// value so that no stale data survives a failed overwrite.
        unlink: Option<request::Key>,
    },
}

/// Input after which the stream cannot be resynchronised: close the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("client sent a line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("bad binary magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("binary body length {0} is inconsistent with its header")]
    BadBodyLength(u32),
    /// memcached hangs up on an HTTP request line without a reply: its guard
    /// against cross-protocol requests a browser can be tricked into sending.
    #[error("client sent an HTTP request line")]
    HttpRequest,
}

/// Parse one request in the connection's dialect.
pub fn parse(dialect: Dialect, buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    match dialect {
        Dialect::Text => parse_line(buf, limits),
        Dialect::Binary => binary::parse_request(buf, limits),
    }
}

/// Parse one classic or meta command: they share a connection and a line
/// discipline, and the command name says which of them reads the line.
fn parse_line(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some(line) = Line::split(buf)? else {
        return Ok(Parsed::Incomplete);
    };
    Ok(match line.tokens.get(0) {
        Some(b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me") => meta::parse_line(&line, limits),
        _ if text::is_http_request(&line) => return Err(ProtocolError::HttpRequest),
        _ => text::parse_line(&line, limits),
    })
}

/// Write `req` as a classic text command (`Frame::Text`) or a meta command
/// (`Frame::Meta`), such that [`parse`] returns `req` again.
pub fn encode_request(req: &Request, out: &mut BytesMut) -> Result<(), Unencodable> {
    match &req.frame {
        Frame::Text(_) => text::encode_request(req, out),
        Frame::Meta(frame) => meta::client::encode_line(frame, &req.command, None, out),
        Frame::Binary { .. } => Err(Unencodable("binary frame")),
    }
}

/// [`encode`], consuming `response`: a text multi-key get's values are
/// freed as they are copied (`text::encode_owned`).
pub fn encode_owned(frame: &Frame, key: Option<&[u8]>, response: Response, out: &mut BytesMut) {
    match frame {
        Frame::Text(f) => text::encode_owned(f, response, out),
        _ => encode(frame, key, &response, out),
    }
}

/// Encode `response` as the answer to a request framed by `frame`. `key` is
/// the request's key, which meta replies echo for `k` (and `me` always), and
/// binary GETK/GATK misses echo.
pub fn encode(frame: &Frame, key: Option<&[u8]>, response: &Response, out: &mut BytesMut) {
    match frame {
        Frame::Text(f) => text::encode(f, response, out),
        Frame::Meta(f) => {
            if !meta::encode_keyed(f, key, response, out) {
                // memcached answers a meta command's errors, and the replies
                // meta has no word for, in text.
                text::encode(&TextFrame::default(), response, out)
            }
        }
        Frame::Binary { opcode, opaque } => {
            binary::encode_keyed_response(*opcode, *opaque, key, response, out)
        }
    }
}
