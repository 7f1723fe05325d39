//! `--check`'s requests and replies on the wire, in each dialect, sans-IO.
//!
//! Each request the checker sends is one [`Wire`] entry in the connection's
//! in-flight queue, in send order. [`Reader::next`] takes the bytes read so
//! far and the queue, and says what the oldest entries came to. How a reply
//! is matched to its request:
//! - binary: the opaque of every packet (and the opcode it echoes, and the
//!   key GETK/GETKQ echo); quiet requests (SETQ, DELETEQ, GETKQ) that the
//!   reply skipped over succeeded silently (a GETKQ missed), as memcached's
//!   binary clients read them;
//! - meta: the `O<opaque>` of every reply, with the same rule for `q`
//!   requests and `mn` closing each batch that ends quiet;
//! - text: the reply's shape (STORED answers a set, DELETED/NOT_FOUND a
//!   delete, VALUE…END a get) and the keys VALUE lines echo, which must be
//!   keys of the get, each at most once (in any order: protocol.txt does not
//!   promise one).
//!
//! A reply matched to the wrong request is `out_of_order`, and the
//! connection is then not trusted any further: it is closed, and what was in
//! flight on it becomes indeterminate, as after a timeout.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::OwnedSemaphorePermit;

use crate::protocol::binary::{self, opcode, status};
use crate::protocol::meta::client::{self as meta_client, Code, Expect, ReplyError};
use crate::protocol::request::{
    Command, Delete, Frame, Get, MetaFrame, Opaque, Store, StoreMode, TextFrame,
};
use crate::protocol::text::client::{self as text_client, TextReply};
use crate::protocol::{text, Limits, Request};

use super::super::conn::MAX_REPLY_VALUE;
use super::super::Protocol;

/// What one request on the wire asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Set {
        key: u64,
        seq: u64,
    },
    Delete {
        key: u64,
        seq: u64,
    },
    /// One key of a get; `sent_after` is this connection's last write of
    /// the key sent before it.
    Get {
        key: u64,
        sent_after: u64,
    },
    /// A text `get` of several keys, each with its `sent_after`.
    TextGet {
        keys: Vec<(u64, u64)>,
    },
    /// NOOP / `mn`: closes a batch of quiet requests.
    End,
}

/// One request in flight.
pub struct Wire {
    pub part: Part,
    pub opaque: u32,
    /// Binary: the opcode the reply must echo.
    pub opcode: u8,
    pub quiet: bool,
    pub sent: Instant,
    /// The pipeline window slot of the operation this request belongs to
    /// (the parts of a multi-key get share one).
    pub slot: Option<Arc<OwnedSemaphorePermit>>,
}

/// What became of one in-flight request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write was acknowledged (a delete's NOT_FOUND too: the key is gone).
    Acked,
    /// One value per key of the get, `None` for a miss.
    Read(Vec<Option<Bytes>>),
    /// An error reply: a write's outcome is unknown.
    Error(String),
    /// The NOOP or `mn` came back.
    Ended,
}

/// The reply stream cannot be matched to the requests any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// A reply to a different request, or in the wrong order: a violation.
    OutOfOrder(String),
    /// Bytes that are no reply at all: an error, not a violation.
    Malformed(String),
}

/// Key names: one namespace per run, so every key starts absent.
#[derive(Clone, Debug)]
pub struct Keys {
    run: u32,
}

impl Keys {
    pub fn new(run: u32) -> Keys {
        Keys { run }
    }

    pub fn name(&self, key: u64) -> Bytes {
        Bytes::from(format!("{}{key}", self.prefix()))
    }

    /// What every key name of the run starts with (the examples give
    /// indexes: this finds the keys on the server).
    pub fn prefix(&self) -> String {
        format!("mgc:{:08x}:", self.run)
    }
}

/// Writes requests and reads replies in one dialect.
pub struct CheckCodec {
    pub protocol: Protocol,
    pub keys: Keys,
    limits: Limits,
}

impl CheckCodec {
    pub fn new(protocol: Protocol, keys: Keys) -> CheckCodec {
        CheckCodec {
            protocol,
            keys,
            limits: Limits {
                max_item_size: MAX_REPLY_VALUE,
            },
        }
    }

