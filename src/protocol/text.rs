//! memcached's classic text protocol (1.6.18), sans-IO.
//!
//! [`parse_line`] reads one classic command (and its data block, for storage
//! commands) from a line that [`super::parse`] has split and found not to be
//! a meta command: both dialects share one connection and the line
//! discipline of `protocol::line`. [`encode`] writes a reply; [`encode_request`]
//! writes a request, for the benchmark client and the round-trip tests.
//!
//! The parser follows memcached's own rules rather than a tidier reading of
//! `protocol.txt`, because clients depend on them: commands are split on
//! spaces only, a wrong number of tokens is `ERROR`, a `noreply` as the last
//! token silences even the error that the same line provokes, and `delete`
//! still accepts the legacy `0` hold time.

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    line::{
        parse_exptime, parse_u32, parse_u64, parse_value_len, put_i64, put_u64, put_usize,
        valid_key, words, Line, BAD_FORMAT,
    },
    request::{Arith, Command, Delete, Exptime, Frame, Get, Request, Store, StoreMode, TextFrame},
    response::{ErrorReply, Response},
    Limits, Parsed, MAX_LINE_LEN,
};

pub use super::line::{Unencodable, MAX_RETRIEVAL_LINE_LEN};

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
) -> Result<(Option<Exptime>, Vec<Bytes>), &'static str> {
    let touch = match touch {
        true => Some(
            words
                .next()
                .and_then(parse_exptime)
                .ok_or("invalid exptime argument")?,
        ),
        false => None,
    };
    let mut keys = Vec::with_capacity(count.saturating_sub(1));
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

/// Write the reply to a classic text command.
pub fn encode(frame: &TextFrame, response: &Response, out: &mut BytesMut) {
    // memcached's `noreply` silences every reply of the command, errors too.
    if frame.noreply {
        return;
    }
    match response {
        Response::Get(items) => {
            for found in items.iter().flatten() {
                out.put_slice(b"VALUE ");
                out.put_slice(&found.key);
                out.put_u8(b' ');
                put_u64(out, found.flags.into());
                out.put_u8(b' ');
                put_usize(out, found.data.len());
                if frame.with_cas {
                    out.put_u8(b' ');
                    put_u64(out, found.cas);
                }
                out.put_slice(b"\r\n");
                out.put_slice(&found.data);
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"END\r\n");
        }
        // A good ASCII login is answered like the `set` that carried it.
        Response::Stored { .. } | Response::AuthOk => put_line(out, b"STORED"),
        Response::NotStored => put_line(out, b"NOT_STORED"),
        Response::Exists => put_line(out, b"EXISTS"),
        Response::NotFound => put_line(out, b"NOT_FOUND"),
        Response::Deleted => put_line(out, b"DELETED"),
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
        Response::Error(error) => put_line(out, error.text().as_bytes()),
        Response::Silent => {}
        Response::Noop
        | Response::MetaDebug(_)
        | Response::SaslMechs(_)
        | Response::AuthContinue(_) => put_line(out, UNEXPECTED_REPLY),
    }
}

