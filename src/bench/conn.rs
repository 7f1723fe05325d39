//! One benchmark connection: connect (TCP or verified TLS), log in, encode
//! requests and parse the server's replies in any of the three dialects,
//! with the protocol module's client side (`text::client`, `meta::client`,
//! `binary`), so that the benchmark reads replies as the sidecar does.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::meta::client::{self as meta_client, Expect};
use crate::protocol::request::{Get, MetaFrame, Store, StoreMode, TextFrame};
use crate::protocol::text::client::{self as text_client, TextReply};
use crate::protocol::{binary, sasl, text, Command, Frame, Limits, Request, Response};

use super::{BenchConfig, BenchError, Protocol};

/// A stream either plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type Conn = Box<dyn Stream>;

/// Largest value a reply may carry (the 1 MB item limit, with room for the key).
pub(super) const MAX_REPLY_VALUE: usize = 1 << 21;

/// Open a connection to the server, with TLS and login as configured.
pub async fn connect(config: &BenchConfig) -> Result<Conn, BenchError> {
    connect_to(config, config.server.as_str()).await
}

/// How many connect attempts a connection makes after it broke, in a row.
const RECONNECT_ATTEMPTS: u32 = 3;
const RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// A fresh connection after one broke: up to [`RECONNECT_ATTEMPTS`], each
/// after [`RECONNECT_DELAY`], until `finished`; counted in `stats`.
pub async fn reconnect(
    config: &BenchConfig,
    finished: impl Fn() -> bool,
    stats: &mut super::stats::Stats,
) -> Option<Conn> {
    for _ in 0..RECONNECT_ATTEMPTS {
        if finished() {
            return None;
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
        match connect(config).await {
            Ok(conn) => {
                stats.reconnects += 1;
                return Some(conn);
            }
            Err(error) => {
                stats.connect_failures += 1;
                tracing::debug!(%error, "reconnect failed");
            }
        }
    }
    None
}

/// [`connect`] to `to`: churn resolves the server once and passes the
/// address, so that no connection waits on a lookup.
pub(super) async fn connect_to(
    config: &BenchConfig,
    to: impl tokio::net::ToSocketAddrs,
) -> Result<Conn, BenchError> {
    let tcp = tokio::time::timeout(config.timeout.max(CONNECT_TIMEOUT), TcpStream::connect(to))
        .await
        .map_err(|_| BenchError::Connect {
            server: config.server.clone(),
            reason: "timed out".into(),
        })?
        .map_err(|e| BenchError::Connect {
            server: config.server.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let mut conn: Conn = match &config.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
            let stream = tokio::time::timeout(
                config.timeout.max(CONNECT_TIMEOUT),
                connector.connect(tls.server_name.clone(), tcp),
            )
            .await
            .map_err(|_| BenchError::Tls("handshake timed out".into()))?
            .map_err(|e| BenchError::Tls(e.to_string()))?;
            Box::new(stream)
        }
    };
    if let Some(login) = &config.login {
        tokio::time::timeout(
            config.timeout.max(CONNECT_TIMEOUT),
            log_in(&mut conn, config.protocol, &login.username, &login.password),
        )
        .await
        .map_err(|_| BenchError::Login("no answer to the login".into()))??;
    }
    Ok(conn)
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// SASL PLAIN over binary; MemCachier's `set <user> 0 0 <len>` over text.
async fn log_in(
    conn: &mut Conn,
    protocol: Protocol,
    username: &str,
    password: &str,
) -> Result<(), BenchError> {
    let io = |e: std::io::Error| BenchError::Login(e.to_string());
    let mut out = BytesMut::new();
    let mut buf = BytesMut::new();
    match protocol {
        Protocol::Binary => {
            let command = Command::SaslAuth {
                mechanism: Bytes::from_static(b"PLAIN"),
                data: Bytes::from(sasl::encode_plain(username, password)),
            };
            binary::encode_request(&command, false, 0, &mut out)
                .map_err(|e| BenchError::Login(e.to_string()))?;
            conn.write_all(&out).await.map_err(io)?;
            conn.flush().await.map_err(io)?;
            let packet = loop {
                if let Some((packet, _)) =
                    binary::parse_response(&buf).map_err(|e| BenchError::Login(e.to_string()))?
                {
                    break packet;
                }
                if conn.read_buf(&mut buf).await.map_err(io)? == 0 {
                    return Err(BenchError::Login("connection closed".into()));
                }
            };
            match binary::decode_response(&command, &packet) {
                Response::AuthOk => Ok(()),
                other => Err(BenchError::Login(format!("refused ({other:?})"))),
            }
        }
        // Meta commands share the text protocol's connection and its login.
        Protocol::Text | Protocol::Meta => {
            out.extend_from_slice(format!("set {username} 0 0 {}\r\n", password.len()).as_bytes());
            out.extend_from_slice(password.as_bytes());
            out.extend_from_slice(b"\r\n");
            conn.write_all(&out).await.map_err(io)?;
            conn.flush().await.map_err(io)?;
            let reply = loop {
                if let Some((reply, _)) = text_client::parse_reply(&buf, MAX_REPLY_VALUE)
                    .map_err(|e| BenchError::Login(e.to_string()))?
                {
                    break reply;
                }
                if conn.read_buf(&mut buf).await.map_err(io)? == 0 {
                    return Err(BenchError::Login("connection closed".into()));
                }
            };
            match reply {
                TextReply::Stored => Ok(()),
                other => Err(BenchError::Login(format!("refused ({other:?})"))),
            }
        }
    }
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
}

/// The reply to one benchmark request, reduced to what the benchmark counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchReply {
    Hit(Bytes),
    Miss,
    Stored,
    /// An error reply, or an answer that does not fit the request
    /// (`NOT_STORED` to a set, for example).
    Error(String),
}

/// A reply stream that cannot be trusted any more: drop the connection.
#[derive(Debug, thiserror::Error)]
#[error("malformed reply: {0}")]
pub struct WireError(pub String);

/// Encodes requests and parses replies in one dialect.
#[derive(Clone, Debug)]
pub struct BenchCodec {
    protocol: Protocol,
    get_template: Command,
    set_template: Command,
}

impl BenchCodec {
    pub fn new(protocol: Protocol) -> BenchCodec {
        BenchCodec {
            protocol,
            get_template: Command::Get(Get::default()),
            set_template: Command::Store(store(Bytes::new(), Bytes::new())),
        }
    }

    /// Append one request to `out`. Binary requests carry `opaque`.
    pub fn encode(
        &self,
        op: Op,
        key: Bytes,
        value: Option<Bytes>,
        opaque: u32,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        let command = match op {
            Op::Get => Command::Get(Get {
                keys: smallvec::smallvec![key],
                ..Get::default()
            }),
            Op::Set => Command::Store(store(key, value.unwrap_or_default())),
        };
        match self.protocol {
            Protocol::Binary => binary::encode_request(&command, false, opaque, out)
                .map(|_| ())
                .map_err(|e| WireError(e.to_string())),
            Protocol::Text => text::encode_request(
                &Request {
                    command,
                    frame: Frame::Text(TextFrame::default()),
                },
                out,
            )
            .map_err(|e| WireError(e.to_string())),
            // `mg <key> v O<opaque>` and `ms <key> <len> O<opaque>`: the
            // meta client writes what a meta client framed like this asks.
            Protocol::Meta => meta_client::encode_request(&command, &meta_frame(), opaque, out)
                .map(|_| ())
                .map_err(|e| WireError(e.to_string())),
        }
    }

    /// Parse the reply to `op` from the front of `buf`: `None` until whole.
    pub fn parse(
        &self,
        op: Op,
        opaque: u32,
        buf: &[u8],
    ) -> Result<Option<(BenchReply, usize)>, WireError> {
        let template = match op {
            Op::Get => &self.get_template,
            Op::Set => &self.set_template,
        };
        let (response, used) = match self.protocol {
            Protocol::Binary => {
                let Some((packet, used)) =
                    binary::parse_response(buf).map_err(|e| WireError(e.to_string()))?
                else {
                    return Ok(None);
                };
                if packet.opaque != opaque {
                    return Err(WireError(format!(
                        "opaque {} where {opaque} was expected",
                        packet.opaque
                    )));
                }
                (binary::decode_response(template, &packet), used)
            }
            Protocol::Meta => {
                let limits = Limits {
                    max_item_size: MAX_REPLY_VALUE,
                };
                let Some((reply, used)) =
                    meta_client::parse_reply(buf, Expect::Meta(Some(opaque)), &limits)
                        .map_err(|e| WireError(e.to_string()))?
                else {
                    return Ok(None);
                };
                let response = meta_client::decode(template.clone(), reply)
                    .map_err(|e| WireError(e.to_string()))?;
                (response, used)
            }
            Protocol::Text => return parse_text_reply(op, buf),
        };
        let reply = match (op, response) {
            (Op::Get, Response::Get(mut found)) => match found.pop().flatten() {
                Some(found) => BenchReply::Hit(found.data),
                None => BenchReply::Miss,
            },
            (Op::Set, Response::Stored { .. }) => BenchReply::Stored,
            (_, Response::Error(e)) => BenchReply::Error(e.text()),
            (_, other) => BenchReply::Error(format!("unexpected reply {other:?}")),
        };
        Ok(Some((reply, used)))
    }
}

/// How the benchmark's meta requests are framed: values returned, nothing
/// else asked (the opaque is the request's sequence number).
fn meta_frame() -> Frame {
    Frame::Meta(Box::new(MetaFrame {
        return_value: true,
        ..MetaFrame::default()
    }))
}

fn store(key: Bytes, data: Bytes) -> Store {
    Store {
        mode: StoreMode::Set,
        key,
        flags: 0,
        exptime: 0,
        data,
        cas: None,
        invalidate: false,
        vivify: None,
    }
}

/// The reply to a single-key `get` or a `set`, in the text protocol.
pub fn parse_text_reply(op: Op, buf: &[u8]) -> Result<Option<(BenchReply, usize)>, WireError> {
    let wire = |e: text_client::TextReplyError| WireError(e.to_string());
    let Some((first, used)) = text_client::parse_reply(buf, MAX_REPLY_VALUE).map_err(wire)? else {
        return Ok(None);
    };
    let reply = match (op, first) {
        (_, TextReply::Error(error)) => BenchReply::Error(error.text()),
        (Op::Set, TextReply::Stored) => BenchReply::Stored,
        // NOT_STORED and the like: an answer, but not success.
        (Op::Set, other) => BenchReply::Error(format!("{other:?}")),
        (Op::Get, TextReply::End) => BenchReply::Miss,
        // A single-key get: the value, then END.
        (Op::Get, TextReply::Value { data, .. }) => {
            let rest = buf.get(used..).unwrap_or_default();
            return match text_client::parse_reply(rest, MAX_REPLY_VALUE).map_err(wire)? {
                None => Ok(None),
                Some((TextReply::End, end)) => Ok(Some((BenchReply::Hit(data), used + end))),
                Some((other, _)) => Err(WireError(format!(
                    "value not followed by END but by {other:?}"
                ))),
            };
        }
        (Op::Get, other) => return Err(WireError(format!("unexpected reply to get: {other:?}"))),
    };
    Ok(Some((reply, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_replies() {
        let hit = b"VALUE k 0 3\r\nabc\r\nEND\r\nSTORED\r\n";
        for cut in 0..23 {
            assert_eq!(
                parse_text_reply(Op::Get, &hit[..cut]).unwrap(),
                None,
                "{cut}"
            );
        }
        assert_eq!(
            parse_text_reply(Op::Get, hit).unwrap(),
            Some((BenchReply::Hit(Bytes::from_static(b"abc")), 23))
        );
        assert_eq!(
            parse_text_reply(Op::Set, &hit[23..]).unwrap(),
            Some((BenchReply::Stored, 8))
        );
        assert_eq!(
            parse_text_reply(Op::Get, b"END\r\n").unwrap(),
            Some((BenchReply::Miss, 5))
        );
        assert!(matches!(
            parse_text_reply(Op::Set, b"NOT_STORED\r\n").unwrap(),
            Some((BenchReply::Error(_), 12))
        ));
        assert!(matches!(
            parse_text_reply(Op::Get, b"SERVER_ERROR busy\r\n").unwrap(),
            Some((BenchReply::Error(_), 19))
        ));
        assert!(parse_text_reply(Op::Get, b"STORED\r\n").is_err());
        assert!(parse_text_reply(Op::Get, b"VALUE k 0 3\r\nabcXXEND\r\n").is_err());
        assert!(parse_text_reply(Op::Get, &[b'x'; 5000]).is_err());
    }

    #[test]
    fn binary_round_trip_through_the_codec() {
        let codec = BenchCodec::new(Protocol::Binary);
        let mut out = BytesMut::new();
        codec
            .encode(Op::Get, Bytes::from_static(b"k"), None, 9, &mut out)
            .unwrap();
        assert_eq!(out[0], binary::REQUEST_MAGIC);
        // A miss reply for opaque 9, then one with the wrong opaque.
        let mut reply = BytesMut::new();
        binary::encode_response(out[1], 9, &Response::Get(vec![None]), &mut reply);
        assert_eq!(
            codec.parse(Op::Get, 9, &reply).unwrap(),
            Some((BenchReply::Miss, reply.len()))
        );
        assert_eq!(codec.parse(Op::Get, 9, &reply[..10]).unwrap(), None);
        assert!(codec.parse(Op::Get, 10, &reply).is_err());
    }

    #[test]
    fn meta_round_trip_through_the_codec() {
        let codec = BenchCodec::new(Protocol::Meta);
        let mut out = BytesMut::new();
        codec
            .encode(Op::Get, Bytes::from_static(b"k"), None, 9, &mut out)
            .unwrap();
        assert_eq!(&out[..], b"mg k v O9\r\n");
        out.clear();
        codec
            .encode(
                Op::Set,
                Bytes::from_static(b"k"),
                Some(Bytes::from_static(b"abc")),
                10,
                &mut out,
            )
            .unwrap();
        assert_eq!(&out[..], b"ms k 3 O10\r\nabc\r\n");
        let hit = b"VA 3 O9\r\nabc\r\n";
        assert_eq!(
            codec.parse(Op::Get, 9, hit).unwrap(),
            Some((BenchReply::Hit(Bytes::from_static(b"abc")), hit.len()))
        );
        assert_eq!(codec.parse(Op::Get, 9, &hit[..8]).unwrap(), None);
        assert_eq!(
            codec.parse(Op::Get, 9, b"EN O9\r\n").unwrap(),
            Some((BenchReply::Miss, 7))
        );
        assert_eq!(
            codec.parse(Op::Set, 10, b"HD O10\r\n").unwrap(),
            Some((BenchReply::Stored, 8))
        );
        // Another request's opaque: the stream is out of step.
        assert!(codec.parse(Op::Get, 9, b"EN O8\r\n").is_err());
    }
}
