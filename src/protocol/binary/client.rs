//! The client side: write a request, read and decode the reply (the proxy's
//! upstream connections to nodes or to a real memcached started with `-S`).

use super::wire::{be_u32, be_u64, Header, Packet};
use super::{
    opcode, status, ResponsePacket, Unsupported, EXPIRED, HEADER_LEN, MAX_RESPONSE_BODY, NO_VIVIFY,
    REQUEST_MAGIC, RESPONSE_MAGIC,
};
use crate::protocol::request::{Command, Exptime, MetaFrame, Store, StoreMode};
use crate::protocol::response::{ErrorReply, Found, Response};
use crate::protocol::Frame;
use crate::protocol::{ProtocolError, MAX_KEY_LEN};
use bytes::{Bytes, BytesMut};

/// The binary expiration for an exptime. A negative exptime ("already
/// expired") can only be said as a past absolute time; one past 2106
/// saturates.
fn wire_exptime(exptime: Exptime) -> u32 {
    if exptime < 0 {
        EXPIRED
    } else {
        u32::try_from(exptime).unwrap_or(u32::MAX)
    }
}

/// Encode `command` as one request packet; returns the opcode used.
///
/// Gets use GETK/GATK so that pipelined replies name their key; `quiet`
/// picks the quiet form where one exists (GETKQ, SETQ, ...). A multi-key get
/// is the caller's to split, one packet per key.
pub fn encode_request(
    command: &Command,
    quiet: bool,
    opaque: u32,
    out: &mut BytesMut,
) -> Result<u8, Unsupported> {
    use opcode::*;
    let pick = |loud: u8, hushed: u8| if quiet { hushed } else { loud };
    let none: &[u8] = &[];
    let (opcode, extras, key, value, cas): (u8, Vec<u8>, &[u8], &[u8], Option<u64>) = match command
    {
        Command::Get(get) => {
            if get.vivify.is_some() || get.recache_below.is_some() || get.no_bump {
                return Err(Unsupported("meta get flags N, R or u"));
            }
            let [key] = get.keys.as_slice() else {
                return Err(Unsupported("a get of other than one key"));
            };
            match get.touch {
                None => (pick(GETK, GETKQ), Vec::new(), key, none, None),
                Some(exptime) => {
                    let extras = wire_exptime(exptime).to_be_bytes().to_vec();
                    (pick(GATK, GATKQ), extras, key, none, None)
                }
            }
        }
        Command::Store(store) => {
            if store.invalidate || store.vivify.is_some() {
                return Err(Unsupported("meta set flags I or N"));
            }
            let (opcode, extras) = match store.mode {
                StoreMode::Set => (pick(SET, SETQ), true),
                StoreMode::Add => (pick(ADD, ADDQ), true),
                StoreMode::Replace => (pick(REPLACE, REPLACEQ), true),
                StoreMode::Append => (pick(APPEND, APPENDQ), false),
                StoreMode::Prepend => (pick(PREPEND, PREPENDQ), false),
            };
            // APPEND/PREPEND carry no flags or expiry: the item keeps its own.
            let extras = if extras {
                [
                    store.flags.to_be_bytes(),
                    wire_exptime(store.exptime).to_be_bytes(),
                ]
                .concat()
            } else {
                Vec::new()
            };
            (opcode, extras, &store.key, &store.data, store.cas)
        }
        Command::Delete(delete) => {
            if delete.invalidate || delete.exptime.is_some() {
                return Err(Unsupported("meta delete flags I or T"));
            }
            (
                pick(DELETE, DELETEQ),
                Vec::new(),
                &delete.key,
                none,
                delete.cas,
            )
        }
        Command::Arith(arith) => {
            if arith.touch.is_some() {
                return Err(Unsupported("meta arithmetic flag T"));
            }
            let opcode = if arith.incr {
                pick(INCREMENT, INCREMENTQ)
            } else {
                pick(DECREMENT, DECREMENTQ)
            };
            // All one-bits means "do not create", so a real expiry must
            // stay below it.
            let expiration = arith
                .vivify
                .map_or(NO_VIVIFY, |e| wire_exptime(e).min(NO_VIVIFY - 1));
            let extras = [
                &arith.delta.to_be_bytes()[..],
                &arith.initial.to_be_bytes(),
                &expiration.to_be_bytes(),
            ]
            .concat();
            (opcode, extras, &arith.key, none, arith.cas)
        }
        Command::Touch { key, exptime } => {
            let extras = wire_exptime(*exptime).to_be_bytes().to_vec();
            (TOUCH, extras, key, none, None)
        }
        Command::FlushAll { delay } => {
            // A delay in the past means now: as an absolute time it would
            // flush nothing.
            let extras = wire_exptime((*delay).max(0)).to_be_bytes().to_vec();
            (pick(FLUSH, FLUSHQ), extras, none, none, None)
        }
        Command::Version => (VERSION, Vec::new(), none, none, None),
        Command::Verbosity => (VERBOSITY, vec![0; 4], none, none, None),
        Command::Stats { group } => {
            let group = group.as_deref().unwrap_or_default();
            // The group travels as the key, which the server bounds; a text
            // `stats` line can hold a longer one.
            if group.len() > MAX_KEY_LEN {
                return Err(Unsupported("a stats group longer than a key"));
            }
            (STAT, Vec::new(), group, none, None)
        }
        Command::Quit => (pick(QUIT, QUITQ), Vec::new(), none, none, None),
        Command::Noop => (NOOP, Vec::new(), none, none, None),
        Command::MetaDebug { .. } => return Err(Unsupported("me (meta debug)")),
        Command::Bury { .. } | Command::Copy { .. } => {
            return Err(Unsupported("memgate's tombstones (meta flag G)"))
        }
        Command::SaslList => (SASL_LIST_MECHS, Vec::new(), none, none, None),
        Command::SaslAuth { mechanism, data } => (SASL_AUTH, Vec::new(), mechanism, data, None),
        Command::SaslStep { mechanism, data } => (SASL_STEP, Vec::new(), mechanism, data, None),
    };
    // A CAS of 0 on the wire means "no check", so "must equal 0" is unsayable.
    let cas = match cas {
        Some(0) => return Err(Unsupported("a compare-and-swap against 0")),
        Some(cas) => cas,
        None => 0,
    };
    let packet = Packet {
        cas,
        extras: &extras,
        key,
        value,
        ..Packet::new(opcode, opaque)
    };
    packet.write(REQUEST_MAGIC, out)?;
    Ok(opcode)
}

