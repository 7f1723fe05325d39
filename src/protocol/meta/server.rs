//! The server side of the meta commands: parse a client's `mg ms md ma mn me`
//! line, write the reply.
//!
//! [`super::parse`] recognises a meta line and calls [`parse_line`]; the line
//! discipline, tokens, numbers and keys are `protocol::line`'s, shared with
//! the classic text protocol. Flags are read the way memcached's
//! `_meta_flag_preparse` reads them: every meta command accepts every known
//! flag (and ignores those that do not apply to it), an unknown or repeated
//! flag is refused, and the first character of a token is the flag, the rest
//! its argument.
//!
//! Return flags are written in the order the request gave them, as memcached
//! does (`mg k s v t` answers `VA 1 s1 t-1`, `mg k t v s` answers `VA 1 t-1
//! s1`), then `Z X W`; the frame keeps that order in a
//! [`FlagOrder`](super::request::FlagOrder).

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    line::{
        client_error, parse_exptime, parse_u32, parse_u64, parse_value_len, put_i64, put_u64,
        put_usize, valid_key, Line, BAD_FORMAT,
    },
    request::{
        Arith, Command, Delete, Exptime, Get, MetaFrame, Opaque, Store, StoreMode, TextFrame,
    },
    response::{Found, Response},
    Frame, Limits, Parsed, Request,
};

use super::{ReturnFlags, MAX_META_TOKENS};

/// Parse a meta command line; `line.tokens` starts with `mg`, `ms`, `md`,
/// `ma`, `mn` or `me`.
pub(crate) fn parse_line(line: &Line, limits: &Limits) -> Parsed {
    match line.tokens.get(0) {
        Some(b"mg") => parse_get(line),
        Some(b"ms") => parse_set(line, limits),
        Some(b"md") => parse_delete(line),
        Some(b"ma") => parse_arith(line),
        Some(b"mn") => request(line, Command::Noop, MetaFrame::default()),
        Some(b"me") => parse_debug(line),
        _ => line.reject(
            Frame::Text(TextFrame::default()),
            crate::protocol::ErrorReply::UnknownCommand,
        ),
    }
}

/// `mg <key> <flags>*`.
fn parse_get(line: &Line) -> Parsed {
    let (key, flags) = match keyed_command(line, "options flags are too long", None, false) {
        Ok(parts) => parts,
        Err(refusal) => return *refusal,
    };
    if let Err(msg) = flags.check_opaque() {
        return error(line, msg);
    }
    let get = Get {
        keys: smallvec::smallvec![key],
        touch: flags.ttl,
        vivify: flags.vivify,
        recache_below: flags.recache_below,
        no_bump: flags.no_bump,
    };
    request(line, Command::Get(get), flags.frame)
}

/// `ms <key> <datalen> <flags>*` followed by the data block.
fn parse_set(line: &Line, limits: &Limits) -> Parsed {
    if line.tokens.len() < 2 {
        return unknown(line);
    }
    let Some(raw_key) = line.tokens.get(1).filter(|k| valid_key(k)) else {
        return error(line, BAD_FORMAT);
    };
    if line.tokens.len() == 2 {
        return error(line, BAD_FORMAT);
    }
    if line.tokens.len() + 1 > MAX_META_TOKENS {
        return error(line, "options flags too long");
    }
    let Some(len) = line.tokens.get(2).and_then(parse_value_len) else {
        return error(line, BAD_FORMAT);
    };
    // From here on memcached knows the data length, so every refusal also
    // swallows the data block that follows.
    let refuse = |msg: &str| {
        line.reject_skipping(meta_frame(MetaFrame::default()), client_error(msg), len + 2)
    };
    let versioned = carries_g(line, 3);
    let (key, flags) = match Flags::parse(raw_key, line.tokens.iter().skip(3), versioned) {
        Ok(parsed) => parsed,
        Err(msg) => return refuse(msg),
    };
    // Upper case only, as memcached 1.6.18 (protocol.txt's lower-case modes
    // came later).
    // A copy (memgate's `G`) is an add unless it names another mode.
    let copy = flags.tombstone.is_some();
    let mode = match flags.mode {
        None if copy => StoreMode::Add,
        None | Some(b'S') => StoreMode::Set,
        Some(b'E') => StoreMode::Add,
        Some(b'A') => StoreMode::Append,
        Some(b'P') => StoreMode::Prepend,
        Some(b'R') => StoreMode::Replace,
        Some(_) => return refuse("invalid mode for ms M token"),
    };
    if let Err(msg) = flags.check_opaque() {
        return refuse(msg);
    }
    let refused = meta_frame(flags.frame.clone());
    // memcached 1.6.18's `ms` unlinks the old value after refusing an
    // over-size one whatever the mode, so that no stale data survives.
    if let Some(too_large) = line.refuse_oversize(refused, &key, len, true, limits) {
        return too_large;
    }
    let vivify = match mode {
        StoreMode::Append | StoreMode::Prepend => flags.vivify,
        _ => None,
    };
    let frame = meta_frame(MetaFrame {
        stores: true,
        ..flags.frame
    });
    // A copy is an add, or with a version a set (a replica's mirror), that
    // a tombstone also refuses; it never compares a client's CAS.
    let copy_mode = match mode {
        StoreMode::Add => true,
        StoreMode::Set => flags.version.is_some(),
        _ => false,
    };
    if copy && (!copy_mode || flags.cas.is_some() || flags.invalidate) {
        return refuse("invalid flag");
    }
    line.with_block(frame, len, |data| {
        let store = Store {
            mode,
            key,
            flags: flags.client_flags,
            exptime: flags.ttl.unwrap_or(0),
            data,
            cas: flags.cas,
            invalidate: flags.invalidate,
            vivify,
        };
        match copy {
            true => Command::Copy {
                store,
                version: flags.version,
            },
            false => Command::Store(store),
        }
    })
}

