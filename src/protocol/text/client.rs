//! The client side of the classic text protocol: write a command as a client
//! sends it (the benchmark client and the round-trip tests use it).

use bytes::{BufMut, BytesMut};

use crate::protocol::{
    line::{put_i64, put_u64, valid_key, words},
    request::{Command, Frame, Request, StoreMode},
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
