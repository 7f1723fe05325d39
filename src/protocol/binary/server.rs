//! The server side: parse a client's request, write the reply (the node,
//! and the proxy facing its own clients).

use super::wire::{be_u32, be_u64, Header, Packet};
use super::{
    error_status, opcode, status, HEADER_LEN, MAX_SASL_DATA_LEN, MAX_SASL_MECH_LEN, NO_VIVIFY,
    REQUEST_MAGIC, RESPONSE_MAGIC,
};
use crate::protocol::request::{
    Arith, Command, Delete, Exptime, Frame, Get, Key, Request, Store, StoreMode,
};
use crate::protocol::response::{ErrorReply, Found, Response};
use crate::protocol::{Limits, Parsed, ProtocolError, MAX_KEY_LEN};
use bytes::{Bytes, BytesMut};

pub(super) fn invalid_arguments() -> ErrorReply {
    ErrorReply::Client("Invalid arguments".into())
}

/// Parse one request from the front of `buf`.
///
/// A bad magic or a body length shorter than extras + key is fatal: nothing
/// after it can be trusted. Every other refusal is decided from the header
/// and is a [`Parsed::Reject`] that consumes the header and skips the body,
/// so the caller never buffers a body it is going to throw away.
///
/// memcached closes the connection after an "Invalid arguments" reply; we
/// keep it open, since the body length still tells us where the next
/// request starts.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some(h) = Header::read(buf, REQUEST_MAGIC)? else {
        return Ok(Parsed::Incomplete);
    };
    let frame = Frame::Binary {
        opcode: h.opcode,
        opaque: h.opaque,
    };
    let reject = |error, unlink| Parsed::Reject {
        frame: frame.clone(),
        error,
        consumed: HEADER_LEN,
        skip: h.body_len,
        unlink,
    };
    // memcached checks the key length before it looks at the opcode.
    if h.key_len > MAX_KEY_LEN {
        return Ok(reject(invalid_arguments(), None));
    }
    let Some(kind) = Kind::of(h.opcode) else {
        return Ok(reject(ErrorReply::UnknownCommand, None));
    };
    if !kind.fits(&h) {
        return Ok(reject(invalid_arguments(), None));
    }
    if kind.too_large(&h, limits) {
        // An over-size SET must not leave the old value readable, so wait for
        // the key (bounded: extras and key are at most 8 + 250 bytes here).
        let unlink = if kind == Kind::Store(StoreMode::Set) {
            let key_at = HEADER_LEN + h.extras_len;
            match buf.get(key_at..key_at + h.key_len) {
                Some(key) => Some(Key::copy_from_slice(key)),
                None => return Ok(Parsed::Incomplete),
            }
        } else {
            None
        };
        return Ok(reject(ErrorReply::TooLarge, unlink));
    }
    let Some((extras, key, value)) = h.body(buf) else {
        return Ok(Parsed::Incomplete);
    };
    let Some(command) = kind.command(&h, extras, key, value) else {
        return Ok(reject(invalid_arguments(), None));
    };
    Ok(Parsed::Request(
        Request { command, frame },
        HEADER_LEN + h.body_len,
    ))
}

/// memcached's text for an error status (`write_bin_error`), sent as the value.
fn status_text(status: u16) -> &'static str {
    match status {
        status::KEY_NOT_FOUND => "Not found",
        status::KEY_EXISTS => "Data exists for key.",
        status::VALUE_TOO_LARGE => "Too large.",
        status::INVALID_ARGUMENTS => "Invalid arguments",
        status::ITEM_NOT_STORED => "Not stored.",
        status::NON_NUMERIC => "Non-numeric server-side value for incr or decr",
        status::AUTH_ERROR => "Auth failure.",
        status::UNKNOWN_COMMAND => "Unknown command",
        status::OUT_OF_MEMORY => "Out of memory",
        _ => "Internal error",
    }
}

/// Write a reply packet. A reply whose lengths overflow the header (which
/// our own store cannot produce) becomes an internal error rather than a
/// corrupt stream.
fn put_reply(packet: Packet<'_>, out: &mut BytesMut) {
    if packet.write(RESPONSE_MAGIC, out).is_err() {
        let fallback = Packet {
            status: status::INTERNAL_ERROR,
            value: status_text(status::INTERNAL_ERROR).as_bytes(),
            ..Packet::new(packet.opcode, packet.opaque)
        };
        // Cannot fail: every length is tiny.
        let _ = fallback.write(RESPONSE_MAGIC, out);
    }
}