/// The first meta flag of this request that binary has no field for, named
/// for the client's `CLIENT_ERROR`, so that it learns what to drop (or that
/// the node should be reached over meta).
pub fn cannot_carry(command: &Command, frame: &Frame) -> Option<&'static str> {
    let named = match command {
        Command::Get(get) if get.vivify.is_some() => Some("meta flag N (vivify)"),
        Command::Get(get) if get.recache_below.is_some() => Some("meta flag R (recache)"),
        Command::Get(get) if get.no_bump => Some("meta flag u (no LRU bump)"),
        Command::Store(store) if store.invalidate => Some("meta flag I (invalidate)"),
        Command::Store(store) if store.vivify.is_some() => Some("meta flag N (vivify)"),
        Command::Delete(delete) if delete.invalidate => Some("meta flag I (invalidate)"),
        Command::Delete(delete) if delete.exptime.is_some() => Some("meta flag T on md"),
        Command::Arith(arith) if arith.touch.is_some() => Some("meta flag T on ma"),
        Command::MetaDebug { .. } => Some("me (meta debug)"),
        Command::Bury { .. } | Command::Copy { .. } => Some("memgate's tombstones (meta flag G)"),
        _ => None,
    };
    let Frame::Meta(meta) = frame else {
        return named;
    };
    let MetaFrame {
        return_hit,
        return_last_access,
        return_ttl,
        ..
    } = **meta;
    let asks_item = matches!(command, Command::Get(_) | Command::Arith(_));
    named.or(match () {
        () if return_hit && asks_item => Some("meta flag h (hit before)"),
        () if return_last_access && asks_item => Some("meta flag l (last access)"),
        () if return_ttl && asks_item => Some("meta flag t (remaining TTL)"),
        () => None,
    })
}

/// Parse one reply packet from the front of `buf`: `None` until it is whole.
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponsePacket, usize)>, ProtocolError> {
    let Some(h) = Header::read(buf, RESPONSE_MAGIC)? else {
        return Ok(None);
    };
    if h.body_len > MAX_RESPONSE_BODY {
        return Err(ProtocolError::BadBodyLength(
            u32::try_from(h.body_len).unwrap_or(u32::MAX),
        ));
    }
    let Some((extras, key, value)) = h.body(buf) else {
        return Ok(None);
    };
    let packet = ResponsePacket {
        opcode: h.opcode,
        status: h.status,
        opaque: h.opaque,
        cas: h.cas,
        extras: Bytes::copy_from_slice(extras),
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    };
    Ok(Some((packet, HEADER_LEN + h.body_len)))
}

/// Whether `packet` is the last reply `command` will get. Only a STAT
/// answer spans packets: it ends with one that has an empty key (or with an
/// error).
pub fn ends_reply(command: &Command, packet: &ResponsePacket) -> bool {
    !matches!(command, Command::Stats { .. })
        || packet.status != status::NO_ERROR
        || packet.key.is_empty()
}

fn value_text(packet: &ResponsePacket) -> String {
    String::from_utf8_lossy(&packet.value).into_owned()
}

