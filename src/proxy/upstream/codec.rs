//! Each upstream dialect's encoder and reply matcher, behind one type, so
//! that sending and reading do not ask which dialect they speak.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;

use super::inflight::{InFlight, NoReply};
use super::{upstream_limits, UpstreamError, UpstreamProtocol};
use crate::protocol::meta::client::Expect;
use crate::protocol::request::StatsReply;
use crate::protocol::{binary, meta, Command, Frame, Response};

/// How one connection's requests are written and its replies read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Codec {
    /// Meta requests, one reply each, matched by the proxy's `O<seq>`.
    Meta,
    /// Binary requests, matched by the header's opaque.
    Binary,
}

impl Codec {
    /// The codec of a connection logged in speaking `protocol`. A
    /// connection is never spawned with `Auto`: its login found the dialect
    /// first (`Connection::open`); meta is the answer it would get most.
    pub fn of(protocol: UpstreamProtocol) -> Codec {
        match protocol {
            UpstreamProtocol::Meta | UpstreamProtocol::MetaMemcached | UpstreamProtocol::Auto => {
                Codec::Meta
            }
            UpstreamProtocol::Binary => Codec::Binary,
        }
    }

    /// Append `command`, as a client framed by `frame` sent it, to `out` with
    /// `opaque` as its sequence number; returns the shape of its reply, or
    /// what cannot be sent (`out` is then unchanged).
    pub fn encode(
        self,
        command: &Command,
        frame: &Frame,
        opaque: u32,
        out: &mut BytesMut,
    ) -> Result<Expect, UpstreamError> {
        match self {
            Codec::Meta => meta::client::encode_request(command, frame, opaque, out)
                .map_err(|e| UpstreamError::NotCarried(e.0)),
            Codec::Binary => {
                encode_binary(command, frame, opaque, out).map_err(UpstreamError::Unsupported)
            }
        }
    }

    /// Complete every request in flight whose whole reply is in `buf`,
    /// consuming those replies. An error means the stream can no longer be
    /// trusted: the connection is dropped.
    pub fn drain(
        self,
        buf: &mut BytesMut,
        inflight: &Mutex<VecDeque<InFlight>>,
        node: &str,
    ) -> Result<(), UpstreamError> {
        match self {
            Codec::Meta => drain_meta_replies(buf, inflight, node),
            Codec::Binary => drain_binary_replies(buf, inflight, node),
        }
    }
}

/// Encode a request for a binary-only node, refusing what binary cannot
/// carry with the name of the flag, so that the client learns what to drop
/// (or that the node should be reached over meta). The returned `Expect` is
/// unused: binary replies carry their own shape.
fn encode_binary(
    command: &Command,
    frame: &Frame,
    opaque: u32,
    out: &mut BytesMut,
) -> Result<Expect, &'static str> {
    if let Some(flag) = binary::cannot_carry(command, frame) {
        return Err(flag);
    }
    // As over meta (`meta::client`): a reply that is not STAT packets could
    // not be told from a broken stream.
    if let Command::Stats { group } = command {
        if let StatsReply::Dump(what) = StatsReply::of(group.as_deref()) {
            return Err(what);
        }
    }
    binary::encode_request(command, false, opaque, out)
        .map(|_| Expect::Meta(None))
        .map_err(|binary::Unsupported(what)| what)
}

/// Complete every request whose whole meta reply is buffered. Replies come
/// in request order; a reply that does not parse, echoes another request's
/// opaque or does not fit its command drops the connection.
fn drain_meta_replies(
    buf: &mut BytesMut,
    inflight: &Mutex<VecDeque<InFlight>>,
    node: &str,
) -> Result<(), UpstreamError> {
    use bytes::Buf;
    let corrupt = |why: meta::client::ReplyError| {
        tracing::debug!(node, %why, "upstream meta reply refused; dropping the connection");
        UpstreamError::Protocol {
            node: node.to_string(),
        }
    };
    let limits = upstream_limits();
    loop {
        let mut q = inflight
            .lock()
            .map_err(|_| corrupt(meta::client::ReplyError::Unexpected))?;
        let Some(front) = q.front() else {
            return match buf.is_empty() {
                true => Ok(()),
                false => Err(corrupt(meta::client::ReplyError::Unexpected)),
            };
        };
        let Some((reply, used)) =
            meta::client::parse_reply(buf, front.expect, &limits).map_err(corrupt)?
        else {
            return Ok(());
        };
        buf.advance(used);
        let Some(req) = q.pop_front() else {
            return Err(corrupt(meta::client::ReplyError::Unexpected));
        };
        drop(q);
        if let Some(done) = &req.done {
            done.notify_one();
        }
        match meta::client::decode(req.command, reply) {
            Ok(response) => req.reply.send(Ok(response)),
            Err(why) => {
                let error = corrupt(why);
                req.reply.send(Err(NoReply {
                    error: error.clone(),
                    command: None,
                }));
                return Err(error);
            }
        }
    }
}

/// Complete every request whose whole binary reply is buffered.
fn drain_binary_replies(
    buf: &mut BytesMut,
    inflight: &Mutex<VecDeque<InFlight>>,
    node: &str,
) -> Result<(), UpstreamError> {
    use bytes::Buf;
    let corrupt = || UpstreamError::Protocol {
        node: node.to_string(),
    };
    while let Some((packet, used)) = binary::parse_response(buf).map_err(|_| corrupt())? {
        buf.advance(used);
        let mut q = inflight.lock().map_err(|_| corrupt())?;
        let Some(front) = q.front_mut() else {
            return Err(corrupt());
        };
        if front.opaque != packet.opaque {
            return Err(corrupt());
        }
        if let Command::Stats { .. } = front.command {
            if packet.status == binary::status::NO_ERROR && !packet.key.is_empty() {
                front.stats.push((
                    packet.key.to_vec(),
                    String::from_utf8_lossy(&packet.value).into_owned(),
                ));
                continue;
            }
        }
        let Some(req) = q.pop_front() else {
            return Err(corrupt());
        };
        drop(q);
        let response = match req.command {
            // memcached answers `stats reset` and `stats detail on|off` with
            // the terminating packet alone: the client hears what text says.
            Command::Stats { ref group } if packet.status == binary::status::NO_ERROR => {
                match StatsReply::of(group.as_deref()) {
                    StatsReply::Reset => Response::Reset,
                    StatsReply::Ok => Response::Ok,
                    StatsReply::Items => Response::Dump(req.stats),
                    StatsReply::Pairs | StatsReply::Dump(_) => Response::Stats(
                        req.stats
                            .into_iter()
                            .map(|(name, value)| {
                                (String::from_utf8_lossy(&name).into_owned(), value)
                            })
                            .collect(),
                    ),
                }
            }
            ref command => binary::decode_response(command, &packet),
        };
        if let Some(done) = &req.done {
            done.notify_one();
        }
        req.reply.send(Ok(response));
    }
    Ok(())
}