/// The value of an error reply: the client's or server's own message, else
/// memcached's text for the status.
fn error_text(error: &ErrorReply) -> &str {
    match error {
        ErrorReply::Client(msg) | ErrorReply::Server(msg) => msg,
        ErrorReply::AuthThrottled => "Auth failure. Too many failed logins, retry later.",
        other => status_text(error_status(other)),
    }
}

/// Encode `response` as the reply to the request with this opcode and opaque.
///
/// Quiet opcodes drop the reply memcached drops (a get miss, any other
/// success); errors are always written.
pub fn encode_response(opcode: u8, opaque: u32, response: &Response, out: &mut BytesMut) {
    encode_keyed_response(opcode, opaque, None, response, out)
}

/// One key's reply to a get (GET, GETK, their quiet forms, GAT, and a
/// TOUCH answered from the item): a hit, or a miss unless quiet. The node
/// writes it straight from its store (`Store::get_each`), the value
/// borrowed from its segment. `request_key` is echoed by a GETK's miss.
pub fn put_get<B: AsRef<[u8]>>(
    opcode: u8,
    opaque: u32,
    request_key: Option<&[u8]>,
    found: Option<&Found<B>>,
    out: &mut BytesMut,
) {
    let base = Packet::new(opcode, opaque);
    match found {
        Some(found) => {
            let flags = found.flags.to_be_bytes();
            let key: &[u8] = if returns_key(opcode) {
                found.key.as_ref()
            } else {
                &[]
            };
            // A TOUCH answered from the item (the node does) carries its
            // flags and CAS but no value, as memcached's does.
            let value: &[u8] = if opcode == opcode::TOUCH {
                &[]
            } else {
                found.data.as_ref()
            };
            let hit = Packet {
                cas: found.cas,
                extras: &flags,
                key,
                value,
                ..base
            };
            put_reply(hit, out);
        }
        None if is_quiet(opcode) => {}
        None => match request_key.filter(|_| returns_key(opcode)) {
            Some(key) => put_reply(
                Packet {
                    status: status::KEY_NOT_FOUND,
                    key,
                    ..base
                },
                out,
            ),
            None => put_reply(
                Packet {
                    status: status::KEY_NOT_FOUND,
                    value: status_text(status::KEY_NOT_FOUND).as_bytes(),
                    ..base
                },
                out,
            ),
        },
    }
}

/// [`encode_response`], given the request's key: a GETK or GATK miss echoes
/// it (key only, no "Not found" text), as memcached does, so that clients
/// pipelining GETKs can tell which key missed.
pub fn encode_keyed_response(
    opcode: u8,
    opaque: u32,
    request_key: Option<&[u8]>,
    response: &Response,
    out: &mut BytesMut,
) {
    let base = Packet::new(opcode, opaque);
    let quiet = is_quiet(opcode);
    let number;
    let (status, cas, value): (u16, u64, &[u8]) = match response {
        Response::Silent => return,
        // A binary get asks for one key, but nothing is lost by writing one
        // packet per entry.
        Response::Get(items) => {
            for item in items {
                put_get(opcode, opaque, request_key, item.as_ref(), out);
            }
            return;
        }
        // One packet per stat, then one with neither key nor value.
        Response::Stats(pairs) => {
            for (name, value) in pairs {
                let stat = Packet {
                    key: name.as_bytes(),
                    value: value.as_bytes(),
                    ..base
                };
                put_reply(stat, out);
            }
            put_reply(base, out);
            return;
        }
        // One packet per item, its key and its bracket, then the end.
        Response::Dump(items) => {
            for (key, info) in items {
                let item = Packet {
                    key,
                    value: info.as_bytes(),
                    ..base
                };
                put_reply(item, out);
            }
            put_reply(base, out);
            return;
        }
        // memcached ends a reset's (empty) stats list at once.
        Response::Reset => (status::NO_ERROR, 0, &[]),
        Response::Stored { cas } => (status::NO_ERROR, *cas, &[]),
        Response::Number { value, cas, .. } => {
            number = value.to_be_bytes();
            (status::NO_ERROR, *cas, &number)
        }
        // memgate's reported delete answers as the delete it is.
        Response::Deleted
        | Response::DeletedCas { .. }
        | Response::Touched
        | Response::Ok
        | Response::Noop => (status::NO_ERROR, 0, &[]),
        Response::Version(version) => (status::NO_ERROR, 0, version.as_bytes()),
        Response::SaslMechs(mechs) => (status::NO_ERROR, 0, mechs.as_bytes()),
        Response::AuthOk => (status::NO_ERROR, 0, b"Authenticated"),
        Response::AuthContinue(challenge) => (status::AUTH_CONTINUE, 0, challenge),
        Response::NotStored => {
            // memcached reports a refused ADD as "exists" and a refused
            // REPLACE as "not found"; only append/prepend/set say "not stored".
            let status = match opcode {
                opcode::ADD | opcode::ADDQ => status::KEY_EXISTS,
                opcode::REPLACE | opcode::REPLACEQ => status::KEY_NOT_FOUND,
                _ => status::ITEM_NOT_STORED,
            };
            (status, 0, status_text(status).as_bytes())
        }
        Response::Exists => (
            status::KEY_EXISTS,
            0,
            status_text(status::KEY_EXISTS).as_bytes(),
        ),
        Response::NotFound | Response::NotFoundCas { .. } => (
            status::KEY_NOT_FOUND,
            0,
            status_text(status::KEY_NOT_FOUND).as_bytes(),
        ),
        Response::Error(error) => (error_status(error), 0, error_text(error).as_bytes()),
        // No binary request parses to `me`, so this answers nothing real.
        Response::MetaDebug(_) => (
            status::UNKNOWN_COMMAND,
            0,
            status_text(status::UNKNOWN_COMMAND).as_bytes(),
        ),
    };
    if quiet && status == status::NO_ERROR {
        return;
    }
    put_reply(
        Packet {
            status,
            cas,
            value,
            ..base
        },
        out,
    );
}