/// `md <key> <flags>*`.
fn parse_delete(line: &Line) -> Parsed {
    let versioned = carries_g(line, 2);
    let (key, flags) =
        match keyed_command(line, "options flags too long", Some(FLAG_ERROR), versioned) {
            Ok(parts) => parts,
            Err(refusal) => return *refusal,
        };
    if let Err(msg) = flags.check_opaque() {
        return error(line, msg);
    }
    if let Some(ttl) = flags.tombstone {
        // No item has CAS 0: a version 0 would name no write at all.
        let bad_version = flags.version == Some(0);
        if flags.cas.is_some() || flags.invalidate || flags.ttl.is_some() || bad_version {
            return error(line, "invalid flag");
        }
        // `c` asks for the removed item's CAS (`HD c<cas>`).
        let bury = Command::Bury {
            key,
            ttl,
            version: flags.version,
            report: flags.frame.return_cas,
        };
        return request(line, bury, flags.frame);
    }
    let delete = Delete {
        key,
        cas: flags.cas,
        invalidate: flags.invalidate,
        exptime: flags.ttl,
    };
    request(line, Command::Delete(delete), flags.frame)
}

/// `ma <key> <flags>*`.
fn parse_arith(line: &Line) -> Parsed {
    let (key, flags) = match keyed_command(line, "options flags too long", Some(FLAG_ERROR), false)
    {
        Ok(parts) => parts,
        Err(refusal) => return *refusal,
    };
    let incr = match flags.mode {
        None | Some(b'I' | b'+') => true,
        Some(b'D' | b'-') => false,
        Some(_) => return error(line, "invalid mode for ma M token"),
    };
    if let Err(msg) = flags.check_opaque() {
        return error(line, msg);
    }
    let arith = Arith {
        key,
        incr,
        delta: flags.delta.unwrap_or(1),
        cas: flags.cas,
        vivify: flags.vivify,
        initial: flags.initial.unwrap_or(0),
        touch: flags.ttl,
    };
    request(line, Command::Arith(arith), flags.frame)
}

/// `md` and `ma` answer any flag error with this one string, ignoring the
/// flag parser's more precise one (as memcached does).
const FLAG_ERROR: &str = "invalid or duplicate flag";

/// The checks `mg`, `md` and `ma` share: a missing key is `ERROR`, an invalid
/// key or too many tokens a client error; then the flags (`E` among them
/// when `versioned`), whose error is reported as `flag_error` when given.
/// (The refusal is boxed: it is rare, and `Parsed` is large.)
fn keyed_command(
    line: &Line,
    too_many: &'static str,
    flag_error: Option<&'static str>,
    versioned: bool,
) -> Result<(Bytes, Flags), Box<Parsed>> {
    let checked = match line.tokens.get(1) {
        None => return Err(Box::new(unknown(line))),
        Some(key) if !valid_key(key) => Err(BAD_FORMAT),
        Some(_) if line.tokens.len() + 1 > MAX_META_TOKENS => Err(too_many),
        Some(raw_key) => Flags::parse(raw_key, line.tokens.iter().skip(2), versioned)
            .map_err(|msg| flag_error.unwrap_or(msg)),
    };
    checked.map_err(|msg| Box::new(error(line, msg)))
}

