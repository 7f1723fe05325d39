//! The client side of the classic text protocol: write a command as a client
//! sends it ([`encode_request`]; the benchmark client and the round-trip
//! tests use it), and read the server's replies ([`parse_reply`]; the
//! benchmark and its consistency checker).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    line::{find_newline, parse_u32, parse_u64, put_i64, put_u64, valid_key, words},
    request::{Command, Frame, Request, StoreMode},
    response::ErrorReply,
    MAX_LINE_LEN,
};

use super::{Unencodable, MAX_RETRIEVAL_LINE_LEN};

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
        | Command::Bury { .. }
        | Command::Copy { .. }
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

/// One unit of a text reply, as a client reads it off the wire.
///
/// Multi-line replies come one unit at a time, so that a reader can judge
/// each value as it arrives and bound what it buffers to one item: a
/// retrieval is any number of [`TextReply::Value`] then [`TextReply::End`],
/// a `stats` reply any number of [`TextReply::Stat`] then `End`. Which units
/// fit which command is the caller's to check (it knows what it sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextReply {
    /// `VALUE <key> <flags> <bytes> [<cas>]` and its data block.
    Value {
        key: Bytes,
        flags: u32,
        cas: Option<u64>,
        data: Bytes,
    },
    /// `END`: the end of a retrieval (a miss, if no value came) or of stats.
    End,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    /// `OK` (flush_all, verbosity).
    Ok,
    /// `RESET` (stats reset).
    Reset,
    /// The new value after `incr`/`decr`.
    Number(u64),
    Version(String),
    /// `STAT <name> <value>`.
    Stat {
        name: String,
        value: String,
    },
    /// `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`.
    Error(ErrorReply),
}

/// A reply stream that cannot be read any further: the connection must go.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextReplyError {
    #[error("server sent a line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("server announced a {0}-byte value, over the limit")]
    ValueTooLarge(usize),
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    #[error("unknown reply line {0:?}")]
    Unknown(String),
}

/// Parse the reply unit at the front of `buf`: `None` until it is whole
/// (for a value, until its data block and its CRLF are buffered). A value
/// announced larger than `max_value` is refused from its header, before it
/// is buffered.
pub fn parse_reply(
    buf: &[u8],
    max_value: usize,
) -> Result<Option<(TextReply, usize)>, TextReplyError> {
    // A reply line is short; one longer than a request line may be cannot
    // be a reply, and waiting for its end would buffer without bound.
    let Some(at) = find_newline(buf, MAX_LINE_LEN) else {
        return if buf.len() < MAX_LINE_LEN {
            Ok(None)
        } else {
            Err(TextReplyError::LineTooLong)
        };
    };
    let raw = buf.get(..at).unwrap_or_default();
    // memcached always ends lines with CRLF; a bare LF is taken as the
    // request parser takes it.
    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
    let used = at + 1;
    if let Some(error) = error_reply(line) {
        return Ok(Some((TextReply::Error(error), used)));
    }
    let reply = match line {
        b"END" => TextReply::End,
        b"STORED" => TextReply::Stored,
        b"NOT_STORED" => TextReply::NotStored,
        b"EXISTS" => TextReply::Exists,
        b"NOT_FOUND" => TextReply::NotFound,
        b"DELETED" => TextReply::Deleted,
        b"TOUCHED" => TextReply::Touched,
        b"OK" => TextReply::Ok,
        b"RESET" => TextReply::Reset,
        _ if line.starts_with(b"VALUE ") => return parse_value(buf, line, used, max_value),
        _ if line.starts_with(b"STAT ") => {
            let mut parts = line.splitn(3, |&b| b == b' ').skip(1);
            let name = parts.next().unwrap_or_default();
            let value = parts.next().unwrap_or_default();
            TextReply::Stat {
                name: String::from_utf8_lossy(name).into_owned(),
                value: String::from_utf8_lossy(value).into_owned(),
            }
        }
        _ if line.starts_with(b"VERSION ") => TextReply::Version(
            String::from_utf8_lossy(line.get(b"VERSION ".len()..).unwrap_or_default()).into_owned(),
        ),
        _ => match parse_u64(line) {
            Some(n) => TextReply::Number(n),
            None => {
                return Err(TextReplyError::Unknown(
                    String::from_utf8_lossy(line).into_owned(),
                ))
            }
        },
    };
    Ok(Some((reply, used)))
}