/// Quiet opcodes suppress their "uninteresting" reply: a miss for the get
/// family, a success for everything else. Errors are always sent.
pub(super) fn is_quiet(op: u8) -> bool {
    use opcode::*;
    matches!(
        op,
        GETQ | GETKQ
            | GATQ
            | GATKQ
            | SETQ
            | ADDQ
            | REPLACEQ
            | APPENDQ
            | PREPENDQ
            | DELETEQ
            | INCREMENTQ
            | DECREMENTQ
            | QUITQ
            | FLUSHQ
    )
}

/// GETK and GATK (and their quiet forms) echo the key in the reply.
pub(super) fn returns_key(op: u8) -> bool {
    use opcode::*;
    matches!(op, GETK | GETKQ | GATK | GATKQ)
}

/// Request commands grouped by shape and meaning; quiet and key-returning
/// variants only differ in how the reply is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Get,
    GetAndTouch,
    Store(StoreMode),
    Delete,
    Arith { incr: bool },
    Quit,
    Flush,
    Noop,
    Version,
    Stat,
    Verbosity,
    Touch,
    SaslList,
    SaslAuth,
    SaslStep,
}

impl Kind {
    fn of(op: u8) -> Option<Kind> {
        use opcode::*;
        Some(match op {
            GET | GETQ | GETK | GETKQ => Kind::Get,
            GAT | GATQ | GATK | GATKQ => Kind::GetAndTouch,
            SET | SETQ => Kind::Store(StoreMode::Set),
            ADD | ADDQ => Kind::Store(StoreMode::Add),
            REPLACE | REPLACEQ => Kind::Store(StoreMode::Replace),
            APPEND | APPENDQ => Kind::Store(StoreMode::Append),
            PREPEND | PREPENDQ => Kind::Store(StoreMode::Prepend),
            DELETE | DELETEQ => Kind::Delete,
            INCREMENT | INCREMENTQ => Kind::Arith { incr: true },
            DECREMENT | DECREMENTQ => Kind::Arith { incr: false },
            QUIT | QUITQ => Kind::Quit,
            FLUSH | FLUSHQ => Kind::Flush,
            NOOP => Kind::Noop,
            VERSION => Kind::Version,
            STAT => Kind::Stat,
            VERBOSITY => Kind::Verbosity,
            TOUCH => Kind::Touch,
            SASL_LIST_MECHS => Kind::SaslList,
            SASL_AUTH => Kind::SaslAuth,
            SASL_STEP => Kind::SaslStep,
            _ => return None,
        })
    }

