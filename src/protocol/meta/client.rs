//! The client side of the meta protocol: what the proxy sends to a node that
//! speaks text (memgate nodes, memcached 1.6 with `-Y` behind `-Z`) and how it
//! reads the answers, sans-IO.
//!
//! How the proxy uses it, per upstream connection:
//! 1. Log in first with [`encode_login`] and check the answer with
//!    [`parse_reply`]`(.., Expect::Login, ..)` and [`login_result`].
//! 2. For each client request (a multi-key get already split per key), call
//!    [`encode_request`] with the command, the client's frame and a fresh
//!    sequence number; keep the returned [`Expect`] with the command in the
//!    in-flight queue.
//! 3. Replies come back in request order: [`parse_reply`] the front of the
//!    read buffer with the oldest in-flight request's [`Expect`], then
//!    [`decode`] it against that request's command into a [`Response`], which
//!    the session encodes in the client's own dialect and frame.
//!
//! Every request gets exactly one reply: the upstream line never carries `q`
//! (nor `noreply`, nor a binary quiet opcode), and the client's quiet rules are
//! applied again when its reply is encoded (`meta::encode_keyed` and the text
//! and binary encoders already do). Sending `q` upstream would save a few bytes
//! per suppressed reply, but the proxy could then match replies to requests
//! only by terminating every batch with `mn` and inferring the silent ones,
//! and a quiet request would complete only when the next `mn` came back. One
//! reply per request keeps matching a plain FIFO, as it is with binary today.
//!
//! Every meta request upstream carries the proxy's own opaque `O<seq>` in
//! place of the client's (which the client's frame restores), and the reply
//! must echo it: the meta counterpart of binary's opaque check, so that a
//! reply read against the wrong request drops the connection instead of
//! answering a client with another key's value. Error lines carry no opaque
//! and are accepted as the answer to the request in flight.
//!
//! What is asked of the node is what the client's dialect will print, and no
//! more: a text `get` becomes `mg <key> f v`, `gets` adds `c`, a binary get
//! `c f v`, a binary store `c`, a binary TOUCH `c f`, an `incr` `v`. A meta client's return flags
//! pass through, except `k` (the proxy knows the key it sent) and `s` without
//! `v`, which fetches the value too, because [`Found`] derives the size from
//! the data it holds. Keys that cannot appear in a text line (a binary
//! client's) travel base64-encoded with `b`; the node stores the decoded key,
//! the same item a binary client would reach.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    line::{
        decimal, find_newline, parse_u32, parse_u64, put_i64, put_u64, put_usize, valid_key, words,
        Unencodable,
    },
    request::{Command, Frame, Get, MetaFrame, Request, StatsReply, StoreMode, TextFrame},
    response::{ErrorReply, Found, Response},
    text, Limits, MAX_LINE_LEN,
};

use super::{ReturnFlags, MAX_META_TOKENS};

/// The most a multi-line `stats` reply may take before the stream is
/// declared broken (memcached's largest groups are a few tens of KiB).
const MAX_STATS_REPLY: usize = 1024 * 1024;
/// The same for `stats cachedump`, which memcached (and the node) cap at 2
/// MiB of lines.
const MAX_ITEMS_REPLY: usize = 2 << 20;

/// The shape of the reply one upstream request will get, kept with it while
/// it is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A meta reply (`VA HD EN NF NS EX`) echoing `O<seq>`, or `MN` (`None`).
    Meta(Option<u32>),
    /// `me`: an `ME` line, or `EN`.
    Debug,
    /// `flush_all`: `OK`.
    Ok,
    /// `version`: `VERSION <text>`.
    Version,
    /// `stats [group]`: `STAT <name> <value>` lines, then `END`.
    Stats,
    /// `stats cachedump`: `ITEM <key> <info>` lines, then `END`.
    Items,
    /// `stats reset`: `RESET`.
    Reset,
    /// An ASCII login: `STORED`.
    Login,
}

/// A meta reply's two-letter code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// `VA <size>`: a value (mg, ma with `v`) follows the line.
    Value,
    /// `HD`: success without a value.
    Hit,
    /// `EN`: a miss (mg).
    Miss,
    /// `NF`: not found (md, ma, ms with `C`).
    NotFound,
    /// `NS`: not stored.
    NotStored,
    /// `EX`: CAS mismatch.
    Exists,
    /// `MN`: the answer to `mn`.
    Noop,
}

/// One meta reply: its code, its flags, and the value after a `VA` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaReply {
    pub code: Code,
    pub flags: ReturnFlags,
    pub value: Option<Bytes>,
}

