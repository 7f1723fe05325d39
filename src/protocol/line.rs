//! The line discipline that classic text and meta commands share: one
//! command line split into tokens, its data block, and the number, key and
//! decimal helpers both dialects read and write lines with.
//!
//! [`super::parse`] splits the line and hands it to [`super::text`] or
//! [`super::meta`] by its command name, so neither dialect needs the other.

use bytes::{BufMut, Bytes, BytesMut};
use memchr::arch::all::memchr::One;

use super::{
    request::{Command, Exptime, Frame, Request, TextFrame},
    response::ErrorReply,
    Limits, Parsed, ProtocolError, MAX_KEY_LEN, MAX_LINE_LEN,
};

/// Longest retrieval line (`get`, `gets`, `gat`, `gats`) before the
/// connection is closed. memcached lets multi-get lines grow without bound;
/// a bound keeps one client from holding unbounded memory, and 256 KiB is
/// still over a thousand 250-byte keys.
pub const MAX_RETRIEVAL_LINE_LEN: usize = 256 * 1024;

/// memcached's answer to a malformed command line.
pub(crate) const BAD_FORMAT: &str = "bad command line format";

/// A request that [`super::encode_request`] cannot write so that
/// [`super::parse`] reads it back unchanged (wrong dialect, an option the
/// command cannot carry, or a key or token that would break the line).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("request cannot be encoded as text or meta: {0}")]
pub struct Unencodable(pub &'static str);

/// One command line at the front of the buffer, split into tokens, plus the
/// bytes after it (where a storage command's data block starts).
pub(crate) struct Line<'a> {
    /// The line without its `\r\n` or bare `\n`.
    pub(crate) text: &'a [u8],
    pub(crate) tokens: Tokens<'a>,
    /// Bytes the line occupies, newline included.
    pub(crate) len: usize,
    /// Everything in the buffer after the line.
    rest: &'a [u8],
}

impl<'a> Line<'a> {
    /// Find the first line in `buf`. Only a bounded prefix is searched, so a
    /// slowly arriving line costs at most `MAX_LINE_LEN` bytes of scanning per
    /// call (a multi-get at most `MAX_RETRIEVAL_LINE_LEN`).
    pub(crate) fn split(buf: &'a [u8]) -> Result<Option<Line<'a>>, ProtocolError> {
        let newline = match find_newline(buf, MAX_LINE_LEN) {
            Some(at) => at,
            None if buf.len() < MAX_LINE_LEN => return Ok(None),
            None if !starts_retrieval(buf) => return Err(ProtocolError::LineTooLong),
            None => match find_newline(buf, MAX_RETRIEVAL_LINE_LEN) {
                Some(at) => at,
                None if buf.len() < MAX_RETRIEVAL_LINE_LEN => return Ok(None),
                None => return Err(ProtocolError::LineTooLong),
            },
        };
        let (head, rest) = buf.split_at(newline + 1);
        let text = head.strip_suffix(b"\n").unwrap_or(head);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        // memcached reads the command line as a C string, which ends at the
        // first NUL: `get \0` is a `get` with no key, `ERROR`.
        let text = One::new(0).find(text).map_or(text, |at| &text[..at]);
        Ok(Some(Line {
            text,
            tokens: Tokens::new(text),
            len: head.len(),
            rest,
        }))
    }

    /// A text frame whose `noreply` is set the way memcached's
    /// `set_noreply_maybe` does: by the last token alone, before the line is
    /// validated, so that it also silences this line's own error.
    pub(crate) fn noreply_frame(&self) -> TextFrame {
        TextFrame {
            noreply: self.tokens.len() > 1 && self.tokens.last() == Some(b"noreply"),
            with_cas: false,
        }
    }

    pub(crate) fn request(&self, command: Command, frame: TextFrame) -> Parsed {
        Parsed::Request(
            Request {
                command,
                frame: Frame::Text(frame),
            },
            self.len,
        )
    }

    pub(crate) fn client_error(&self, frame: TextFrame, msg: &str) -> Parsed {
        self.reject(Frame::Text(frame), client_error(msg))
    }

    /// Refuse the line (consuming it) with `error`.
    pub(crate) fn reject(&self, frame: Frame, error: ErrorReply) -> Parsed {
        self.reject_skipping(frame, error, 0)
    }

    /// Refuse the line and have the session discard the `skip` bytes of data
    /// that follow it, without buffering them.
    pub(crate) fn reject_skipping(&self, frame: Frame, error: ErrorReply, skip: usize) -> Parsed {
        Parsed::Reject {
            frame,
            error,
            consumed: self.len,
            skip,
            unlink: None,
        }
    }

    /// The over-size check that must run before any value is buffered:
    /// `Some(reject)` when `key` + `len` value bytes exceed the item limit.
    pub(crate) fn refuse_oversize(
        &self,
        frame: Frame,
        key: &[u8],
        len: usize,
        unlink: bool,
        limits: &Limits,
    ) -> Option<Parsed> {
        if key.len().saturating_add(len) <= limits.max_item_size {
            return None;
        }
        Some(Parsed::Reject {
            frame,
            error: ErrorReply::TooLarge,
            consumed: self.len,
            skip: len.saturating_add(2),
            unlink: unlink.then(|| Bytes::copy_from_slice(key)),
        })
    }

    /// Take the `len`-byte data block (plus `\r\n`) after the line and build
    /// the request from it; Incomplete until it is all buffered, and
    /// `CLIENT_ERROR bad data chunk` (consuming line and block) if the block
    /// does not end in `\r\n`.
    pub(crate) fn with_block(
        &self,
        frame: Frame,
        len: usize,
        command: impl FnOnce(Bytes) -> Command,
    ) -> Parsed {
        let (Some(data), Some(end)) = (self.rest.get(..len), self.rest.get(len..len + 2)) else {
            return Parsed::Incomplete;
        };
        let consumed = self.len + len + 2;
        if end != b"\r\n" {
            return Parsed::Reject {
                frame,
                error: client_error("bad data chunk"),
                consumed,
                skip: 0,
                unlink: None,
            };
        }
        let command = command(Bytes::copy_from_slice(data));
        Parsed::Request(Request { command, frame }, consumed)
    }
}

/// Where the first `\n` in the first `limit` bytes of `buf` is.
pub(crate) fn find_newline(buf: &[u8], limit: usize) -> Option<usize> {
    memchr::memchr(b'\n', buf.get(..limit).unwrap_or(buf))
}

/// Whether an unterminated line is a retrieval, which may exceed
/// `MAX_LINE_LEN` (memcached allows a few leading spaces, as do we).
fn starts_retrieval(buf: &[u8]) -> bool {
    let start = buf.iter().take(100).take_while(|&&b| b == b' ').count();
    let buf = buf.get(start..).unwrap_or_default();
    [b"get ".as_slice(), b"gets ", b"gat ", b"gats "]
        .iter()
        .any(|prefix| buf.starts_with(prefix))
}

/// memcached's tokens are separated by spaces only (a tab is part of a token).
pub(crate) fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

/// At most this many tokens of a line are kept; every command but a
/// multi-get has far fewer (memcached's MAX_TOKENS).
const MAX_TOKENS: usize = 24;

/// The first `MAX_TOKENS` tokens of a line, and how many there are in all.
pub(crate) struct Tokens<'a> {
    kept: [&'a [u8]; MAX_TOKENS],
    count: usize,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Self {
        let mut tokens = Tokens {
            kept: [&[]; MAX_TOKENS],
            count: 0,
        };
        // `words`, a word at a time: every request is split here, and a
        // loop over its bytes was a fifth of parsing one (callgrind,
        // benches/STORE.md). memchr's portable search, not its SIMD one,
        // whose dispatch costs more than a short line's scan.
        let mut from = 0;
        for at in One::new(b' ').iter(line) {
            tokens.push(line.get(from..at));
            from = at + 1;
        }
        tokens.push(line.get(from..));
        tokens
    }

    /// Keep `word` unless it is empty (spaces in a row).
    fn push(&mut self, word: Option<&'a [u8]>) {
        let Some(word) = word.filter(|w| !w.is_empty()) else {
            return;
        };
        if let Some(slot) = self.kept.get_mut(self.count) {
            *slot = word;
        }
        self.count += 1;
    }

    /// How many tokens the line holds (possibly more than are kept).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Whether every token of the line is kept.
    pub(crate) fn all_kept(&self) -> bool {
        self.count <= MAX_TOKENS
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a [u8]> {
        (i < self.count)
            .then(|| self.kept.get(i).copied())
            .flatten()
    }

    /// The last kept token.
    pub(crate) fn last(&self) -> Option<&'a [u8]> {
        self.get(self.count.min(MAX_TOKENS).checked_sub(1)?)
    }

    /// The kept tokens, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.kept.iter().take(self.count).copied()
    }
}