/// `VALUE <key> <flags> <bytes> [<cas>]`, then `<bytes>` of data and CRLF.
fn parse_value(
    buf: &[u8],
    line: &[u8],
    used: usize,
    max_value: usize,
) -> Result<Option<(TextReply, usize)>, TextReplyError> {
    let mut tokens = words(line).skip(1);
    let bad = TextReplyError::Malformed("bad VALUE line");
    let key = tokens.next().ok_or(bad.clone())?;
    let flags = tokens.next().and_then(parse_u32).ok_or(bad.clone())?;
    let len = tokens
        .next()
        .and_then(parse_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(bad.clone())?;
    let cas = match tokens.next() {
        Some(token) => Some(parse_u64(token).ok_or(bad.clone())?),
        None => None,
    };
    if tokens.next().is_some() {
        return Err(bad);
    }
    if len > max_value {
        return Err(TextReplyError::ValueTooLarge(len));
    }
    let rest = buf.get(used..).unwrap_or_default();
    let (Some(data), Some(end)) = (rest.get(..len), rest.get(len..len + 2)) else {
        return Ok(None);
    };
    if end != b"\r\n" {
        return Err(TextReplyError::Malformed("value not followed by CRLF"));
    }
    let reply = TextReply::Value {
        key: Bytes::copy_from_slice(key),
        flags,
        cas,
        data: Bytes::copy_from_slice(data),
    };
    Ok(Some((reply, used + len + 2)))
}

/// The error a reply line is, if it is one, mapped back to the variant whose
/// text it is (so that a caller can tell "out of memory" from other errors).
pub fn error_reply(line: &[u8]) -> Option<ErrorReply> {
    // Nearly every reply is not an error: look no further (matching builds
    // each error's text) unless the line starts as every error does.
    let error_like = [&b"ERROR"[..], b"CLIENT_ERROR ", b"SERVER_ERROR "];
    if !error_like.iter().any(|prefix| line.starts_with(prefix)) {
        return None;
    }
    let known = [
        ErrorReply::UnknownCommand,
        ErrorReply::TooLarge,
        ErrorReply::OutOfMemory,
        ErrorReply::NonNumeric,
        ErrorReply::Unauthenticated,
        ErrorReply::AuthFailure,
        ErrorReply::AuthThrottled,
        ErrorReply::PermissionDenied,
        ErrorReply::FlushNotAllowed,
    ];
    let text = String::from_utf8_lossy(line);
    if let Some(error) = known.into_iter().find(|e| e.text() == text) {
        return Some(error);
    }
    if let Some(msg) = text.strip_prefix("CLIENT_ERROR ") {
        return Some(ErrorReply::Client(msg.to_owned()));
    }
    text.strip_prefix("SERVER_ERROR ")
        .map(|msg| ErrorReply::Server(msg.to_owned()))
}

#[cfg(test)]
mod reply_tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn one(buf: &[u8]) -> (TextReply, usize) {
        match parse_reply(buf, MAX) {
            Ok(Some(parsed)) => parsed,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn a_retrieval_comes_as_values_then_end() {
        let wire = b"VALUE a 5 3 77\r\nabc\r\nVALUE b 0 0\r\n\r\nEND\r\n";
        let (first, used) = one(wire);
        assert_eq!(
            first,
            TextReply::Value {
                key: Bytes::from_static(b"a"),
                flags: 5,
                cas: Some(77),
                data: Bytes::from_static(b"abc"),
            }
        );
        let (second, used2) = one(&wire[used..]);
        assert!(matches!(second, TextReply::Value { ref data, cas: None, .. } if data.is_empty()));
        assert_eq!(one(&wire[used + used2..]), (TextReply::End, 5));
    }

    #[test]
    fn a_value_waits_for_its_data_and_crlf() {
        let wire = b"VALUE k 0 3\r\nabc\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse_reply(&wire[..cut], MAX), Ok(None), "cut at {cut}");
        }
        assert_eq!(one(wire).1, wire.len());
        // Data that runs into the next line is a stream out of step.
        assert_eq!(
            parse_reply(b"VALUE k 0 3\r\nabcdEND\r\n", MAX),
            Err(TextReplyError::Malformed("value not followed by CRLF"))
        );
    }

    #[test]
    fn every_single_line_reply() {
        let cases: [(&[u8], TextReply); 12] = [
            (b"STORED\r\n", TextReply::Stored),
            (b"NOT_STORED\r\n", TextReply::NotStored),
            (b"EXISTS\r\n", TextReply::Exists),
            (b"NOT_FOUND\r\n", TextReply::NotFound),
            (b"DELETED\r\n", TextReply::Deleted),
            (b"TOUCHED\r\n", TextReply::Touched),
            (b"OK\r\n", TextReply::Ok),
            (b"RESET\r\n", TextReply::Reset),
            (b"42\r\n", TextReply::Number(42)),
            (b"VERSION 1.6.18\r\n", TextReply::Version("1.6.18".into())),
            (
                b"STAT curr_items 7\r\n",
                TextReply::Stat {
                    name: "curr_items".into(),
                    value: "7".into(),
                },
            ),
            (
                b"SERVER_ERROR out of memory storing object\r\n",
                TextReply::Error(ErrorReply::OutOfMemory),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(one(wire), (want, wire.len()));
        }
        assert_eq!(
            one(b"ERROR\r\n").0,
            TextReply::Error(ErrorReply::UnknownCommand)
        );
        assert_eq!(
            one(b"CLIENT_ERROR bad data chunk\r\n").0,
            TextReply::Error(ErrorReply::Client("bad data chunk".into()))
        );
        // A stat whose value holds spaces keeps them.
        assert_eq!(
            one(b"STAT version 1.6 x\r\n").0,
            TextReply::Stat {
                name: "version".into(),
                value: "1.6 x".into()
            }
        );
    }

    #[test]
    fn a_broken_stream_is_an_error() {
        assert!(matches!(
            parse_reply(b"HELLO\r\n", MAX),
            Err(TextReplyError::Unknown(_))
        ));
        assert_eq!(
            parse_reply(&[b'x'; MAX_LINE_LEN], MAX),
            Err(TextReplyError::LineTooLong)
        );
        assert_eq!(parse_reply(&[b'x'; MAX_LINE_LEN - 1], MAX), Ok(None));
        assert_eq!(
            parse_reply(b"VALUE k 0 99\r\n", 10),
            Err(TextReplyError::ValueTooLarge(99))
        );
        for bad in [
            &b"VALUE k\r\n"[..],
            b"VALUE k x 3\r\n",
            b"VALUE k 0 3 cas\r\n",
            b"VALUE k 0 3 1 2\r\n",
        ] {
            assert_eq!(
                parse_reply(bad, MAX),
                Err(TextReplyError::Malformed("bad VALUE line")),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn what_the_server_encoder_writes_reads_back() {
        use crate::protocol::request::TextFrame;
        use crate::protocol::{Found, Response};
        let found = Found {
            key: Bytes::from_static(b"k1"),
            flags: 9,
            cas: 5,
            data: Bytes::from_static(b"v\r\nv"),
            ..Found::default()
        };
        let mut out = BytesMut::new();
        let frame = TextFrame {
            noreply: false,
            with_cas: true,
        };
        super::super::encode(&frame, &Response::Get(vec![Some(found), None]), &mut out);
        let (value, used) = one(&out);
        assert_eq!(
            value,
            TextReply::Value {
                key: Bytes::from_static(b"k1"),
                flags: 9,
                cas: Some(5),
                data: Bytes::from_static(b"v\r\nv"),
            }
        );
        assert_eq!(one(&out[used..]), (TextReply::End, 5));
    }
}