/// One whole reply from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeReply {
    Meta(MetaReply),
    /// `me`: the item's `name=value` pairs, `None` on a miss.
    Debug(Option<Vec<(String, String)>>),
    Ok,
    /// `RESET`, the answer to `stats reset`.
    Reset,
    Version(String),
    Stats(Vec<(String, String)>),
    /// `stats cachedump`'s (key, `[<bytes> b; <exptime> s]`) per item.
    Items(Vec<(Vec<u8>, String)>),
    /// `STORED`, the answer to a good login.
    Stored,
    /// `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`.
    Error(ErrorReply),
}

/// Input after which the upstream stream cannot be trusted: drop the
/// connection (and fail what is in flight on it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("node sent a line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("node announced a {0}-byte value, over the item size limit")]
    ValueTooLarge(usize),
    #[error("node sent a stats reply over its size limit")]
    StatsTooLong,
    #[error("malformed reply from node: {0}")]
    Malformed(&'static str),
    #[error("reply opaque does not match the request in flight")]
    OpaqueMismatch,
    #[error("reply does not fit the request in flight")]
    Unexpected,
}

/// Write `command`, as a client framed by `frame` sent it, as the line(s) to
/// send to a node; `seq` becomes the request's opaque. Returns what its reply
/// will look like.
///
/// Quit, verbosity and the SASL commands are the proxy's to answer and have
/// no upstream form; a key whose base64 form is longer than a key may be
/// cannot be sent either.
pub fn encode_request(
    command: &Command,
    frame: &Frame,
    seq: u32,
    out: &mut BytesMut,
) -> Result<Expect, Unencodable> {
    let classic = |command: &Command, out: &mut BytesMut| {
        let request = Request {
            command: command.clone(),
            frame: Frame::Text(TextFrame::default()),
        };
        text::encode_request(&request, out)
    };
    match command {
        Command::FlushAll { .. } => classic(command, out).map(|()| Expect::Ok),
        Command::Version => classic(command, out).map(|()| Expect::Version),
        Command::Stats { group } => {
            let expect = stats_reply_shape(group.as_deref())?;
            classic(command, out).map(|()| expect)
        }
        Command::Noop => {
            out.put_slice(b"mn\r\n");
            Ok(Expect::Meta(None))
        }
        Command::MetaDebug { key } => {
            let frame = MetaFrame {
                base64_key: needs_base64(key),
                ..MetaFrame::default()
            };
            encode_line(&frame, command, None, out).map(|()| Expect::Debug)
        }
        // `mg <key> T<exptime>` answers HD or EN, as touch does TOUCHED or
        // NOT_FOUND, and touches the same way.
        Command::Touch { key, exptime } => {
            let get = Command::Get(Get {
                keys: smallvec::smallvec![key.clone()],
                touch: Some(*exptime),
                ..Get::default()
            });
            let frame = upstream_frame(command, frame, key);
            encode_line(&frame, &get, Some(seq), out).map(|()| Expect::Meta(Some(seq)))
        }
        Command::Get(_)
        | Command::Store(_)
        | Command::Delete(_)
        | Command::Arith(_)
        | Command::Bury { .. }
        | Command::Copy { .. } => {
            let Some(key) = command.key() else {
                return Err(Unencodable("a get of other than one key"));
            };
            let frame = upstream_frame(command, frame, key);
            encode_line(&frame, command, Some(seq), out).map(|()| Expect::Meta(Some(seq)))
        }
        Command::Quit
        | Command::Verbosity
        | Command::SaslList
        | Command::SaslAuth { .. }
        | Command::SaslStep { .. } => {
            Err(Unencodable("answered by the proxy, never sent upstream"))
        }
    }
}

/// The reply a node gives `stats <group>`. Every reply must be matched to
/// its own request: a reply of an unexpected shape would read as a broken
/// stream and close a connection that other clients share. So a group whose
/// reply is not `STAT` lines is not sent: its client alone is told.
fn stats_reply_shape(group: Option<&[u8]>) -> Result<Expect, Unencodable> {
    match StatsReply::of(group) {
        StatsReply::Pairs => Ok(Expect::Stats),
        StatsReply::Items => Ok(Expect::Items),
        StatsReply::Reset => Ok(Expect::Reset),
        StatsReply::Ok => Ok(Expect::Ok),
        StatsReply::Dump(what) => Err(Unencodable(what)),
    }
}

/// Whether `key` must travel base64-encoded: it would break a text line.
fn needs_base64(key: &[u8]) -> bool {
    !valid_key(key)
}

