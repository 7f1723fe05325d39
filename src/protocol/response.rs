//! The dialect-neutral reply model.
//!
//! The node's executor produces a [`Response`] for each [`Command`]; the
//! dialect modules encode it using the request's [`Frame`]. The proxy decodes
//! its upstream's replies (meta, or binary for memcached `-S`) into the same
//! type.
//!
//! [`Command`]: super::request::Command
//! [`Frame`]: super::request::Frame

use bytes::Bytes;

/// One item found by a retrieval, with every field any dialect may ask for.
/// `B` holds the key and the value: owned `Bytes` in a [`Response`], or
/// `&[u8]` borrowed from the node's store while its shard is locked, so
/// that a reply encoded from it copies the value once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found<B = Bytes> {
    pub key: B,
    pub flags: u32,
    pub cas: u64,
    pub data: B,
    /// Remaining TTL in seconds, -1 for none.
    pub ttl: i64,
    /// Seconds since the last access (before this one).
    pub last_access: u64,
    /// The item had been fetched before this request.
    pub fetched: bool,
    /// meta `W`: this client won the right to recache.
    pub won: bool,
    /// meta `X`: the item is stale (invalidated).
    pub stale: bool,
    /// meta `Z`: a win was already handed to another client.
    pub win_sent: bool,
}

impl Found<&[u8]> {
    /// The same item with its own copy of the key and the value.
    pub fn to_owned(&self) -> Found {
        Found {
            key: Bytes::copy_from_slice(self.key),
            flags: self.flags,
            cas: self.cas,
            data: Bytes::copy_from_slice(self.data),
            ttl: self.ttl,
            last_access: self.last_access,
            fetched: self.fetched,
            won: self.won,
            stale: self.stale,
            win_sent: self.win_sent,
        }
    }
}

/// The outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A retrieval: one entry per requested key, in request order.
    Get(Vec<Option<Found>>),
    /// Stored; carries the new CAS unique (binary and meta `c` return it).
    Stored {
        cas: u64,
    },
    /// add on an existing key, replace/append/prepend on a missing one, or a
    /// storage command the credential may not perform.
    NotStored,
    /// CAS mismatch.
    Exists,
    /// The key was not there (cas, delete, incr/decr, touch).
    NotFound,
    Deleted,
    /// memgate's delete under a tombstone (`md <key> G<ttl> c`): deleted,
    /// and the removed item's CAS was `cas`. Every dialect prints it as
    /// [`Response::Deleted`]; only a meta `c` shows the CAS (`HD c<cas>`).
    DeletedCas {
        cas: u64,
    },
    /// memgate's delete under a tombstone (`md <key> G<ttl> c`) of a key
    /// that was not there: `cas` is the node's CAS clock for the key, above
    /// every CAS it gave the key before. Every dialect prints it as
    /// [`Response::NotFound`]; only a meta `c` shows the CAS (`NF c<cas>`).
    NotFoundCas {
        cas: u64,
    },
    Touched,
    /// incr/decr result, with the item's CAS and TTL (meta `c`/`t`).
    Number {
        value: u64,
        cas: u64,
        ttl: i64,
    },
    /// flush_all, verbosity.
    Ok,
    Version(String),
    /// `stats [group]`: name/value pairs in order.
    Stats(Vec<(String, String)>),
    /// `stats cachedump`: (key, `[<bytes> b; <exptime> s]`) per item, text
    /// `ITEM <key> <bracket>` lines then `END`.
    Dump(Vec<(Vec<u8>, String)>),
    /// `stats reset`: text `RESET`, binary an empty stats list.
    Reset,
    /// mn / NOOP.
    Noop,
    /// me: the item's metadata (`None` on a miss).
    MetaDebug(Option<Vec<(String, String)>>),
    /// SASL mechanisms list, e.g. "PLAIN".
    SaslMechs(String),
    /// SASL succeeded (binary status 0, body "Authenticated").
    AuthOk,
    /// SASL needs another step, with the server's challenge.
    AuthContinue(Bytes),
    /// Any reply that is an error.
    Error(ErrorReply),
    /// Write nothing (a quiet binary op or quit).
    Silent,
}

/// An error reply. Each maps to memcached's text string and to a binary
/// status, which the binary protocol module assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorReply {
    /// `ERROR` / 0x81: unknown command.
    UnknownCommand,
    /// `CLIENT_ERROR <msg>` / 0x04 (invalid arguments).
    Client(String),
    /// `SERVER_ERROR <msg>` / 0x84 (internal error).
    Server(String),
    /// `SERVER_ERROR object too large for cache` / 0x03.
    TooLarge,
    /// `SERVER_ERROR out of memory storing object` / 0x82.
    OutOfMemory,
    /// `CLIENT_ERROR cannot increment or decrement non-numeric value` / 0x06.
    NonNumeric,
    /// `CLIENT_ERROR unauthenticated` / 0x20.
    Unauthenticated,
    /// `CLIENT_ERROR authentication failure` / 0x20.
    AuthFailure,
    /// A login refused unchecked after too many failures: the text of
    /// [`ErrorReply::AuthFailure`] and the same status, saying to retry later.
    AuthThrottled,
    /// `CLIENT_ERROR permission denied` / 0x20.
    PermissionDenied,
    /// `CLIENT_ERROR flush_all not allowed` / 0x20.
    FlushNotAllowed,
}

impl ErrorReply {
    /// The text protocol line, without `\r\n`.
    pub fn text(&self) -> String {
        match self {
            ErrorReply::UnknownCommand => "ERROR".into(),
            ErrorReply::Client(msg) => format!("CLIENT_ERROR {msg}"),
            ErrorReply::Server(msg) => format!("SERVER_ERROR {msg}"),
            ErrorReply::TooLarge => "SERVER_ERROR object too large for cache".into(),
            ErrorReply::OutOfMemory => "SERVER_ERROR out of memory storing object".into(),
            ErrorReply::NonNumeric => {
                "CLIENT_ERROR cannot increment or decrement non-numeric value".into()
            }
            ErrorReply::Unauthenticated => "CLIENT_ERROR unauthenticated".into(),
            ErrorReply::AuthFailure => "CLIENT_ERROR authentication failure".into(),
            ErrorReply::AuthThrottled => {
                "CLIENT_ERROR authentication failure: too many failed logins, retry later".into()
            }
            ErrorReply::PermissionDenied => "CLIENT_ERROR permission denied".into(),
            ErrorReply::FlushNotAllowed => "CLIENT_ERROR flush_all not allowed".into(),
        }
    }
}