/// Whether the line's flag tokens, from the `first`th token on, hold
/// memgate's `G`. Only then is `E<version>` read (`ms … G E<v>`, `md … G<ttl>
/// E<v>`): on any other line it is the flag memcached 1.6.18 does not know,
/// refused at once as memcached refuses it.
fn carries_g(line: &Line, first: usize) -> bool {
    line.tokens
        .iter()
        .skip(first)
        .any(|t| t.first() == Some(&b'G'))
}

/// `me <key> [b]`.
fn parse_debug(line: &Line) -> Parsed {
    let Some(raw_key) = line.tokens.get(1).filter(|k| valid_key(k)) else {
        return error(line, BAD_FORMAT);
    };
    let base64_key = line.tokens.get(2) == Some(b"b");
    let key = if base64_key {
        match decode_key(raw_key) {
            Some(key) => key,
            None => return error(line, BAD_FORMAT),
        }
    } else {
        Bytes::copy_from_slice(raw_key)
    };
    let frame = MetaFrame {
        base64_key,
        ..MetaFrame::default()
    };
    request(line, Command::MetaDebug { key }, frame)
}

fn request(line: &Line, command: Command, frame: MetaFrame) -> Parsed {
    Parsed::Request(
        Request {
            command,
            frame: meta_frame(frame),
        },
        line.len,
    )
}

/// Meta errors are never silenced by `q`, so they carry a default frame.
fn error(line: &Line, msg: &str) -> Parsed {
    line.reject(meta_frame(MetaFrame::default()), client_error(msg))
}

fn unknown(line: &Line) -> Parsed {
    line.reject(
        meta_frame(MetaFrame::default()),
        crate::protocol::ErrorReply::UnknownCommand,
    )
}

fn meta_frame(frame: MetaFrame) -> Frame {
    Frame::Meta(Box::new(frame))
}

/// A `b` key: standard, padded base64 that must decode to at least one byte.
fn decode_key(raw: &[u8]) -> Option<Bytes> {
    BASE64
        .decode(raw)
        .ok()
        .filter(|key| !key.is_empty())
        .map(Bytes::from)
}

const BAD_TOKEN: &str = "bad token in command line format";

/// Store a parsed flag argument, or report `msg`.
fn set<T>(
    slot: &mut Option<T>,
    value: Option<T>,
    msg: &'static str,
) -> Result<(), Option<&'static str>> {
    *slot = Some(value.ok_or(Some(msg))?);
    Ok(())
}

/// Every flag a meta command line may carry.
#[derive(Default)]
struct Flags {
    frame: MetaFrame,
    /// `T`: new TTL (mg, ma), TTL (ms), stale TTL (md).
    ttl: Option<Exptime>,
    /// `N`: vivify on miss with this TTL.
    vivify: Option<Exptime>,
    /// `R`: win the recache below this TTL.
    recache_below: Option<Exptime>,
    /// `u`: no LRU bump.
    no_bump: bool,
    /// `F`: client flags.
    client_flags: u32,
    /// `C`: compare CAS.
    cas: Option<u64>,
    /// `I`: invalidate.
    invalidate: bool,
    /// `M`: the mode character.
    mode: Option<u8>,
    /// `J`: initial value.
    initial: Option<u64>,
    /// `D`: delta.
    delta: Option<u64>,
    /// `G`: memgate's tombstone (`md G<ttl>`) or copy (`ms G`) flag.
    tombstone: Option<Exptime>,
    /// `E`: memgate's version: of a copy (`ms G E<version>`), its CAS; of a
    /// tombstone (`md G<ttl> E<version>`), the newest mirror it refuses.
    version: Option<u64>,
    /// The `O` token was longer than memcached takes.
    opaque_too_long: bool,
}