/// A key memcached's text protocol accepts: 1..=250 bytes that cannot break
/// the line apart (no space, CR, LF or NUL). protocol.txt asks clients not to
/// use other control characters either, but memcached accepts them and real
/// tools depend on that: memcaslap's keys start with eight 0x10 bytes.
pub(crate) fn valid_key(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.iter().all(|&b| !matches!(b, b' ' | b'\r' | b'\n' | 0))
}

pub(crate) fn client_error(msg: &str) -> ErrorReply {
    ErrorReply::Client(msg.to_owned())
}

/// An unsigned decimal (memcached's `safe_strtoull`): digits only.
pub(crate) fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    // By hand rather than through `str::parse`: every request has a number
    // or two, and this is a third of the instructions.
    token.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        (digit <= 9).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

pub(crate) fn parse_u32(token: &[u8]) -> Option<u32> {
    parse_u64(token)?.try_into().ok()
}

/// A signed 32-bit decimal (memcached's `safe_strtol`), as used for expiry
/// times: memcached refuses anything outside `i32`.
pub(crate) fn parse_exptime(token: &[u8]) -> Option<Exptime> {
    let (negative, digits) = match token.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, token),
    };
    let magnitude = i64::try_from(parse_u64(digits)?).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i32::try_from(value).ok().map(Exptime::from)
}

/// A value length: memcached reads it as an `i32` and refuses negative
/// values and values within 2 of `i32::MAX` as a bad command line (without
/// swallowing anything, since it cannot know how much to swallow).
pub(crate) fn parse_value_len(token: &[u8]) -> Option<usize> {
    let len = parse_exptime(token)?;
    if len < 0 || len > i64::from(i32::MAX - 2) {
        return None;
    }
    usize::try_from(len).ok()
}

/// Write `n` in decimal without going through `fmt` or the heap.
pub(crate) fn put_u64(out: &mut BytesMut, n: u64) {
    // Most flags are 0: one byte, without the loop.
    if n < 10 {
        out.put_u8(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    out.put_slice(decimal(n, &mut digits));
}

pub(crate) fn put_usize(out: &mut BytesMut, n: usize) {
    put_u64(out, n as u64);
}

pub(crate) fn put_i64(out: &mut BytesMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, n.unsigned_abs());
}

/// `n` in decimal, written at the end of `digits`; returns the digits.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut first = digits.len();
    loop {
        first -= 1;
        digits[first] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[first..];
        }
    }
}

#[cfg(test)]
mod tests;