    /// Append `part` (with `value` for a set) to `out`; returns the binary
    /// opcode used (0 in text and meta).
    pub fn encode(
        &self,
        part: &Part,
        value: Option<Bytes>,
        quiet: bool,
        opaque: u32,
        out: &mut BytesMut,
    ) -> Result<u8, String> {
        let command = match part {
            Part::Set { key, .. } => Command::Store(Store {
                mode: StoreMode::Set,
                key: self.keys.name(*key),
                flags: 0,
                exptime: 0,
                data: value.unwrap_or_default(),
                cas: None,
                invalidate: false,
                vivify: None,
            }),
            Part::Delete { key, .. } => Command::Delete(Delete {
                key: self.keys.name(*key),
                cas: None,
                invalidate: false,
                exptime: None,
            }),
            Part::Get { key, .. } => Command::Get(Get {
                keys: smallvec::smallvec![self.keys.name(*key)],
                ..Get::default()
            }),
            Part::TextGet { keys } => Command::Get(Get {
                keys: keys.iter().map(|&(k, _)| self.keys.name(k)).collect(),
                ..Get::default()
            }),
            Part::End => Command::Noop,
        };
        match self.protocol {
            Protocol::Binary => {
                binary::encode_request(&command, quiet, opaque, out).map_err(|e| e.to_string())
            }
            Protocol::Meta => {
                if command == Command::Noop {
                    out.put_slice(b"mn\r\n");
                    return Ok(0);
                }
                let frame = MetaFrame {
                    return_value: matches!(command, Command::Get(_)),
                    quiet,
                    opaque: Opaque::new(opaque.to_string().as_bytes()),
                    ..MetaFrame::default()
                };
                meta_client::encode_line(&frame, &command, None, out)
                    .map(|()| 0)
                    .map_err(|e| e.to_string())
            }
            Protocol::Text => {
                let request = Request {
                    command,
                    frame: Frame::Text(TextFrame::default()),
                };
                text::encode_request(&request, out)
                    .map(|()| 0)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// What the front of `queue` came to, given the reply bytes in `buf`:
    /// `(entries resolved, outcome of each, bytes used)`, or `None` until a
    /// whole reply is buffered. Quiet requests a reply skipped over are
    /// resolved with it, in order.
    pub fn next<'q>(
        &self,
        buf: &[u8],
        queue: impl Iterator<Item = &'q Wire>,
    ) -> Result<Option<(Vec<Outcome>, usize)>, Broken> {
        match self.protocol {
            Protocol::Text => self.next_text(buf, queue),
            Protocol::Binary => self.next_binary(buf, queue),
            Protocol::Meta => self.next_meta(buf, queue),
        }
    }

    fn next_text<'q>(
        &self,
        buf: &[u8],
        mut queue: impl Iterator<Item = &'q Wire>,
    ) -> Result<Option<(Vec<Outcome>, usize)>, Broken> {
        let malformed = |e: text_client::TextReplyError| Broken::Malformed(e.to_string());
        let Some(front) = queue.next() else {
            return Err(Broken::OutOfOrder(
                "a reply with no request in flight".into(),
            ));
        };
        let Some((first, mut used)) =
            text_client::parse_reply(buf, MAX_REPLY_VALUE).map_err(malformed)?
        else {
            return Ok(None);
        };
        let wrong = |what: &str, got: &TextReply| {
            Err(Broken::OutOfOrder(format!(
                "{what} answered by {}",
                shape(got)
            )))
        };
        let outcome = match (&front.part, first) {
            (_, TextReply::Error(e)) => Outcome::Error(e.text()),
            (Part::Set { .. }, TextReply::Stored) => Outcome::Acked,
            (Part::Set { .. }, TextReply::NotStored) => Outcome::Error("NOT_STORED".into()),
            (Part::Set { .. }, other) => return wrong("a set", &other),
            (Part::Delete { .. }, TextReply::Deleted | TextReply::NotFound) => Outcome::Acked,
            (Part::Delete { .. }, other) => return wrong("a delete", &other),
            (Part::TextGet { keys }, mut reply) => {
                let mut values = vec![None; keys.len()];
                loop {
                    match reply {
                        TextReply::End => break,
                        TextReply::Value { key, data, .. } => {
                            // protocol.txt promises no order for the items
                            // of a multi-key get (twemproxy merges them as
                            // its servers answer), only that each is one of
                            // the keys asked for: another key, or one twice,
                            // answers another request.
                            let at = keys.iter().position(|&(k, _)| self.keys.name(k) == key);
                            match at.and_then(|at| values.get_mut(at)) {
                                Some(slot @ None) => *slot = Some(data),
                                _ => {
                                    return Err(Broken::OutOfOrder(format!(
                                        "VALUE {} to a get of other keys, or twice",
                                        key.escape_ascii()
                                    )))
                                }
                            }
                        }
                        other => return wrong("a get", &other),
                    }
                    let rest = buf.get(used..).unwrap_or_default();
                    match text_client::parse_reply(rest, MAX_REPLY_VALUE).map_err(malformed)? {
                        None => return Ok(None),
                        Some((next, n)) => {
                            reply = next;
                            used += n;
                        }
                    }
                }
                Outcome::Read(values)
            }
            (Part::Get { .. } | Part::End, _) => {
                return Err(Broken::Malformed("a request text does not send".into()))
            }
        };
        Ok(Some((vec![outcome], used)))
    }

    fn next_binary<'q>(
        &self,
        buf: &[u8],
        queue: impl Iterator<Item = &'q Wire>,
    ) -> Result<Option<(Vec<Outcome>, usize)>, Broken> {
        let Some((packet, used)) =
            binary::parse_response(buf).map_err(|e| Broken::Malformed(e.to_string()))?
        else {
            return Ok(None);
        };
        let mut outcomes = Vec::new();
        for front in queue {
            if front.opaque != packet.opaque {
                if front.quiet {
                    outcomes.push(silent(&front.part));
                    continue;
                }
                return Err(Broken::OutOfOrder(format!(
                    "binary reply with opaque {} where {} was expected",
                    packet.opaque, front.opaque
                )));
            }
            if packet.opcode != front.opcode {
                return Err(Broken::OutOfOrder(format!(
                    "binary reply with opcode {:#04x} to opcode {:#04x}",
                    packet.opcode, front.opcode
                )));
            }
            let ok = packet.status == status::NO_ERROR;
            let error = || Outcome::Error(format!("binary status {:#06x}", packet.status));
            let outcome = match &front.part {
                Part::Set { .. } if ok => Outcome::Acked,
                Part::Delete { .. } if ok || packet.status == status::KEY_NOT_FOUND => {
                    Outcome::Acked
                }
                Part::Get { key, .. } if ok => {
                    // GETK and GETKQ echo the key: another key's reply is
                    // a reply to another request.
                    let name = self.keys.name(*key);
                    if packet.key != name {
                        return Err(Broken::OutOfOrder(format!(
                            "binary GETK reply for {} to a get of {}",
                            packet.key.escape_ascii(),
                            name.escape_ascii()
                        )));
                    }
                    Outcome::Read(vec![Some(packet.value.clone())])
                }
                Part::Get { .. } if packet.status == status::KEY_NOT_FOUND => {
                    Outcome::Read(vec![None])
                }
                Part::End => Outcome::Ended,
                _ => error(),
            };
            outcomes.push(outcome);
            return Ok(Some((outcomes, used)));
        }
        Err(Broken::OutOfOrder(format!(
            "binary reply with opaque {} and no request in flight for it",
            packet.opaque
        )))
    }