fn malformed(what: &str) -> Response {
    Response::Error(ErrorReply::Server(format!("malformed binary {what} reply")))
}

/// Turn one reply packet to `command` back into a dialect-neutral response.
///
/// A STAT packet decodes to `Stats` holding its one pair, and the
/// terminator to an empty `Stats`: the caller concatenates them until
/// [`ends_reply`]. Statuses that depend on the command (0x01 and 0x02 for
/// ADD/REPLACE, 0x20) are mapped back to what the other dialects say.
pub fn decode_response(command: &Command, packet: &ResponsePacket) -> Response {
    let plain_store = |wanted: StoreMode| matches!(command, Command::Store(Store { mode, cas: None, .. }) if *mode == wanted);
    match packet.status {
        status::NO_ERROR => decode_success(command, packet),
        status::KEY_NOT_FOUND => match command {
            Command::Get(_) => Response::Get(vec![None]),
            // memcached's binary answer to a stats group it does not know;
            // its text protocol (and our node) says ERROR.
            Command::Stats { .. } => Response::Error(ErrorReply::UnknownCommand),
            _ if plain_store(StoreMode::Replace) => Response::NotStored,
            _ => Response::NotFound,
        },
        status::KEY_EXISTS if plain_store(StoreMode::Add) => Response::NotStored,
        status::KEY_EXISTS => Response::Exists,
        status::ITEM_NOT_STORED => Response::NotStored,
        status::VALUE_TOO_LARGE => Response::Error(ErrorReply::TooLarge),
        status::INVALID_ARGUMENTS => Response::Error(ErrorReply::Client(value_text(packet))),
        status::NON_NUMERIC => Response::Error(ErrorReply::NonNumeric),
        status::AUTH_ERROR => Response::Error(match command {
            Command::SaslList | Command::SaslAuth { .. } | Command::SaslStep { .. } => {
                ErrorReply::AuthFailure
            }
            Command::FlushAll { .. } => ErrorReply::FlushNotAllowed,
            // An authenticated credential without `write` (stores come back
            // as NOT_STORED instead).
            Command::Delete(_) | Command::Arith(_) | Command::Touch { .. } => {
                ErrorReply::PermissionDenied
            }
            Command::Get(get) if get.touch.is_some() => ErrorReply::PermissionDenied,
            _ => ErrorReply::Unauthenticated,
        }),
        status::AUTH_CONTINUE => Response::AuthContinue(packet.value.clone()),
        status::UNKNOWN_COMMAND => Response::Error(ErrorReply::UnknownCommand),
        status::OUT_OF_MEMORY => Response::Error(ErrorReply::OutOfMemory),
        status::INTERNAL_ERROR => Response::Error(ErrorReply::Server(value_text(packet))),
        other => Response::Error(ErrorReply::Server(format!(
            "binary status {other:#06x}: {}",
            value_text(packet)
        ))),
    }
}

fn decode_success(command: &Command, packet: &ResponsePacket) -> Response {
    match command {
        Command::Get(get) => {
            let Some(flags) = be_u32(&packet.extras, 0) else {
                return malformed("get");
            };
            // GET and GAT replies do not echo the key; GETK and GATK do.
            let key = if packet.key.is_empty() {
                get.keys.first().cloned().unwrap_or_default()
            } else {
                packet.key.clone()
            };
            Response::Get(vec![Some(Found {
                key,
                flags,
                cas: packet.cas,
                data: packet.value.clone(),
                // The binary protocol does not say.
                ttl: -1,
                ..Found::default()
            })])
        }
        Command::Store(_) => Response::Stored { cas: packet.cas },
        Command::Delete(_) => Response::Deleted,
        Command::Arith(_) => match (packet.value.len(), be_u64(&packet.value, 0)) {
            (8, Some(value)) => Response::Number {
                value,
                cas: packet.cas,
                ttl: -1,
            },
            _ => malformed("incr/decr"),
        },
        Command::Touch { .. } => Response::Touched,
        Command::FlushAll { .. } | Command::Verbosity | Command::Quit => Response::Ok,
        Command::Version => Response::Version(value_text(packet)),
        Command::Stats { .. } => Response::Stats(
            (!packet.key.is_empty())
                .then(|| {
                    (
                        String::from_utf8_lossy(&packet.key).into_owned(),
                        value_text(packet),
                    )
                })
                .into_iter()
                .collect(),
        ),
        Command::Noop => Response::Noop,
        Command::SaslList => Response::SaslMechs(value_text(packet)),
        Command::SaslAuth { .. } | Command::SaslStep { .. } => Response::AuthOk,
        // `encode_request` never sends them.
        Command::MetaDebug { .. } => malformed("meta debug"),
        Command::Bury { .. } | Command::Copy { .. } => malformed("tombstone"),
    }
}
