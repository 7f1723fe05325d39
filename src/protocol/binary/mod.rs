//! memcached's binary protocol, sans-IO, both directions.
//!
//! Server side (the node, and the proxy facing its own clients):
//! [`parse_request`] turns the front of a buffer into a [`Request`](super::Request) and
//! [`encode_response`] writes a [`Response`](super::Response) back. Client side (the proxy's
//! upstream connections to nodes or to a real memcached started with `-S`):
//! [`encode_request`], [`parse_response`] and [`decode_response`].
//!
//! Every packet is a 24-byte big-endian header followed by extras, key and
//! value. Header validity is decided from the header alone, so a refused
//! request (unknown opcode, wrong shape, over-size value) is answered without
//! ever buffering its body: the caller drops the header and skips the rest.
//!
//! Where memcached 1.6 (`proto_bin.c`) and the 2008 draft disagree, memcached
//! wins: it is what client libraries were tested against.

mod client;
mod server;
#[cfg(test)]
mod tests;
mod wire;

use super::response::ErrorReply;
use bytes::Bytes;

pub use client::{cannot_carry, decode_response, encode_request, ends_reply, parse_response};
pub use server::{encode_keyed_response, encode_response, parse_request, put_get};

pub const REQUEST_MAGIC: u8 = 0x80;
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Every packet starts with a header this long.
pub const HEADER_LEN: usize = 24;
/// memcached refuses SASL mechanism names longer than this (`MAX_SASL_MECH_LEN`).
pub const MAX_SASL_MECH_LEN: usize = 32;
/// SASL data is buffered before anyone has authenticated, so it gets a small
/// bound of its own; a PLAIN message is a username and a password.
pub const MAX_SASL_DATA_LEN: usize = 4096;
/// A reply body larger than this from an upstream is a broken stream: a value
/// can be at most the item size limit, and nothing else comes close.
pub const MAX_RESPONSE_BODY: usize = 2 * 1024 * 1024;

/// Expiration extras value that tells INCREMENT/DECREMENT not to create a
/// missing counter.
const NO_VIVIFY: u32 = u32::MAX;
/// The smallest expiry memcached reads as an absolute unix time (30 days + 1
/// second). It lies in 1970, so an item stored with it is already expired:
/// the binary spelling of the text protocol's negative exptime.
const EXPIRED: u32 = 60 * 60 * 24 * 30 + 1;

/// Request opcodes memcached 1.6 knows (0x1f is unassigned).
pub mod opcode {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes (memcached's `protocol_binary.h`).
pub mod status {
    pub const NO_ERROR: u16 = 0x00;
    pub const KEY_NOT_FOUND: u16 = 0x01;
    pub const KEY_EXISTS: u16 = 0x02;
    pub const VALUE_TOO_LARGE: u16 = 0x03;
    pub const INVALID_ARGUMENTS: u16 = 0x04;
    pub const ITEM_NOT_STORED: u16 = 0x05;
    pub const NON_NUMERIC: u16 = 0x06;
    /// Defined for vbucket-aware servers; memcached never sends it.
    pub const NOT_MY_VBUCKET: u16 = 0x07;
    pub const AUTH_ERROR: u16 = 0x20;
    pub const AUTH_CONTINUE: u16 = 0x21;
    pub const UNKNOWN_COMMAND: u16 = 0x81;
    pub const OUT_OF_MEMORY: u16 = 0x82;
    pub const NOT_SUPPORTED: u16 = 0x83;
    pub const INTERNAL_ERROR: u16 = 0x84;
    pub const BUSY: u16 = 0x85;
    pub const TEMPORARY_FAILURE: u16 = 0x86;
}

/// The binary status that answers `error`.
pub fn error_status(error: &ErrorReply) -> u16 {
    match error {
        ErrorReply::UnknownCommand => status::UNKNOWN_COMMAND,
        ErrorReply::Client(_) => status::INVALID_ARGUMENTS,
        ErrorReply::Server(_) => status::INTERNAL_ERROR,
        ErrorReply::TooLarge => status::VALUE_TOO_LARGE,
        ErrorReply::OutOfMemory => status::OUT_OF_MEMORY,
        ErrorReply::NonNumeric => status::NON_NUMERIC,
        ErrorReply::Unauthenticated
        | ErrorReply::AuthFailure
        | ErrorReply::AuthThrottled
        | ErrorReply::PermissionDenied
        | ErrorReply::FlushNotAllowed => status::AUTH_ERROR,
    }
}

/// A command the binary protocol has no way to say (a meta-only option, a
/// multi-key get, a length that does not fit the header).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the binary protocol cannot express {0}")]
pub struct Unsupported(pub &'static str);

/// One reply packet from an upstream, owned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponsePacket {
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Bytes,
    pub key: Bytes,
    pub value: Bytes,
}