    fn next_meta<'q>(
        &self,
        buf: &[u8],
        queue: impl Iterator<Item = &'q Wire>,
    ) -> Result<Option<(Vec<Outcome>, usize)>, Broken> {
        let mut outcomes = Vec::new();
        for front in queue {
            let expect = match front.part {
                Part::End => Expect::Meta(None),
                _ => Expect::Meta(Some(front.opaque)),
            };
            let (reply, used) = match meta_client::parse_reply(buf, expect, &self.limits) {
                Ok(None) => return Ok(None),
                Ok(Some(parsed)) => parsed,
                Err(ReplyError::OpaqueMismatch) if front.quiet => {
                    outcomes.push(silent(&front.part));
                    continue;
                }
                Err(ReplyError::OpaqueMismatch | ReplyError::Unexpected) => {
                    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
                    return Err(Broken::OutOfOrder(format!(
                        "meta reply {:?} to request O{}",
                        line.trim_ascii_end().escape_ascii().to_string(),
                        front.opaque
                    )));
                }
                Err(e) => return Err(Broken::Malformed(e.to_string())),
            };
            let meta = match reply {
                meta_client::NodeReply::Meta(meta) => meta,
                // Error lines carry no opaque: behind a quiet request it
                // cannot be told whose it is, so nothing here is trusted.
                meta_client::NodeReply::Error(e) if front.quiet => {
                    return Err(Broken::Malformed(format!(
                        "{} behind a quiet request: whose is unknown",
                        e.text()
                    )))
                }
                meta_client::NodeReply::Error(e) => {
                    outcomes.push(Outcome::Error(e.text()));
                    return Ok(Some((outcomes, used)));
                }
                other => {
                    return Err(Broken::OutOfOrder(format!(
                        "meta reply {other:?} to request O{}",
                        front.opaque
                    )))
                }
            };
            let outcome = match (&front.part, meta.code) {
                (Part::Set { .. }, Code::Hit) => Outcome::Acked,
                (Part::Set { .. }, Code::NotStored) => Outcome::Error("NS".into()),
                (Part::Delete { .. }, Code::Hit | Code::NotFound) => Outcome::Acked,
                (Part::Get { .. }, Code::Value) => Outcome::Read(vec![meta.value]),
                (Part::Get { .. }, Code::Miss) => Outcome::Read(vec![None]),
                (Part::End, Code::Noop) => Outcome::Ended,
                (part, code) => {
                    return Err(Broken::OutOfOrder(format!(
                        "meta {code:?} to {part:?} (O{})",
                        front.opaque
                    )))
                }
            };
            outcomes.push(outcome);
            return Ok(Some((outcomes, used)));
        }
        Err(Broken::OutOfOrder(
            "a meta reply with nothing in flight".into(),
        ))
    }
}