impl Flags {
    /// Read flag tokens; returns the (possibly base64-decoded) key too. The
    /// error string is memcached's: a repeated or unknown flag stops at once,
    /// other bad tokens are reported after all are read, the last one winning
    /// (a bad `F` keeps whatever message was current). `E` is a flag only
    /// when `versioned` (a line with memgate's `G`), else an unknown one.
    fn parse<'a>(
        raw_key: &[u8],
        tokens: impl Iterator<Item = &'a [u8]>,
        versioned: bool,
    ) -> Result<(Bytes, Flags), &'static str> {
        let mut flags = Flags::default();
        let mut key = None;
        // memcached indexes a 127-entry table; a flag byte >= 127 is reported
        // as a duplicate, as it does.
        let mut seen = [false; 127];
        let mut has_error = false;
        let mut message = BAD_FORMAT;
        for token in tokens {
            let (&flag, arg) = token.split_first().unwrap_or((&0, &[]));
            match seen.get_mut(usize::from(flag)) {
                Some(seen) if !*seen => *seen = true,
                _ => return Err("duplicate flag"),
            }
            flags.frame.order.push(flag);
            if let Some(switch) = flags.switch(flag) {
                *switch = true;
                continue;
            }
            let frame = &mut flags.frame;
            // Err(Some(msg)): a bad argument with its message; Err(None): a
            // bad argument that keeps the current message (memcached's `F`).
            let outcome: Result<(), Option<&'static str>> = match flag {
                b'b' => {
                    frame.base64_key = true;
                    key = decode_key(raw_key);
                    key.as_ref().map(|_| ()).ok_or(Some("error decoding key"))
                }
                b'O' => {
                    frame.opaque = Opaque::new(arg);
                    flags.opaque_too_long = frame.opaque.is_none();
                    Ok(())
                }
                // Routing hints for proxies; memcached ignores them.
                b'P' | b'L' => Ok(()),
                b'N' => set(&mut flags.vivify, parse_exptime(arg), BAD_TOKEN),
                b'T' => set(&mut flags.ttl, parse_exptime(arg), BAD_TOKEN),
                b'R' => set(&mut flags.recache_below, parse_exptime(arg), BAD_TOKEN),
                // memgate's: `G<ttl>` on md, a bare `G` on ms (Command::Bury, Command::Copy).
                b'G' if arg.is_empty() => set(&mut flags.tombstone, Some(0), BAD_TOKEN),
                b'G' => set(&mut flags.tombstone, parse_exptime(arg), BAD_TOKEN),
                b'C' => set(&mut flags.cas, parse_u64(arg), BAD_TOKEN),
                b'E' if versioned => set(&mut flags.version, parse_u64(arg), BAD_TOKEN),
                b'J' => set(
                    &mut flags.initial,
                    parse_u64(arg),
                    "invalid numeric initial value",
                ),
                b'D' => set(
                    &mut flags.delta,
                    parse_u64(arg),
                    "invalid numeric delta value",
                ),
                b'F' => parse_u32(arg).map(|f| flags.client_flags = f).ok_or(None),
                b'M' => {
                    let mode = if let [mode] = arg { Some(*mode) } else { None };
                    set(&mut flags.mode, mode, "incorrect length for M token")
                }
                _ => return Err("invalid flag"),
            };
            if let Err(msg) = outcome {
                has_error = true;
                message = msg.unwrap_or(message);
            }
        }
        if has_error {
            return Err(message);
        }
        flags.frame.order.normalise();
        let key = key.unwrap_or_else(|| Bytes::copy_from_slice(raw_key));
        Ok((key, flags))
    }

    /// The argument-less flag `flag` turns on, if it is one.
    fn switch(&mut self, flag: u8) -> Option<&mut bool> {
        let frame = &mut self.frame;
        Some(match flag {
            b'c' => &mut frame.return_cas,
            b'f' => &mut frame.return_flags,
            b'h' => &mut frame.return_hit,
            b'k' => &mut frame.return_key,
            b'l' => &mut frame.return_last_access,
            b'q' => &mut frame.quiet,
            b's' => &mut frame.return_size,
            b't' => &mut frame.return_ttl,
            b'v' => &mut frame.return_value,
            b'u' => &mut self.no_bump,
            b'I' => &mut self.invalidate,
            _ => return None,
        })
    }

    /// memcached checks the `O` token's length only after the other flags.
    fn check_opaque(&self) -> Result<(), &'static str> {
        match self.opaque_too_long {
            true => Err("opaque token too long"),
            false => Ok(()),
        }
    }
}