/// The meta flags to send upstream for the client's `command` (a touch is
/// sent as a get), so that the reply carries what the client's frame prints.
fn upstream_frame(command: &Command, client: &Frame, key: &[u8]) -> MetaFrame {
    // The opaque is `seq`, written by `encode_line`.
    let mut wire = MetaFrame {
        base64_key: needs_base64(key),
        ..MetaFrame::default()
    };
    // A tombstone's `c` asks the node to report (Command::Bury), whatever
    // the client's frame prints.
    if let Command::Bury { report, .. } = command {
        wire.return_cas = *report;
        return wire;
    }
    let get = matches!(command, Command::Get(_));
    let store = matches!(command, Command::Store(_) | Command::Copy { .. });
    let arith = matches!(command, Command::Arith(_));
    let touch = matches!(command, Command::Touch { .. });
    match client {
        Frame::Text(text) => {
            wire.return_value = get || arith;
            wire.return_flags = get;
            wire.return_cas = get && text.with_cas;
        }
        // A binary TOUCH reply carries the item's flags and CAS.
        Frame::Binary { opcode, .. } => {
            let touch = touch && *opcode == crate::protocol::binary::opcode::TOUCH;
            wire.return_value = get || arith;
            wire.return_flags = get || touch;
            wire.return_cas = get || store || arith || touch;
        }
        // Only the flags that the command's reply can carry: memcached
        // ignores the others, and they would only lengthen the line.
        Frame::Meta(meta) => {
            wire.return_value = ((get || arith) && meta.return_value) || (get && meta.return_size);
            wire.return_cas = meta.return_cas;
            wire.return_flags = get && meta.return_flags;
            wire.return_hit = get && meta.return_hit;
            wire.return_last_access = get && meta.return_last_access;
            wire.return_ttl = (get || arith) && meta.return_ttl;
        }
    }
    wire
}

/// Write the first command of an upstream connection: the ASCII login.
///
/// The item carries exptime -1 (already expired): a node that takes ASCII
/// auth consumes the `set` without storing it, and one that wrongly has no
/// auth at all stores an item no one can read, rather than the password.
pub fn encode_login(
    form: LoginForm,
    username: &str,
    password: &str,
    out: &mut BytesMut,
) -> Result<Expect, Unencodable> {
    let (key, value) = match form {
        LoginForm::MemCachier => (username.as_bytes(), password.to_owned()),
        LoginForm::Memcached => {
            if username.contains(' ') {
                return Err(Unencodable("memcached -Y usernames cannot hold a space"));
            }
            (LOGIN_KEY, format!("{username} {password}"))
        }
    };
    if !valid_key(key) {
        return Err(Unencodable("username is not a valid text key"));
    }
    out.put_slice(b"set ");
    out.put_slice(key);
    out.put_slice(b" 0 -1 ");
    out.put_slice(value.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
    Ok(Expect::Login)
}

/// The key of a memcached `-Y` login, which memcached ignores.
const LOGIN_KEY: &[u8] = b"memgate-login";

/// Which ASCII login a node takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginForm {
    /// MemCachier's (memgate nodes): key = username, value = password.
    MemCachier,
    /// memcached `-Y`'s: any key, value = `<username> <password>`.
    Memcached,
}

/// Why an ASCII login failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginReplyError {
    #[error("credentials refused")]
    Refused,
    /// Anything but `STORED` or an authentication failure: most likely a
    /// node that does not take ASCII auth (memcached without `-Y`, or `-S`).
    #[error("node does not take an ASCII login: {0}")]
    NotAscii(String),
}

/// Classify the reply to [`encode_login`].
pub fn login_result(reply: &NodeReply) -> Result<(), LoginReplyError> {
    match reply {
        NodeReply::Stored => Ok(()),
        NodeReply::Error(ErrorReply::AuthFailure | ErrorReply::AuthThrottled) => {
            Err(LoginReplyError::Refused)
        }
        NodeReply::Error(error) => Err(LoginReplyError::NotAscii(error.text())),
        other => Err(LoginReplyError::NotAscii(format!("{other:?}"))),
    }
}

