//! The server side of the classic text protocol: parse a client's command,
//! write the reply.
//!
//! The parser follows memcached's own rules rather than a tidier reading of
//! `protocol.txt`, because clients depend on them: commands are split on
//! spaces only, a wrong number of tokens is `ERROR`, a `noreply` as the last
//! token silences even the error that the same line provokes, and `delete`
//! still accepts the legacy `0` hold time.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    line::{
        parse_exptime, parse_u32, parse_u64, parse_value_len, put_u64, put_usize, valid_key, words,
        Line, BAD_FORMAT,
    },
    request::{Arith, Command, Delete, Exptime, Frame, Get, Keys, Store, StoreMode, TextFrame},
    response::{ErrorReply, Found, Response},
    Limits, Parsed,
};

/// Written for a reply that has no text form (a dialect mix-up upstream), so
/// that the client still sees exactly one reply for its command.
const UNEXPECTED_REPLY: &[u8] = b"SERVER_ERROR unexpected reply";

/// Parse the classic command on `line`.
pub(crate) fn parse_line(line: &Line, limits: &Limits) -> Parsed {
    let Some(name) = line.tokens.get(0) else {
        // An empty (or all-space) line.
        return unknown_command(line);
    };
    match name {
        b"get" => parse_retrieval(line, false, false),
        b"gets" => parse_retrieval(line, true, false),
        b"gat" => parse_retrieval(line, false, true),
        b"gats" => parse_retrieval(line, true, true),
        b"set" => parse_storage(line, StoreMode::Set, false, limits),
        b"add" => parse_storage(line, StoreMode::Add, false, limits),
        b"replace" => parse_storage(line, StoreMode::Replace, false, limits),
        b"append" => parse_storage(line, StoreMode::Append, false, limits),
        b"prepend" => parse_storage(line, StoreMode::Prepend, false, limits),
        b"cas" => parse_storage(line, StoreMode::Set, true, limits),
        b"incr" => parse_arith(line, true),
        b"decr" => parse_arith(line, false),
        b"delete" => parse_delete(line),
        b"touch" => parse_touch(line),
        b"flush_all" => parse_flush_all(line),
        b"verbosity" => parse_verbosity(line),
        b"version" => line.request(Command::Version, TextFrame::default()),
        b"quit" => line.request(Command::Quit, TextFrame::default()),
        b"stats" => parse_stats(line),
        b"cache_memlimit" => parse_cache_memlimit(line),
        b"slabs" => parse_slabs(line),
        _ => unknown_command(line),
    }
}

/// Whether `line` is what memcached 1.6.18 hangs up on: a command it does not
/// know whose last token starts with `HTTP/` (`GET / HTTP/1.1`, `DELETE
/// HTTP/1.1`). Its dispatcher answers `ERROR` instead for a one-byte command,
/// for any command starting with a letter of `acdgist` (those branches end in
/// their own `ERROR`), for a two-byte `m…` (meta), and for the commands it
/// knows; measured against memcached 1.6.18.
pub(crate) fn is_http_request(line: &Line) -> bool {
    const KNOWN: &[&[u8]] = &[
        b"flush_all",
        b"version",
        b"verbosity",
        b"quit",
        b"lru",
        b"lru_crawler",
        b"watch",
    ];
    let (Some(name), Some(last)) = (line.tokens.get(0), line.tokens.last()) else {
        return false;
    };
    let first = name.first().copied().unwrap_or_default();
    name.len() >= 2
        && !b"acdgist".contains(&first)
        && (first != b'm' || name.len() != 2)
        && !KNOWN.contains(&name)
        && last.starts_with(b"HTTP/")
}

/// `get|gets <key>+` and `gat|gats <exptime> <key>+`.
fn parse_retrieval(line: &Line, with_cas: bool, touch: bool) -> Parsed {
    let frame = TextFrame {
        noreply: false,
        with_cas,
    };
    if line.tokens.len() < 2 {
        return unknown_command(line);
    }
    // A multi-get may hold more tokens than `Tokens` keeps: its keys are then
    // read from the line itself.
    let read = match line.tokens.all_kept() {
        true => retrieval_args(line.tokens.iter().skip(1), touch, line.tokens.len()),
        false => retrieval_args(words(line.text).skip(1), touch, line.tokens.len()),
    };
    match read {
        Ok((touch, keys)) => {
            let get = Get {
                keys,
                touch,
                ..Get::default()
            };
            line.request(Command::Get(get), frame)
        }
        Err(msg) => line.client_error(frame, msg),
    }
}