/// Write the reply to a meta command whose (decoded) key is `key`, echoed for
/// `k` and `me` (base64-encoded again when the request used `b`).
///
/// Returns `false`, having written nothing, for a reply meta has no form for
/// (errors, `OK`, `VERSION`, stats, SASL): memcached answers those in text,
/// and [`super::encode`] does so.
#[must_use]
pub fn encode_keyed(
    frame: &MetaFrame,
    key: Option<&[u8]>,
    response: &Response,
    out: &mut BytesMut,
) -> bool {
    let quiet = frame.quiet;
    // An `ms` that stored nothing reports the CAS of the item it did not
    // store, 0, as memcached does; `md` and `ma` report none.
    let failed = ReturnFlags {
        cas: frame.stores.then_some(0),
        ..ReturnFlags::default()
    };
    let mut reply = ReplyWriter { frame, key, out };
    // The `q` rules are memcached 1.6.18's: it hides EN for mg, HD for ms/md
    // and every successful ma (VA too); NF, NS, EX and errors always show.
    match response {
        Response::Get(items) => reply.get(items.first().and_then(Option::as_ref)),
        Response::Stored { cas } => {
            if !quiet {
                let flags = ReturnFlags {
                    cas: Some(*cas),
                    ..ReturnFlags::default()
                };
                reply.status(b"HD", &flags);
            }
        }
        Response::Deleted | Response::Touched => {
            if !quiet {
                reply.status(b"HD", &ReturnFlags::default());
            }
        }
        // memgate's reported delete: `HD`, with the removed item's CAS for
        // the `c` that asked for it.
        Response::DeletedCas { cas } => {
            if !quiet {
                let flags = ReturnFlags {
                    cas: Some(*cas),
                    ..ReturnFlags::default()
                };
                reply.status(b"HD", &flags);
            }
        }
        Response::NotStored => reply.status(b"NS", &failed),
        Response::Exists => reply.status(b"EX", &failed),
        Response::NotFound => reply.status(b"NF", &failed),
        // memgate's reported delete of a missing key: `NF`, with the node's
        // CAS clock for the `c` that asked for it.
        Response::NotFoundCas { cas } => {
            let flags = ReturnFlags {
                cas: Some(*cas),
                ..ReturnFlags::default()
            };
            reply.status(b"NF", &flags);
        }
        Response::Number { value, cas, ttl } => {
            if !quiet {
                reply.number(*value, *cas, *ttl);
            }
        }
        Response::Noop => reply.out.put_slice(b"MN\r\n"),
        Response::MetaDebug(Some(pairs)) => reply.debug(pairs),
        Response::MetaDebug(None) => reply.out.put_slice(b"EN\r\n"),
        Response::Error(_)
        | Response::Silent
        | Response::Ok
        | Response::Reset
        | Response::Version(_)
        | Response::Stats(_)
        | Response::Dump(_)
        | Response::AuthOk
        | Response::SaslMechs(_)
        | Response::AuthContinue(_) => return false,
    }
    true
}

/// An `mg`'s reply, a hit or a miss (`EN`, unless quiet): the node writes
/// it straight from its store (`Store::get_each`), the value borrowed from
/// its segment. `key` is the request's (decoded) key, echoed for `k` on a
/// miss.
pub fn put_get<B: AsRef<[u8]>>(
    frame: &MetaFrame,
    key: &[u8],
    found: Option<&Found<B>>,
    out: &mut BytesMut,
) {
    let mut reply = ReplyWriter {
        frame,
        key: Some(key),
        out,
    };
    reply.get(found);
}

/// Writes one meta reply for a frame into `out`.
struct ReplyWriter<'k, 'o> {
    frame: &'k MetaFrame,
    key: Option<&'k [u8]>,
    out: &'o mut BytesMut,
}