/// Parse the whole reply at the front of `buf` to a request that expects
/// `expect`: `None` until it is all buffered. A value longer than the item
/// size limit is refused from its header, before it is buffered.
pub fn parse_reply(
    buf: &[u8],
    expect: Expect,
    limits: &Limits,
) -> Result<Option<(NodeReply, usize)>, ReplyError> {
    let Some((line, used)) = next_line(buf)? else {
        return Ok(None);
    };
    if let Some(error) = text::client::error_reply(line) {
        return Ok(Some((NodeReply::Error(error), used)));
    }
    let reply = match expect {
        Expect::Meta(opaque) => return parse_meta(buf, line, used, opaque, limits),
        Expect::Debug => parse_debug(line)?,
        Expect::Ok if line == b"OK" => NodeReply::Ok,
        Expect::Reset if line == b"RESET" => NodeReply::Reset,
        Expect::Login if line == b"STORED" => NodeReply::Stored,
        Expect::Version => match line.strip_prefix(b"VERSION ") {
            Some(version) => NodeReply::Version(String::from_utf8_lossy(version).into_owned()),
            None => return Err(ReplyError::Unexpected),
        },
        Expect::Stats => return parse_stats(buf),
        Expect::Items => return parse_items(buf),
        Expect::Ok | Expect::Reset | Expect::Login => return Err(ReplyError::Unexpected),
    };
    Ok(Some((reply, used)))
}

/// The first line of `buf` without its newline, and the bytes it takes.
fn next_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ReplyError> {
    match find_newline(buf, MAX_LINE_LEN) {
        Some(at) => {
            let line = buf.get(..at).unwrap_or_default();
            Ok(Some((line.strip_suffix(b"\r").unwrap_or(line), at + 1)))
        }
        None if buf.len() < MAX_LINE_LEN => Ok(None),
        None => Err(ReplyError::LineTooLong),
    }
}

fn parse_meta(
    buf: &[u8],
    line: &[u8],
    used: usize,
    opaque: Option<u32>,
    limits: &Limits,
) -> Result<Option<(NodeReply, usize)>, ReplyError> {
    let mut tokens = words(line);
    let code = match tokens.next() {
        Some(b"VA") => Code::Value,
        Some(b"HD") => Code::Hit,
        Some(b"EN") => Code::Miss,
        Some(b"NF") => Code::NotFound,
        Some(b"NS") => Code::NotStored,
        Some(b"EX") => Code::Exists,
        Some(b"MN") => Code::Noop,
        _ => return Err(ReplyError::Unexpected),
    };
    let size = match code {
        Code::Value => {
            let size = tokens
                .next()
                .and_then(parse_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(ReplyError::Malformed("VA without a size"))?;
            if size > limits.max_item_size {
                return Err(ReplyError::ValueTooLarge(size));
            }
            Some(size)
        }
        _ => None,
    };
    let flags = return_flags(tokens)?;
    if flags.opaque != opaque {
        return Err(ReplyError::OpaqueMismatch);
    }
    let (value, used) = match size {
        None => (None, used),
        Some(size) => {
            let rest = buf.get(used..).unwrap_or_default();
            let (Some(data), Some(end)) = (rest.get(..size), rest.get(size..size + 2)) else {
                return Ok(None);
            };
            if end != b"\r\n" {
                return Err(ReplyError::Malformed("value not followed by CRLF"));
            }
            (Some(Bytes::copy_from_slice(data)), used + size + 2)
        }
    };
    let reply = MetaReply { code, flags, value };
    Ok(Some((NodeReply::Meta(reply), used)))
}

/// Read the return flags the proxy uses; others (`k`, `b`, flags a later
/// memcached may add) are skipped.
fn return_flags<'a>(tokens: impl Iterator<Item = &'a [u8]>) -> Result<ReturnFlags, ReplyError> {
    let mut flags = ReturnFlags::default();
    for token in tokens {
        let Some((&flag, arg)) = token.split_first() else {
            continue;
        };
        let bad = ReplyError::Malformed("bad return flag");
        match flag {
            b'c' => flags.cas = Some(parse_u64(arg).ok_or(bad)?),
            b'f' => flags.client_flags = Some(parse_u32(arg).ok_or(bad)?),
            b'h' => {
                flags.hit = Some(match arg {
                    b"0" => false,
                    b"1" => true,
                    _ => return Err(bad),
                })
            }
            b'l' => flags.last_access = Some(parse_u64(arg).ok_or(bad)?),
            b'O' => flags.opaque = Some(parse_u32(arg).ok_or(ReplyError::OpaqueMismatch)?),
            b's' => {
                let size = parse_u64(arg).and_then(|n| usize::try_from(n).ok());
                flags.size = Some(size.ok_or(bad)?);
            }
            b't' => flags.ttl = Some(parse_i64(arg).ok_or(bad)?),
            b'W' => flags.won = true,
            b'X' => flags.stale = true,
            b'Z' => flags.win_sent = true,
            _ => {}
        }
    }
    Ok(flags)
}

