//! memcached's classic text protocol (1.6.18), sans-IO, split by direction:
//! [`server`] reads one classic command (and its data block, for storage
//! commands) from a line that [`super::parse`] has split and found not to be
//! a meta command, and writes the reply; [`client`] writes a request, for the
//! benchmark client and the round-trip tests. Both dialects share one
//! connection and the line discipline of `protocol::line`.

pub mod client;
pub mod server;

pub use super::line::{Unencodable, MAX_RETRIEVAL_LINE_LEN};
pub use client::encode_request;
pub use server::{encode, encode_owned, put_end, put_value};
pub(crate) use server::{is_http_request, parse_line};

#[cfg(test)]
mod tests;