/// Write `req`, which has a `Frame::Text`, as a classic text command such
/// that [`super::parse`] returns `req` again. [`super::encode_request`] takes
/// any frame.
pub fn encode_request(req: &Request, out: &mut BytesMut) -> Result<(), Unencodable> {
    let Frame::Text(frame) = &req.frame else {
        return Err(Unencodable("not a text frame"));
    };
    let command = &req.command;
    // Only these commands take `noreply`, only retrievals return CAS.
    let takes_noreply = matches!(
        command,
        Command::Store(_)
            | Command::Delete(_)
            | Command::Arith(_)
            | Command::Touch { .. }
            | Command::FlushAll { .. }
            | Command::Verbosity
    );
    if (frame.noreply && !takes_noreply) || (frame.with_cas && !matches!(command, Command::Get(_)))
    {
        return Err(Unencodable("frame option the command cannot carry"));
    }
    let mut line = BytesMut::new();
    let mut data = None;
    match command {
        Command::Get(get) => {
            if get.keys.is_empty()
                || get.vivify.is_some()
                || get.recache_below.is_some()
                || get.no_bump
            {
                return Err(Unencodable("meta-only retrieval options"));
            }
            line.put_slice(match (get.touch.is_some(), frame.with_cas) {
                (false, false) => b"get".as_slice(),
                (false, true) => b"gets",
                (true, false) => b"gat",
                (true, true) => b"gats",
            });
            if let Some(exptime) = get.touch {
                put_word_i64(&mut line, exptime);
            }
            for key in &get.keys {
                put_word_key(&mut line, key)?;
            }
        }
        Command::Store(store) => {
            if store.invalidate || store.vivify.is_some() {
                return Err(Unencodable("meta-only storage options"));
            }
            line.put_slice(match (store.mode, store.cas) {
                (StoreMode::Set, None) => b"set".as_slice(),
                (StoreMode::Set, Some(_)) => b"cas",
                (StoreMode::Add, None) => b"add",
                (StoreMode::Replace, None) => b"replace",
                (StoreMode::Append, None) => b"append",
                (StoreMode::Prepend, None) => b"prepend",
                (_, Some(_)) => return Err(Unencodable("cas with a mode other than set")),
            });
            put_word_key(&mut line, &store.key)?;
            put_word_u64(&mut line, store.flags.into());
            put_word_i64(&mut line, store.exptime);
            put_word_u64(&mut line, store.data.len() as u64);
            if let Some(cas) = store.cas {
                put_word_u64(&mut line, cas);
            }
            data = Some(&store.data);
        }
        Command::Delete(delete) => {
            if delete.cas.is_some() || delete.invalidate || delete.exptime.is_some() {
                return Err(Unencodable("meta-only delete options"));
            }
            line.put_slice(b"delete");
            put_word_key(&mut line, &delete.key)?;
        }
        Command::Arith(arith) => {
            if arith.cas.is_some()
                || arith.vivify.is_some()
                || arith.touch.is_some()
                || arith.initial != 0
            {
                return Err(Unencodable("meta-only arithmetic options"));
            }
            line.put_slice(if arith.incr { b"incr" } else { b"decr" });
            put_word_key(&mut line, &arith.key)?;
            put_word_u64(&mut line, arith.delta);
        }
        Command::Touch { key, exptime } => {
            line.put_slice(b"touch");
            put_word_key(&mut line, key)?;
            put_word_i64(&mut line, *exptime);
        }
        Command::FlushAll { delay } => {
            line.put_slice(b"flush_all");
            if *delay != 0 {
                put_word_i64(&mut line, *delay);
            }
        }
        Command::Version => line.put_slice(b"version"),
        // The level is not kept; any valid one reads back as `Verbosity`.
        Command::Verbosity => line.put_slice(b"verbosity 1"),
        Command::Stats { group } => {
            line.put_slice(b"stats");
            if let Some(group) = group {
                let canonical = words(group).eq(group.split(|&b| b == b' '));
                if !canonical || group.iter().any(u8::is_ascii_control) {
                    return Err(Unencodable(
                        "stats group is not single-space separated words",
                    ));
                }
                line.put_u8(b' ');
                line.put_slice(group);
            }
        }
        Command::Quit => line.put_slice(b"quit"),
        Command::Noop
        | Command::MetaDebug { .. }
        | Command::SaslList
        | Command::SaslAuth { .. }
        | Command::SaslStep { .. } => return Err(Unencodable("no classic text form")),
    }
    if frame.noreply {
        line.put_slice(b" noreply");
    }
    // What the receiver reads: a parsed line can be longer once written out
    // (a `stats` group that ended in a bare `\n` at the limit, found by
    // tests/fuzz, is one byte past it with `\r\n`).
    let limit = match command {
        Command::Get(_) => MAX_RETRIEVAL_LINE_LEN,
        _ => MAX_LINE_LEN,
    };
    if line.len() + b"\r\n".len() > limit {
        return Err(Unencodable("line longer than memcached reads"));
    }
    out.put_slice(&line);
    out.put_slice(b"\r\n");
    if let Some(data) = data {
        out.put_slice(data);
        out.put_slice(b"\r\n");
    }
    Ok(())
}

fn put_line(out: &mut BytesMut, line: &[u8]) {
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

fn put_word_u64(out: &mut BytesMut, n: u64) {
    out.put_u8(b' ');
    put_u64(out, n);
}

fn put_word_i64(out: &mut BytesMut, n: i64) {
    out.put_u8(b' ');
    put_i64(out, n);
}

fn put_word_key(out: &mut BytesMut, key: &[u8]) -> Result<(), Unencodable> {
    if !valid_key(key) {
        return Err(Unencodable("key is not a valid text key"));
    }
    out.put_u8(b' ');
    out.put_slice(key);
    Ok(())
}

#[cfg(test)]
mod tests;