fn parse_i64(token: &[u8]) -> Option<i64> {
    match token.strip_prefix(b"-") {
        Some(digits) => i64::try_from(parse_u64(digits)?).ok().map(|n| -n),
        None => i64::try_from(parse_u64(token)?).ok(),
    }
}

/// `ME <key> <name>=<value>*` or `EN`.
fn parse_debug(line: &[u8]) -> Result<NodeReply, ReplyError> {
    if line == b"EN" {
        return Ok(NodeReply::Debug(None));
    }
    let mut tokens = words(line);
    if tokens.next() != Some(b"ME") || tokens.next().is_none() {
        return Err(ReplyError::Unexpected);
    }
    let pairs = tokens
        .map(|pair| {
            let text = String::from_utf8_lossy(pair);
            match text.split_once('=') {
                Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
                None => Err(ReplyError::Malformed("me pair without '='")),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(NodeReply::Debug(Some(pairs)))
}

/// `STAT <name> <value>` lines up to `END`, all buffered.
fn parse_stats(buf: &[u8]) -> Result<Option<(NodeReply, usize)>, ReplyError> {
    let lines = lines_to_end(buf, b"STAT ", MAX_STATS_REPLY, |line| {
        let stat = line
            .strip_prefix(b"STAT ")
            .map(String::from_utf8_lossy)
            .ok_or(ReplyError::Unexpected)?;
        let (name, value) = stat.split_once(' ').unwrap_or((&stat, ""));
        Ok((name.to_owned(), value.to_owned()))
    })?;
    Ok(lines.map(|(pairs, used)| (NodeReply::Stats(pairs), used)))
}

/// `ITEM <key> <info>` lines up to `END`, all buffered. The key is
/// everything before the last ` [`, since memcached does not escape it.
fn parse_items(buf: &[u8]) -> Result<Option<(NodeReply, usize)>, ReplyError> {
    let lines = lines_to_end(buf, b"ITEM ", MAX_ITEMS_REPLY, |line| {
        let item = line.strip_prefix(b"ITEM ").ok_or(ReplyError::Unexpected)?;
        let split = item
            .windows(2)
            .rposition(|w| w == b" [")
            .ok_or(ReplyError::Malformed("ITEM line without its [info]"))?;
        let (key, info) = item.split_at(split);
        let info = info.strip_prefix(b" ").unwrap_or(info);
        Ok((key.to_vec(), String::from_utf8_lossy(info).into_owned()))
    })?;
    Ok(lines.map(|(items, used)| (NodeReply::Items(items), used)))
}

/// Each line up to `END` read by `each` (each starts with `prefix`), once
/// all of it is buffered, and the bytes it took; a line of another form, or
/// more than `cap` bytes, is a broken stream.
fn lines_to_end<T>(
    buf: &[u8],
    prefix: &[u8],
    cap: usize,
    mut each: impl FnMut(&[u8]) -> Result<T, ReplyError>,
) -> Result<Option<(Vec<T>, usize)>, ReplyError> {
    // A long reply arrives over many reads: until its end line is in, each
    // call only checks the lines' form, building nothing.
    let mut at = 0;
    let mut count = 0;
    loop {
        if at > cap {
            return Err(ReplyError::StatsTooLong);
        }
        let Some((line, used)) = next_line(buf.get(at..).unwrap_or_default())? else {
            return Ok(None);
        };
        at += used;
        if line == b"END" {
            break;
        }
        if !line.starts_with(prefix) {
            return Err(ReplyError::Unexpected);
        }
        count += 1;
    }
    let mut out = Vec::with_capacity(count);
    let mut rest = buf;
    for _ in 0..count {
        let Some((line, used)) = next_line(rest)? else {
            return Ok(None);
        };
        out.push(each(line)?);
        rest = rest.get(used..).unwrap_or_default();
    }
    Ok(Some((out, at)))
}

/// Turn `reply` to `command` (as it was given to [`encode_request`]) back
/// into a dialect-neutral response. A meta code that `command` cannot get is
/// an error: the stream is out of step.
pub fn decode(command: Command, reply: NodeReply) -> Result<Response, ReplyError> {
    // memgate's tombstone commands answer as the store and delete they are,
    // a reporting delete's `HD` with the removed item's CAS.
    let report = matches!(command, Command::Bury { report: true, .. });
    let command = match command {
        Command::Copy { store, .. } => Command::Store(store),
        Command::Bury { key, .. } => Command::Delete(crate::protocol::request::Delete {
            key,
            cas: None,
            invalidate: false,
            exptime: None,
        }),
        command => command,
    };
    let meta = match reply {
        NodeReply::Meta(meta) => meta,
        NodeReply::Error(error) => return Ok(Response::Error(error)),
        NodeReply::Debug(pairs) if matches!(command, Command::MetaDebug { .. }) => {
            return Ok(Response::MetaDebug(pairs))
        }
        NodeReply::Ok if matches!(command, Command::FlushAll { .. } | Command::Stats { .. }) => {
            return Ok(Response::Ok)
        }
        NodeReply::Reset if matches!(command, Command::Stats { .. }) => return Ok(Response::Reset),
        NodeReply::Version(version) if matches!(command, Command::Version) => {
            return Ok(Response::Version(version))
        }
        NodeReply::Stats(pairs) if matches!(command, Command::Stats { .. }) => {
            return Ok(Response::Stats(pairs))
        }
        NodeReply::Items(items) if matches!(command, Command::Stats { .. }) => {
            return Ok(Response::Dump(items))
        }
        _ => return Err(ReplyError::Unexpected),
    };
    let flags = &meta.flags;
    let response = match (command, meta.code) {
        (Command::Get(get), Code::Value | Code::Hit) => {
            let found = Found {
                // Moved, not cloned: a clone of a key copied from the
                // client's bytes allocated (bytes' promotion to shared).
                key: get.keys.into_iter().next().unwrap_or_default(),
                flags: flags.client_flags.unwrap_or(0),
                cas: flags.cas.unwrap_or(0),
                data: meta.value.unwrap_or_default(),
                ttl: flags.ttl.unwrap_or(-1),
                last_access: flags.last_access.unwrap_or(0),
                fetched: flags.hit.unwrap_or(false),
                won: flags.won,
                stale: flags.stale,
                win_sent: flags.win_sent,
            };
            Response::Get(vec![Some(found)])
        }
        (Command::Get(_), Code::Miss) => Response::Get(vec![None]),
        // Asked with `f` (for a binary client), the hit is the item.
        (Command::Touch { key, .. }, Code::Hit) if flags.client_flags.is_some() => {
            Response::Get(vec![Some(Found {
                key,
                flags: flags.client_flags.unwrap_or(0),
                cas: flags.cas.unwrap_or(0),
                ..Found::default()
            })])
        }
        (Command::Touch { .. }, Code::Hit) => Response::Touched,
        (Command::Touch { .. }, Code::Miss) => Response::NotFound,
        (Command::Store(_), Code::Hit) => Response::Stored {
            cas: flags.cas.unwrap_or(0),
        },
        // A node from before the report deletes without one: a plain
        // delete, which the stream is still in step with.
        (Command::Delete(_), Code::Hit) if report => match flags.cas {
            Some(cas) => Response::DeletedCas { cas },
            None => Response::Deleted,
        },
        (Command::Delete(_), Code::Hit) => Response::Deleted,
        (Command::Arith(_), Code::Value | Code::Hit) => {
            let value = match &meta.value {
                Some(digits) => {
                    parse_u64(digits).ok_or(ReplyError::Malformed("ma value not a number"))?
                }
                None => 0,
            };
            Response::Number {
                value,
                cas: flags.cas.unwrap_or(0),
                ttl: flags.ttl.unwrap_or(-1),
            }
        }
        (Command::Noop, Code::Noop) => Response::Noop,
        (Command::Delete(_), Code::NotFound) if report => match flags.cas {
            Some(cas) => Response::NotFoundCas { cas },
            None => Response::NotFound,
        },
        (Command::Store(_) | Command::Delete(_) | Command::Arith(_), Code::NotFound) => {
            Response::NotFound
        }
        (Command::Store(_) | Command::Arith(_), Code::NotStored) => Response::NotStored,
        (Command::Store(_) | Command::Delete(_) | Command::Arith(_), Code::Exists) => {
            Response::Exists
        }
        _ => return Err(ReplyError::Unexpected),
    };
    Ok(response)
}

/// Write a meta request (see [`crate::protocol::encode_request`]).
///
/// `seq`, if given, is written as the opaque (`O<seq>`) in place of the
/// frame's own: the proxy's numbering of its upstream requests, written
/// without a string of its own per request.
pub(crate) fn encode_line(
    frame: &MetaFrame,
    command: &Command,
    seq: Option<u32>,
    out: &mut BytesMut,
) -> Result<(), Unencodable> {
    let start = out.len();
    let written = encode_request_at(frame, command, seq, out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// `encode_request`, straight onto the end of `line` (not into a line of
/// its own, to grow and copy: that was three reallocations per request).
/// On an error, the caller cuts `line` back.
fn encode_request_at(
    frame: &MetaFrame,
    command: &Command,
    seq: Option<u32>,
    line: &mut BytesMut,
) -> Result<(), Unencodable> {
    let mut data = None;
    // A store's tokens, counted against memcached's limit below.
    let mut tokens = 0;
    match command {
        Command::Get(get) => {
            let [key] = get.keys.as_slice() else {
                return Err(Unencodable("mg takes exactly one key"));
            };
            line.put_slice(b"mg");
            put_key(line, frame, key)?;
            // memcached reads flags in order: `t` before `N` or `T` would
            // report the TTL from before the vivify or touch.
            if get.no_bump {
                line.put_slice(b" u");
            }
            put_token(line, b'N', get.vivify);
            put_token(line, b'R', get.recache_below);
            put_token(line, b'T', get.touch);
            put_frame_flags(line, frame, seq)?;
        }
        Command::Store(store) | Command::Copy { store, .. } => {
            line.put_slice(b"ms");
            put_key(line, frame, &store.key)?;
            line.put_u8(b' ');
            put_usize(line, store.data.len());
            // `ms`, the key and the length, then each flag and token.
            tokens = 3 + put_frame_flags(line, frame, seq)?;
            if store.flags != 0 {
                tokens += put_token(line, b'F', Some(store.flags));
            }
            if store.exptime != 0 {
                tokens += put_token(line, b'T', Some(store.exptime));
            }
            tokens += put_token(line, b'C', store.cas);
            if store.invalidate {
                line.put_slice(b" I");
                tokens += 1;
            }
            let copy = match command {
                Command::Copy { version, .. } => Some(*version),
                _ => None,
            };
            let mode = match store.mode {
                // A copy without a mode is an add: a mirror names its set.
                StoreMode::Set if copy.is_some() => Some(b"S"),
                StoreMode::Set => None,
                StoreMode::Add => Some(b"E"),
                StoreMode::Append => Some(b"A"),
                StoreMode::Prepend => Some(b"P"),
                StoreMode::Replace => Some(b"R"),
            };
            if let Some(mode) = mode {
                line.put_slice(b" M");
                line.put_slice(mode);
                tokens += 1;
            } else if store.vivify.is_some() {
                return Err(Unencodable("ms vivifies only in append/prepend mode"));
            }
            tokens += put_token(line, b'N', store.vivify);
            if let Some(version) = copy {
                line.put_slice(b" G");
                tokens += 1 + put_token(line, b'E', version);
            }
            data = Some(&store.data);
        }
        Command::Bury {
            key,
            ttl,
            version,
            report,
        } => {
            line.put_slice(b"md");
            put_key(line, frame, key)?;
            put_frame_flags(line, frame, seq)?;
            put_token(line, b'G', Some(*ttl));
            put_token(line, b'E', *version);
            // The node reports the removed item's CAS for a `c`.
            if *report && !frame.return_cas {
                line.put_slice(b" c");
            }
        }
        Command::Delete(delete) => {
            line.put_slice(b"md");
            put_key(line, frame, &delete.key)?;
            put_frame_flags(line, frame, seq)?;
            put_token(line, b'C', delete.cas);
            if delete.invalidate {
                line.put_slice(b" I");
            }
            put_token(line, b'T', delete.exptime);
        }
        Command::Arith(arith) => {
            line.put_slice(b"ma");
            put_key(line, frame, &arith.key)?;
            if !arith.incr {
                line.put_slice(b" MD");
            }
            if arith.delta != 1 {
                put_token(line, b'D', Some(arith.delta));
            }
            if arith.initial != 0 {
                put_token(line, b'J', Some(arith.initial));
            }
            put_token(line, b'N', arith.vivify);
            put_token(line, b'C', arith.cas);
            put_token(line, b'T', arith.touch);
            put_frame_flags(line, frame, seq)?;
        }
        Command::Noop => line.put_slice(b"mn"),
        Command::MetaDebug { key } => {
            line.put_slice(b"me");
            put_key(line, frame, key)?;
            if frame.base64_key {
                line.put_slice(b" b");
            }
        }
        _ => return Err(Unencodable("no meta form")),
    }
    // Only `ms` can reach memcached's limit: with every flag and `b`, `mg`
    // comes to 17 tokens, `ma` to 19 and `md` to 16, so only a store's
    // tokens are counted, as they are written (a scan of the line was a
    // fifth of the encoding's work).
    if tokens + 1 > MAX_META_TOKENS {
        return Err(Unencodable("more meta flags than memcached accepts"));
    }
    line.put_slice(b"\r\n");
    if let Some(data) = data {
        line.reserve(data.len() + 2);
        line.put_slice(data);
        line.put_slice(b"\r\n");
    }
    Ok(())
}

fn put_key(line: &mut BytesMut, frame: &MetaFrame, key: &[u8]) -> Result<(), Unencodable> {
    let encoded;
    let key = if frame.base64_key {
        encoded = BASE64.encode(key);
        if key.is_empty() {
            return Err(Unencodable("empty key"));
        }
        encoded.as_bytes()
    } else {
        key
    };
    if !valid_key(key) {
        return Err(Unencodable("key is not a valid meta key"));
    }
    line.put_u8(b' ');
    line.put_slice(key);
    Ok(())
}

/// The frame's flags: `b`, then the return flags in the frame's order, with
/// `q` and `v` where they fall in `c f h k l q s t v O` (which is the whole
/// order for a frame built in code). Returns how many tokens it wrote.
fn put_frame_flags(
    line: &mut BytesMut,
    frame: &MetaFrame,
    seq: Option<u32>,
) -> Result<usize, Unencodable> {
    if let (Some(seq), []) = (seq, frame.order.given()) {
        return Ok(put_canonical_flags(line, frame, seq));
    }
    const ALL: &[u8] = b"cfhklqstvO";
    let mut tokens = 0;
    if frame.base64_key {
        line.put_slice(b" b");
        tokens += 1;
    }
    let given = frame.order.given();
    let rest = ALL.iter().filter(|f| !given.contains(f));
    for &flag in given.iter().chain(rest) {
        match (flag, seq, &frame.opaque) {
            (b'O', Some(seq), _) => {
                line.put_slice(b" O");
                put_u64(line, u64::from(seq));
            }
            (b'O', None, Some(opaque)) => {
                if !opaque.iter().all(|&b| b > b' ' && b != 0x7f) {
                    return Err(Unencodable("opaque is not a printable token"));
                }
                line.put_slice(b" O");
                line.put_slice(opaque);
            }
            (b'O', None, None) => continue,
            _ if frame.asks(flag) => line.put_slice(&[b' ', flag]),
            _ => continue,
        }
        tokens += 1;
    }
    Ok(tokens)
}

/// `put_frame_flags` for what the sidecar sends a node: flags in the
/// canonical order and `seq` as the opaque. Gathered in a word-sized buffer
/// and written at once: a `put_slice` per flag, each a call to copy two
/// bytes, was a third of what encoding a request cost (callgrind,
/// benches/REPLICAS.md).
fn put_canonical_flags(line: &mut BytesMut, frame: &MetaFrame, seq: u32) -> usize {
    let flags = [
        (frame.base64_key, b'b'),
        (frame.return_cas, b'c'),
        (frame.return_flags, b'f'),
        (frame.return_hit, b'h'),
        (frame.return_key, b'k'),
        (frame.return_last_access, b'l'),
        (frame.quiet, b'q'),
        (frame.return_size, b's'),
        (frame.return_ttl, b't'),
        (frame.return_value, b'v'),
    ];
    // Ten flags of two bytes, then ` O` and at most ten digits.
    let mut out = [0u8; 32];
    let mut len = 0;
    let mut tokens = 1;
    for (asked, flag) in flags {
        if asked {
            out[len] = b' ';
            out[len + 1] = flag;
            len += 2;
            tokens += 1;
        }
    }
    out[len] = b' ';
    out[len + 1] = b'O';
    len += 2;
    let mut digits = [0u8; 20];
    for &digit in decimal(u64::from(seq), &mut digits) {
        out[len] = digit;
        len += 1;
    }
    line.put_slice(&out[..len]);
    tokens
}

/// Append ` <flag><value>` when `value` is set; returns the tokens it
/// wrote (1 or 0).
fn put_token<N: Into<i128>>(line: &mut BytesMut, flag: u8, value: Option<N>) -> usize {
    let Some(value) = value else {
        return 0;
    };
    line.put_slice(&[b' ', flag]);
    let value: i128 = value.into();
    match u64::try_from(value) {
        Ok(unsigned) => put_u64(line, unsigned),
        Err(_) => put_i64(line, value as i64),
    }
    1
}

#[cfg(test)]
mod tests;
