//! One long-lived, logged-in TLS connection to a node, shared by many clients.
//!
//! Requests are encoded in the connection's protocol ([`UpstreamProtocol`]):
//! meta (`protocol::meta::client`) after an ASCII login, or binary after SASL
//! PLAIN. They are pipelined; the node answers them in order, and every
//! reply's opaque (binary's header field, meta's `O<seq>`) must match the
//! oldest request in flight (a mismatch, or any reply that does not parse,
//! means the stream is corrupt: the connection is dropped, never reused). A
//! client's session writes its own request when the connection is idle
//! (`outbox`: flat combining); otherwise a writer task gathers the requests
//! that arrive together into one write, and it takes over any write that
//! cannot finish at once. A
//! reader task parses replies and completes each request's oneshot.
//!
//! memcached `-Z` stalls when a value larger than one TLS record is followed by
//! more pipelined input in the same burst (docs/ARCHITECTURE.md). So after writing a
//! request that large, the writer sends nothing more on this connection until
//! its reply has come back.
//!
//! The same stall hits smaller values too: memcached reads a value that is not
//! wholly in its read buffer straight from OpenSSL, and whatever follows it in
//! the same TLS record stays decrypted inside OpenSSL where its event loop never
//! looks. Any request that straddles two records is such a value. So batches
//! are handed to TLS in pieces of whole requests, each at most one record
//! (rustls starts a new record at every write and cuts records at 16 KiB), and
//! no request is ever split between records except one too large for a record,
//! which is written alone and last.

mod codec;
mod connection;
mod detect;
mod error;
mod inflight;
mod login;
mod outbox;
mod reader;
mod settings;
mod writer;

pub use connection::Connection;
pub use detect::announce;
pub use error::UpstreamError;
pub use inflight::{NoReply, PendingReply, Replied};
pub use settings::{Settings, Target, UpstreamProtocol};

use crate::protocol::request::TextFrame;
use crate::protocol::{binary, Frame, Limits};

/// The frame of a request the proxy makes itself (keepalive pings, the
/// unlink after a refused over-size set): the plainest reply will do.
pub fn internal_frame() -> Frame {
    Frame::Text(TextFrame::default())
}

/// The largest value a node's reply may announce: what a binary reply may
/// carry, so that both protocols accept the same items.
fn upstream_limits() -> Limits {
    Limits {
        max_item_size: binary::MAX_RESPONSE_BODY,
    }
}

#[cfg(test)]
mod tests;