    /// Whether the header's extras/key/value lengths fit this command
    /// (memcached's checks in `dispatch_bin_command`, plus "no value" where
    /// the spec says MUST NOT and memcached would silently misparse one).
    fn fits(self, h: &Header) -> bool {
        let (extras, key, value) = (h.extras_len, h.key_len, h.value_len());
        match self {
            Kind::Get | Kind::Delete => extras == 0 && key > 0 && value == 0,
            Kind::GetAndTouch | Kind::Touch => extras == 4 && key > 0 && value == 0,
            Kind::Store(StoreMode::Set | StoreMode::Add | StoreMode::Replace) => {
                extras == 8 && key > 0
            }
            Kind::Store(StoreMode::Append | StoreMode::Prepend) => extras == 0 && key > 0,
            Kind::Arith { .. } => extras == 20 && key > 0 && value == 0,
            Kind::Quit | Kind::Noop | Kind::Version | Kind::SaslList => h.body_len == 0,
            Kind::Flush => (extras == 0 || extras == 4) && key == 0 && value == 0,
            Kind::Verbosity => extras == 4 && key == 0 && value == 0,
            Kind::Stat => extras == 0 && value == 0,
            Kind::SaslAuth | Kind::SaslStep => extras == 0 && key > 0 && key <= MAX_SASL_MECH_LEN,
        }
    }

    /// Whether the value is more than this command may make us buffer.
    fn too_large(self, h: &Header, limits: &Limits) -> bool {
        match self {
            Kind::Store(_) => h.key_len + h.value_len() > limits.max_item_size,
            Kind::SaslAuth | Kind::SaslStep => h.value_len() > MAX_SASL_DATA_LEN,
            // Every other shape has no value at all (see `fits`).
            _ => false,
        }
    }

    /// Build the command from a packet whose shape `fits` accepted; `None`
    /// only if the extras are shorter than that promised.
    fn command(self, h: &Header, extras: &[u8], key: &[u8], value: &[u8]) -> Option<Command> {
        let key = Key::copy_from_slice(key);
        let cas = (h.cas != 0).then_some(h.cas);
        Some(match self {
            Kind::Get => Command::Get(Get {
                keys: smallvec::smallvec![key],
                ..Get::default()
            }),
            Kind::GetAndTouch => Command::Get(Get {
                keys: smallvec::smallvec![key],
                touch: Some(Exptime::from(be_u32(extras, 0)?)),
                ..Get::default()
            }),
            Kind::Store(mode) => {
                // APPEND/PREPEND have no extras: they keep the item's own.
                let (flags, exptime) = if extras.is_empty() {
                    (0, 0)
                } else {
                    (be_u32(extras, 0)?, Exptime::from(be_u32(extras, 4)?))
                };
                Command::Store(Store {
                    mode,
                    key,
                    flags,
                    exptime,
                    data: Bytes::copy_from_slice(value),
                    cas,
                    invalidate: false,
                    vivify: None,
                })
            }
            Kind::Delete => Command::Delete(Delete {
                key,
                cas,
                invalidate: false,
                exptime: None,
            }),
            Kind::Arith { incr } => {
                let expiration = be_u32(extras, 16)?;
                Command::Arith(Arith {
                    key,
                    incr,
                    delta: be_u64(extras, 0)?,
                    cas,
                    vivify: (expiration != NO_VIVIFY).then_some(Exptime::from(expiration)),
                    initial: be_u64(extras, 8)?,
                    touch: None,
                })
            }
            Kind::Quit => Command::Quit,
            Kind::Flush => Command::FlushAll {
                delay: be_u32(extras, 0).map_or(0, Exptime::from),
            },
            Kind::Noop => Command::Noop,
            Kind::Version => Command::Version,
            Kind::Stat => Command::Stats {
                group: (!key.is_empty()).then_some(key),
            },
            Kind::Verbosity => Command::Verbosity,
            Kind::Touch => Command::Touch {
                key,
                exptime: Exptime::from(be_u32(extras, 0)?),
            },
            Kind::SaslList => Command::SaslList,
            Kind::SaslAuth => Command::SaslAuth {
                mechanism: key,
                data: Bytes::copy_from_slice(value),
            },
            Kind::SaslStep => Command::SaslStep {
                mechanism: key,
                data: Bytes::copy_from_slice(value),
            },
        })
    }
}