/// A retrieval's exptime (`gat`, `gats`) and keys, from the tokens after
/// its name (`count` in all, the name included).
fn retrieval_args<'a>(
    mut words: impl Iterator<Item = &'a [u8]>,
    touch: bool,
    count: usize,
) -> Result<(Option<Exptime>, Keys), &'static str> {
    let touch = match touch {
        true => Some(
            words
                .next()
                .and_then(parse_exptime)
                .ok_or("invalid exptime argument")?,
        ),
        false => None,
    };
    let mut keys = Keys::with_capacity(count.saturating_sub(1));
    for word in words {
        if !valid_key(word) {
            return Err(BAD_FORMAT);
        }
        keys.push(Bytes::copy_from_slice(word));
    }
    Ok((touch, keys))
}

/// `<set|add|replace|append|prepend> <key> <flags> <exptime> <bytes> [noreply]`
/// and `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`.
fn parse_storage(line: &Line, mode: StoreMode, with_cas: bool, limits: &Limits) -> Parsed {
    let arity = if with_cas { 6 } else { 5 };
    let n = line.tokens.len();
    if n != arity && n != arity + 1 {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    let t = &line.tokens;
    let Some(key) = t.get(1).filter(|k| valid_key(k)) else {
        return line.client_error(frame, BAD_FORMAT);
    };
    let (Some(flags), Some(exptime), Some(len)) = (
        t.get(2).and_then(parse_u32),
        t.get(3).and_then(parse_exptime),
        t.get(4).and_then(parse_value_len),
    ) else {
        return line.client_error(frame, BAD_FORMAT);
    };
    let cas = if with_cas {
        match t.get(5).and_then(parse_u64) {
            Some(cas) => Some(cas),
            None => return line.client_error(frame, BAD_FORMAT),
        }
    } else {
        None
    };
    // memcached 1.6.18 unlinks the old value after refusing an over-size
    // value only for plain `set` (NREAD_SET; `cas` is NREAD_CAS): a failed
    // overwrite must not leave the old value readable.
    let unlink = mode == StoreMode::Set && !with_cas;
    if let Some(too_large) = line.refuse_oversize(Frame::Text(frame), key, len, unlink, limits) {
        return too_large;
    }
    line.with_block(Frame::Text(frame), len, |data| {
        Command::Store(Store {
            mode,
            key: Bytes::copy_from_slice(key),
            flags,
            exptime,
            data,
            cas,
            invalidate: false,
            vivify: None,
        })
    })
}

/// `incr|decr <key> <delta> [noreply]`.
fn parse_arith(line: &Line, incr: bool) -> Parsed {
    if !(3..=4).contains(&line.tokens.len()) {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    let Some(key) = line.tokens.get(1).filter(|k| valid_key(k)) else {
        return line.client_error(frame, BAD_FORMAT);
    };
    let Some(delta) = line.tokens.get(2).and_then(parse_u64) else {
        return line.client_error(frame, "invalid numeric delta argument");
    };
    let arith = Arith {
        key: Bytes::copy_from_slice(key),
        incr,
        delta,
        cas: None,
        vivify: None,
        initial: 0,
        touch: None,
    };
    line.request(Command::Arith(arith), frame)
}

/// `delete <key> [0] [noreply]`: the `0` is a hold time from memcached 1.2
/// that old clients still send; any other extra token is refused.
fn parse_delete(line: &Line) -> Parsed {
    let n = line.tokens.len();
    if !(2..=4).contains(&n) {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    if n > 2 {
        let hold_is_zero = line.tokens.get(2) == Some(b"0");
        let valid = (n == 3 && (hold_is_zero || frame.noreply))
            || (n == 4 && hold_is_zero && frame.noreply);
        if !valid {
            return line.client_error(
                frame,
                "bad command line format.  Usage: delete <key> [noreply]",
            );
        }
    }
    let Some(key) = line.tokens.get(1).filter(|k| valid_key(k)) else {
        return line.client_error(frame, BAD_FORMAT);
    };
    let delete = Delete {
        key: Bytes::copy_from_slice(key),
        cas: None,
        invalidate: false,
        exptime: None,
    };
    line.request(Command::Delete(delete), frame)
}

/// `touch <key> <exptime> [noreply]`.
fn parse_touch(line: &Line) -> Parsed {
    if !(3..=4).contains(&line.tokens.len()) {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    let Some(key) = line.tokens.get(1).filter(|k| valid_key(k)) else {
        return line.client_error(frame, BAD_FORMAT);
    };
    let Some(exptime) = line.tokens.get(2).and_then(parse_exptime) else {
        return line.client_error(frame, "invalid exptime argument");
    };
    let command = Command::Touch {
        key: Bytes::copy_from_slice(key),
        exptime,
    };
    line.request(command, frame)
}

/// `flush_all [delay] [noreply]`.
fn parse_flush_all(line: &Line) -> Parsed {
    let n = line.tokens.len();
    if n > 3 {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    let delay = if n == if frame.noreply { 2 } else { 1 } {
        0
    } else {
        match line.tokens.get(1).and_then(parse_exptime) {
            Some(delay) => delay,
            None => return line.client_error(frame, "invalid exptime argument"),
        }
    };
    line.request(Command::FlushAll { delay }, frame)
}

/// `verbosity <level> [noreply]`: validated, then ignored.
fn parse_verbosity(line: &Line) -> Parsed {
    if !(2..=3).contains(&line.tokens.len()) {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    if line.tokens.get(1).and_then(parse_u32).is_none() {
        return line.client_error(frame, BAD_FORMAT);
    }
    line.request(Command::Verbosity, frame)
}

/// `cache_memlimit <megabytes> [noreply]`, read as memcached reads it, and
/// then refused: a cache's memory limit is its operator's to set, not the
/// tenant's (docs/node.md, "Differences from memcached").
fn parse_cache_memlimit(line: &Line) -> Parsed {
    if !(2..=3).contains(&line.tokens.len()) {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    if line.tokens.get(1).and_then(parse_u32).is_none() {
        return line.reject(Frame::Text(frame), ErrorReply::UnknownCommand);
    }
    line.client_error(frame, "cache_memlimit not allowed")
}

/// `slabs automove <level>`, read as memcached reads it, and then refused:
/// memgate has no slab classes, and a tenant may not change the server
/// (docs/node.md). Every other `slabs` line is `ERROR`, as memcached's
/// `slabs reassign` would be with reassignment off, but for its own reason.
fn parse_slabs(line: &Line) -> Parsed {
    if line.tokens.len() < 3 || line.tokens.get(1) != Some(b"automove") {
        return unknown_command(line);
    }
    let frame = line.noreply_frame();
    match line.tokens.get(2) {
        // memcached takes `ratio` when it has a fourth token.
        Some(b"ratio") if line.tokens.len() < 4 => {
            line.reject(Frame::Text(frame), ErrorReply::UnknownCommand)
        }
        Some(b"ratio") => line.client_error(frame, "slabs automove not allowed"),
        Some(level) => match parse_u32(level) {
            None => line.client_error(frame, BAD_FORMAT),
            // memcached knows levels 0 to 2 only.
            Some(3..) => line.reject(Frame::Text(frame), ErrorReply::UnknownCommand),
            Some(_) => line.client_error(frame, "slabs automove not allowed"),
        },
        None => unknown_command(line),
    }
}

/// `stats [group ...]`: the arguments, joined by single spaces, name the group.
fn parse_stats(line: &Line) -> Parsed {
    let args: Vec<&[u8]> = line.tokens.iter().skip(1).collect();
    let group = (!args.is_empty()).then(|| Bytes::from(args.join(&b' ')));
    line.request(Command::Stats { group }, TextFrame::default())
}

fn unknown_command(line: &Line) -> Parsed {
    line.reject(
        Frame::Text(TextFrame::default()),
        ErrorReply::UnknownCommand,
    )
}

/// [`encode`], consuming the response: a multi-key get's values are
/// dropped one by one as they are copied, into room reserved for them all
/// at once, so a reply of many large values is not held twice over (nor
/// three times, while `out` doubles) as it is encoded.
pub fn encode_owned(frame: &TextFrame, response: Response, out: &mut BytesMut) {
    match response {
        Response::Get(items) if !frame.noreply => {
            // "VALUE <key> <flags> <bytes> <cas>\r\n": at most 70 bytes besides
            // the key, then the data and its CRLF.
            let room: usize = items
                .iter()
                .flatten()
                .map(|found| found.key.len() + found.data.len() + 72)
                .sum();
            out.reserve(room + b"END\r\n".len());
            for found in items.into_iter().flatten() {
                put_value(frame, &found, out);
            }
            put_end(out);
        }
        response => encode(frame, &response, out),
    }
}

/// One `VALUE` of a get's reply, with its data: the node writes each hit
/// with it straight from its store, then [`put_end`].
pub fn put_value<B: AsRef<[u8]>>(frame: &TextFrame, found: &Found<B>, out: &mut BytesMut) {
    let data = found.data.as_ref();
    out.put_slice(b"VALUE ");
    out.put_slice(found.key.as_ref());
    out.put_u8(b' ');
    put_u64(out, found.flags.into());
    out.put_u8(b' ');
    put_usize(out, data.len());
    if frame.with_cas {
        out.put_u8(b' ');
        put_u64(out, found.cas);
    }
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The end of a get's reply, after its values.
pub fn put_end(out: &mut BytesMut) {
    out.put_slice(b"END\r\n");
}

/// Write the reply to a classic text command.
pub fn encode(frame: &TextFrame, response: &Response, out: &mut BytesMut) {
    // memcached's `noreply` silences every reply of the command, errors too.
    if frame.noreply {
        return;
    }
    match response {
        Response::Get(items) => {
            for found in items.iter().flatten() {
                put_value(frame, found, out);
            }
            put_end(out);
        }
        // A good ASCII login is answered like the `set` that carried it.
        Response::Stored { .. } | Response::AuthOk => put_line(out, b"STORED"),
        Response::NotStored => put_line(out, b"NOT_STORED"),
        Response::Exists => put_line(out, b"EXISTS"),
        Response::NotFound | Response::NotFoundCas { .. } => put_line(out, b"NOT_FOUND"),
        Response::Deleted | Response::DeletedCas { .. } => put_line(out, b"DELETED"),
        Response::Touched => put_line(out, b"TOUCHED"),
        Response::Number { value, .. } => {
            put_u64(out, *value);
            out.put_slice(b"\r\n");
        }
        Response::Ok => put_line(out, b"OK"),
        Response::Reset => put_line(out, b"RESET"),
        Response::Version(version) => {
            out.put_slice(b"VERSION ");
            put_line(out, version.as_bytes());
        }
        Response::Stats(pairs) => {
            for (name, value) in pairs {
                out.put_slice(b"STAT ");
                out.put_slice(name.as_bytes());
                out.put_u8(b' ');
                put_line(out, value.as_bytes());
            }
            out.put_slice(b"END\r\n");
        }
        Response::Dump(items) => {
            for (key, info) in items {
                out.put_slice(b"ITEM ");
                // A key stored in base64 (meta `b`) may hold bytes that
                // would break the line; it is listed in base64, as it was
                // given.
                match valid_key(key) {
                    true => out.put_slice(key),
                    false => out.put_slice(BASE64.encode(key).as_bytes()),
                }
                out.put_u8(b' ');
                put_line(out, info.as_bytes());
            }
            out.put_slice(b"END\r\n");
        }
        Response::Error(error) => put_line(out, error.text().as_bytes()),
        Response::Silent => {}
        Response::Noop
        | Response::MetaDebug(_)
        | Response::SaslMechs(_)
        | Response::AuthContinue(_) => put_line(out, UNEXPECTED_REPLY),
    }
}

fn put_line(out: &mut BytesMut, line: &[u8]) {
    out.put_slice(line);
    out.put_slice(b"\r\n");
}