impl<'k> ReplyWriter<'k, '_> {
    /// An `mg`'s hit, or its miss.
    fn get<B: AsRef<[u8]>>(&mut self, found: Option<&'k Found<B>>) {
        match found {
            Some(found) => self.hit(found),
            None if self.frame.quiet => {}
            None => self.status(b"EN", &ReturnFlags::default()),
        }
    }

    /// An `mg` hit: `VA <size> <flags>` + data with `v`, else `HD <flags>`.
    fn hit<B: AsRef<[u8]>>(&mut self, found: &'k Found<B>) {
        let data = found.data.as_ref();
        let flags = ReturnFlags {
            cas: Some(found.cas),
            client_flags: Some(found.flags),
            hit: Some(found.fetched),
            last_access: Some(found.last_access),
            size: Some(data.len()),
            ttl: Some(found.ttl),
            ..ReturnFlags::default()
        };
        self.key = Some(found.key.as_ref());
        if self.frame.return_value {
            self.out.put_slice(b"VA ");
            put_usize(self.out, data.len());
        } else {
            self.out.put_slice(b"HD");
        }
        self.flags(&flags);
        // Z before W, as memcached writes them: a client never sees both.
        for (set, flag) in [
            (found.win_sent, b'Z'),
            (found.stale, b'X'),
            (found.won, b'W'),
        ] {
            if set {
                self.out.put_slice(&[b' ', flag]);
            }
        }
        self.out.put_slice(b"\r\n");
        if self.frame.return_value {
            self.out.put_slice(data);
            self.out.put_slice(b"\r\n");
        }
    }

    /// An `ma` success: `HD <flags>`, or `VA <len> <flags>` + the number.
    fn number(&mut self, value: u64, cas: u64, ttl: i64) {
        let flags = ReturnFlags {
            cas: Some(cas),
            ttl: Some(ttl),
            ..ReturnFlags::default()
        };
        let mut number = BytesMut::new();
        put_u64(&mut number, value);
        if self.frame.return_value {
            self.out.put_slice(b"VA ");
            put_usize(self.out, number.len());
        } else {
            self.out.put_slice(b"HD");
        }
        self.flags(&flags);
        self.out.put_slice(b"\r\n");
        if self.frame.return_value {
            self.out.put_slice(&number);
            self.out.put_slice(b"\r\n");
        }
    }

    fn status(&mut self, code: &[u8], flags: &ReturnFlags) {
        self.out.put_slice(code);
        self.flags(flags);
        self.out.put_slice(b"\r\n");
    }

    /// `ME <key> <k>=<v>*`.
    fn debug(&mut self, pairs: &[(String, String)]) {
        self.out.put_slice(b"ME");
        if let Some(key) = self.key {
            self.out.put_u8(b' ');
            self.put_key(key);
        }
        for (name, value) in pairs {
            self.out.put_u8(b' ');
            self.out.put_slice(name.as_bytes());
            self.out.put_u8(b'=');
            self.out.put_slice(value.as_bytes());
        }
        self.out.put_slice(b"\r\n");
    }

    /// The requested return flags, in the request's order (`c f h k b l s t
    /// O` for a frame built in code).
    fn flags(&mut self, facts: &ReturnFlags) {
        let frame = self.frame;
        for flag in frame.order.sequence().filter(|&f| frame.asks(f)) {
            let number = match flag {
                b'c' => facts.cas,
                b'f' => facts.client_flags.map(u64::from),
                b'l' => facts.last_access,
                b's' => facts.size.map(|size| size as u64),
                _ => None,
            };
            match (flag, frame.opaque.as_ref(), self.key) {
                (b'h', ..) => {
                    if let Some(hit) = facts.hit {
                        self.out.put_slice(if hit { b" h1" } else { b" h0" });
                    }
                }
                (b't', ..) => {
                    if let Some(ttl) = facts.ttl {
                        self.out.put_slice(b" t");
                        put_i64(self.out, ttl);
                    }
                }
                (b'k', _, Some(key)) => {
                    self.out.put_slice(b" k");
                    self.put_key(key);
                    if frame.base64_key {
                        self.out.put_slice(b" b");
                    }
                }
                (b'O', Some(opaque), _) => {
                    self.out.put_slice(b" O");
                    self.out.put_slice(opaque);
                }
                _ => {
                    if let Some(number) = number {
                        self.out.put_slice(&[b' ', flag]);
                        put_u64(self.out, number);
                    }
                }
            }
        }
    }

    fn put_key(&mut self, key: &[u8]) {
        if self.frame.base64_key {
            self.out.put_slice(BASE64.encode(key).as_bytes());
        } else {
            self.out.put_slice(key);
        }
    }
}

#[cfg(test)]
mod tests;