/// A quiet request a later reply skipped over: it succeeded without a word
/// (memcached's quiet rule), and a quiet get missed.
fn silent(part: &Part) -> Outcome {
    match part {
        Part::Get { .. } => Outcome::Read(vec![None]),
        Part::TextGet { keys } => Outcome::Read(vec![None; keys.len()]),
        Part::Set { .. } | Part::Delete { .. } => Outcome::Acked,
        Part::End => Outcome::Ended,
    }
}

/// A text reply, named for a message.
fn shape(reply: &TextReply) -> String {
    match reply {
        TextReply::Value { key, .. } => format!("VALUE {}", key.escape_ascii()),
        other => format!("{other:?}"),
    }
}

/// The binary opcode `part` is sent with.
pub fn binary_opcode(part: &Part, quiet: bool) -> u8 {
    let pick = |loud, hushed| if quiet { hushed } else { loud };
    match part {
        Part::Set { .. } => pick(opcode::SET, opcode::SETQ),
        Part::Delete { .. } => pick(opcode::DELETE, opcode::DELETEQ),
        Part::Get { .. } | Part::TextGet { .. } => pick(opcode::GETK, opcode::GETKQ),
        Part::End => opcode::NOOP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(part: Part, opaque: u32, quiet: bool, protocol: Protocol) -> Wire {
        Wire {
            opcode: if protocol == Protocol::Binary {
                binary_opcode(&part, quiet)
            } else {
                0
            },
            part,
            opaque,
            quiet,
            sent: Instant::now(),
            slot: None,
        }
    }

    fn codec(protocol: Protocol) -> CheckCodec {
        CheckCodec::new(protocol, Keys::new(1))
    }

    #[test]
    fn quiet_meta_requests_resolve_when_a_later_reply_passes_them() {
        let c = codec(Protocol::Meta);
        let queue = [
            wire(Part::Set { key: 1, seq: 1 }, 1, true, Protocol::Meta),
            wire(
                Part::Get {
                    key: 2,
                    sent_after: 0,
                },
                2,
                true,
                Protocol::Meta,
            ),
            wire(
                Part::Get {
                    key: 3,
                    sent_after: 0,
                },
                3,
                true,
                Protocol::Meta,
            ),
            wire(Part::End, 4, false, Protocol::Meta),
        ];
        let buf = b"VA 2 O3\r\nhi\r\nMN\r\n";
        let (outcomes, used) = c.next(buf, queue.iter()).unwrap().unwrap();
        assert_eq!(
            outcomes,
            vec![
                Outcome::Acked,
                Outcome::Read(vec![None]),
                Outcome::Read(vec![Some(Bytes::from_static(b"hi"))])
            ]
        );
        assert_eq!(used, 13);
        let (outcomes, _) = c.next(&buf[used..], queue[3..].iter()).unwrap().unwrap();
        assert_eq!(outcomes, vec![Outcome::Ended]);
        // A loud request that a reply skips is a reply out of order.
        let loud = [wire(
            Part::Get {
                key: 2,
                sent_after: 0,
            },
            2,
            false,
            Protocol::Meta,
        )];
        assert!(matches!(
            c.next(b"EN O3\r\n", loud.iter()),
            Err(Broken::OutOfOrder(_))
        ));
    }

    #[test]
    fn text_gets_check_the_keys_they_echo() {
        let c = codec(Protocol::Text);
        let queue = [wire(
            Part::TextGet {
                keys: vec![(1, 0), (2, 0), (3, 0)],
            },
            1,
            false,
            Protocol::Text,
        )];
        let (k1, k3) = (c.keys.name(1), c.keys.name(3));
        let good = format!(
            "VALUE {} 0 1\r\na\r\nVALUE {} 0 1\r\nc\r\nEND\r\n",
            String::from_utf8_lossy(&k1),
            String::from_utf8_lossy(&k3)
        );
        let (outcomes, used) = c.next(good.as_bytes(), queue.iter()).unwrap().unwrap();
        assert_eq!(used, good.len());
        assert_eq!(
            outcomes,
            vec![Outcome::Read(vec![
                Some(Bytes::from_static(b"a")),
                None,
                Some(Bytes::from_static(b"c"))
            ])]
        );
        assert_eq!(c.next(&good.as_bytes()[..used - 1], queue.iter()), Ok(None));
        // Items in another order are fine; another key, or one twice, not.
        let swapped = format!(
            "VALUE {} 0 1\r\nc\r\nVALUE {} 0 1\r\na\r\nEND\r\n",
            String::from_utf8_lossy(&k3),
            String::from_utf8_lossy(&k1)
        );
        let (outcomes, _) = c.next(swapped.as_bytes(), queue.iter()).unwrap().unwrap();
        assert_eq!(
            outcomes,
            vec![Outcome::Read(vec![
                Some(Bytes::from_static(b"a")),
                None,
                Some(Bytes::from_static(b"c"))
            ])]
        );
        let k4 = c.keys.name(4);
        for bad in [
            format!("VALUE {} 0 1\r\nd\r\nEND\r\n", String::from_utf8_lossy(&k4)),
            format!(
                "VALUE {k} 0 1\r\na\r\nVALUE {k} 0 1\r\na\r\nEND\r\n",
                k = String::from_utf8_lossy(&k1)
            ),
        ] {
            assert!(
                matches!(
                    c.next(bad.as_bytes(), queue.iter()),
                    Err(Broken::OutOfOrder(_))
                ),
                "{bad}"
            );
        }
        // A set's reply to a get.
        assert!(matches!(
            c.next(b"STORED\r\n", queue.iter()),
            Err(Broken::OutOfOrder(_))
        ));
    }

    #[test]
    fn binary_replies_match_by_opaque_opcode_and_key() {
        let c = codec(Protocol::Binary);
        let queue = [
            wire(Part::Set { key: 1, seq: 1 }, 7, true, Protocol::Binary),
            wire(
                Part::Get {
                    key: 1,
                    sent_after: 1,
                },
                8,
                false,
                Protocol::Binary,
            ),
        ];
        let mut out = BytesMut::new();
        let found = crate::protocol::Found {
            key: c.keys.name(1),
            data: Bytes::from_static(b"v"),
            ..Default::default()
        };
        binary::encode_keyed_response(
            opcode::GETK,
            8,
            Some(&c.keys.name(1)),
            &crate::protocol::Response::Get(vec![Some(found)]),
            &mut out,
        );
        let (outcomes, used) = c.next(&out, queue.iter()).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(
            outcomes,
            vec![
                Outcome::Acked,
                Outcome::Read(vec![Some(Bytes::from_static(b"v"))])
            ]
        );
        // The same reply to the request with opaque 9 is out of order.
        let other = [wire(
            Part::Get {
                key: 1,
                sent_after: 1,
            },
            9,
            false,
            Protocol::Binary,
        )];
        assert!(matches!(
            c.next(&out, other.iter()),
            Err(Broken::OutOfOrder(_))
        ));
        // And for key 2, even with the right opaque.
        let other_key = [wire(
            Part::Get {
                key: 2,
                sent_after: 0,
            },
            8,
            false,
            Protocol::Binary,
        )];
        assert!(matches!(
            c.next(&out, other_key.iter()),
            Err(Broken::OutOfOrder(_))
        ));
    }
}
