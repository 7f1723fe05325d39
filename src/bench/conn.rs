//! One benchmark connection: connect (TCP or verified TLS), log in, encode
//! requests and parse the server's replies in either dialect.
//!
//! The protocol module encodes requests in both dialects and parses binary
//! replies, but has no parser for *text replies* (the node and proxy only
//! parse text requests), so the few reply lines a get/set can produce are
//! parsed here.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::request::{Get, Store, StoreMode, TextFrame};
use crate::protocol::{binary, sasl, text, Command, Frame, Request, Response};

use super::{BenchConfig, BenchError, Protocol};

/// A stream either plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub type Conn = Box<dyn Stream>;

/// A text reply line longer than this is not one a get or set produces.
const MAX_REPLY_LINE: usize = 4096;
/// Largest value a reply may carry (the 1 MB item limit, with room for the key).
const MAX_REPLY_VALUE: usize = 1 << 21;

/// Open a connection to the server, with TLS and login as configured.
pub async fn connect(config: &BenchConfig) -> Result<Conn, BenchError> {
    connect_to(config, config.server.as_str()).await
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
        Protocol::Text => {
            out.extend_from_slice(format!("set {username} 0 0 {}\r\n", password.len()).as_bytes());
            out.extend_from_slice(password.as_bytes());
            out.extend_from_slice(b"\r\n");
            conn.write_all(&out).await.map_err(io)?;
            conn.flush().await.map_err(io)?;
            let line = loop {
                if let Some(end) = find_crlf(&buf) {
                    break String::from_utf8_lossy(&buf[..end]).into_owned();
                }
                if buf.len() > MAX_REPLY_LINE || conn.read_buf(&mut buf).await.map_err(io)? == 0 {
                    return Err(BenchError::Login("connection closed".into()));
                }
            };
            if line == "STORED" {
                Ok(())
            } else {
                Err(BenchError::Login(format!("refused ({line})")))
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

/// A reply, reduced to what the benchmark counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
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
pub struct Codec {
    protocol: Protocol,
    get_template: Command,
    set_template: Command,
}

impl Codec {
    pub fn new(protocol: Protocol) -> Codec {
        Codec {
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
                keys: vec![key],
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
        }
    }

    /// Parse the reply to `op` from the front of `buf`: `None` until whole.
    pub fn parse(
        &self,
        op: Op,
        opaque: u32,
        buf: &[u8],
    ) -> Result<Option<(Reply, usize)>, WireError> {
        match self.protocol {
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
                let template = match op {
                    Op::Get => &self.get_template,
                    Op::Set => &self.set_template,
                };
                let reply = match (op, binary::decode_response(template, &packet)) {
                    (Op::Get, Response::Get(mut found)) => match found.pop().flatten() {
                        Some(found) => Reply::Hit(found.data),
                        None => Reply::Miss,
                    },
                    (Op::Set, Response::Stored { .. }) => Reply::Stored,
                    (_, Response::Error(e)) => Reply::Error(e.text()),
                    (_, other) => Reply::Error(format!("unexpected reply {other:?}")),
                };
                Ok(Some((reply, used)))
            }
            Protocol::Text => parse_text_reply(op, buf),
        }
    }
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

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The reply to a single-key `get` or a `set`, in the text protocol.
pub fn parse_text_reply(op: Op, buf: &[u8]) -> Result<Option<(Reply, usize)>, WireError> {
    let Some(end) = find_crlf(&buf[..buf.len().min(MAX_REPLY_LINE + 2)]) else {
        if buf.len() > MAX_REPLY_LINE {
            return Err(WireError("reply line too long".into()));
        }
        return Ok(None);
    };
    let line = &buf[..end];
    let after_line = end + 2;
    let error = |line: &[u8]| Reply::Error(String::from_utf8_lossy(line).into_owned());
    if line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
    {
        return Ok(Some((error(line), after_line)));
    }
    match op {
        Op::Set => Ok(Some((
            if line == b"STORED" {
                Reply::Stored
            } else {
                error(line)
            },
            after_line,
        ))),
        Op::Get if line == b"END" => Ok(Some((Reply::Miss, after_line))),
        Op::Get if line.starts_with(b"VALUE ") => {
            // VALUE <key> <flags> <bytes> [<cas>]
            let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let len = words
                .get(3)
                .and_then(|w| std::str::from_utf8(w).ok())
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|&n| n <= MAX_REPLY_VALUE)
                .ok_or_else(|| WireError("bad VALUE line".into()))?;
            let data_end = after_line + len;
            let total = data_end + 2 + b"END\r\n".len();
            if buf.len() < total {
                return Ok(None);
            }
            if &buf[data_end..total] != b"\r\nEND\r\n" {
                return Err(WireError("value not followed by END".into()));
            }
            Ok(Some((
                Reply::Hit(Bytes::copy_from_slice(&buf[after_line..data_end])),
                total,
            )))
        }
        Op::Get => Err(WireError(format!(
            "unexpected reply to get: {}",
            String::from_utf8_lossy(line)
        ))),
    }
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
            Some((Reply::Hit(Bytes::from_static(b"abc")), 23))
        );
        assert_eq!(
            parse_text_reply(Op::Set, &hit[23..]).unwrap(),
            Some((Reply::Stored, 8))
        );
        assert_eq!(
            parse_text_reply(Op::Get, b"END\r\n").unwrap(),
            Some((Reply::Miss, 5))
        );
        assert!(matches!(
            parse_text_reply(Op::Set, b"NOT_STORED\r\n").unwrap(),
            Some((Reply::Error(_), 12))
        ));
        assert!(matches!(
            parse_text_reply(Op::Get, b"SERVER_ERROR busy\r\n").unwrap(),
            Some((Reply::Error(_), 19))
        ));
        assert!(parse_text_reply(Op::Get, b"STORED\r\n").is_err());
        assert!(parse_text_reply(Op::Get, b"VALUE k 0 3\r\nabcXXEND\r\n").is_err());
        assert!(parse_text_reply(Op::Get, &[b'x'; 5000]).is_err());
    }

    #[test]
    fn binary_round_trip_through_the_codec() {
        let codec = Codec::new(Protocol::Binary);
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
            Some((Reply::Miss, reply.len()))
        );
        assert_eq!(codec.parse(Op::Get, 9, &reply[..10]).unwrap(), None);
        assert!(codec.parse(Op::Get, 10, &reply).is_err());
    }
}
