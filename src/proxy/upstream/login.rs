//! Logging in on a fresh upstream connection, before it carries requests:
//! SASL PLAIN over binary for memcached `-S`, or an ASCII login (MemCachier's
//! form for memgate nodes, memcached `-Y`'s for memcached) for meta.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{upstream_limits, UpstreamError};
use crate::protocol::meta;
use crate::protocol::meta::client::{Expect, LoginForm};
use crate::protocol::{binary, sasl, Command};

/// What a node that does not speak the protocol asked of it answers, said
/// so that the operator knows which `--upstream-protocol` to pick.
const NOT_TEXT: &str = "node does not speak the text protocol; is it memcached -S? \
                        use --upstream-protocol binary";
const NOT_BINARY: &str = "node answered the binary SASL login in text; is it memcached -Y? \
                          use --upstream-protocol meta-memcached";

/// SASL PLAIN over the binary protocol, followed by a NOOP: memcached `-Y`
/// swallows a SASL request without a word but answers the NOOP in text,
/// which tells it apart from a node that is merely slow.
pub(super) async fn sasl_login<S>(
    stream: &mut S,
    node: &str,
    user: &str,
    pass: &str,
) -> Result<(), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let command = Command::SaslAuth {
        mechanism: bytes::Bytes::from_static(sasl::PLAIN.as_bytes()),
        data: sasl::encode_plain(user, pass).into(),
    };
    let mut out = BytesMut::new();
    binary::encode_request(&command, false, 0, &mut out)
        .map_err(|binary::Unsupported(what)| UpstreamError::Unsupported(what))?;
    binary::encode_request(&Command::Noop, false, 1, &mut out)
        .map_err(|binary::Unsupported(what)| UpstreamError::Unsupported(what))?;
    let auth = |reason: String| UpstreamError::Auth {
        node: node.to_string(),
        reason,
    };
    let mut login = LoginStream::new(stream, node);
    login.write(&out).await?;
    let mut authenticated = false;
    loop {
        if login
            .buf
            .first()
            .is_some_and(|&b| b != binary::RESPONSE_MAGIC)
        {
            return Err(auth(NOT_BINARY.into()));
        }
        let parsed = binary::parse_response(&login.buf).map_err(|_| UpstreamError::Protocol {
            node: node.to_string(),
        })?;
        if let Some((packet, used)) = parsed {
            let _ = login.buf.split_to(used);
            match (authenticated, packet.status) {
                (false, binary::status::NO_ERROR) => authenticated = true,
                (false, status) => return Err(auth(format!("status {status:#04x}"))),
                (true, _) => return login.done(),
            }
            continue;
        }
        login.read("SASL").await?;
    }
}

/// An ASCII login: MemCachier's form for memgate nodes, memcached `-Y`'s for
/// memcached.
pub(super) async fn ascii_login<S>(
    stream: &mut S,
    node: &str,
    form: LoginForm,
    user: &str,
    pass: &str,
) -> Result<(), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let auth = |reason: String| UpstreamError::Auth {
        node: node.to_string(),
        reason,
    };
    let mut out = BytesMut::new();
    meta::client::encode_login(form, user, pass, &mut out)
        .map_err(|e| auth(format!("cannot send this username: {}", e.0)))?;
    let mut login = LoginStream::new(stream, node);
    login.write(&out).await?;
    loop {
        // A binary response, or a node that closes on a text line (memcached
        // -S does one or the other): not a text node.
        if login.buf.first() == Some(&binary::RESPONSE_MAGIC) {
            return Err(auth(NOT_TEXT.into()));
        }
        match meta::client::parse_reply(&login.buf, Expect::Login, &upstream_limits()) {
            Ok(Some((reply, used))) => {
                let _ = login.buf.split_to(used);
                return match meta::client::login_result(&reply) {
                    Ok(()) => login.done(),
                    Err(meta::client::LoginReplyError::Refused) => {
                        Err(auth("credentials refused".into()))
                    }
                    // A text answer other than STORED: a text node that
                    // does not take this form of login.
                    Err(meta::client::LoginReplyError::NotAscii(said)) => Err(auth(format!(
                        "node refused the {form:?} form of ASCII login ({said:?}); memgate \
                         nodes take --upstream-protocol meta, memcached -Y meta-memcached"
                    ))),
                };
            }
            Ok(None) => {}
            Err(_) => return Err(auth(NOT_TEXT.into())),
        }
        if login.read("login").await.is_err() {
            return Err(auth(NOT_TEXT.into()));
        }
    }
}

/// A stream during login: what was read, and errors naming the node.
struct LoginStream<'s, S> {
    stream: &'s mut S,
    node: &'s str,
    buf: BytesMut,
}

impl<'s, S: AsyncRead + AsyncWrite + Unpin> LoginStream<'s, S> {
    fn new(stream: &'s mut S, node: &'s str) -> Self {
        LoginStream {
            stream,
            node,
            buf: BytesMut::with_capacity(256),
        }
    }

    fn io(&self, reason: String) -> UpstreamError {
        UpstreamError::Io {
            node: self.node.to_string(),
            reason,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| self.io(e.to_string()))?;
        self.stream
            .flush()
            .await
            .map_err(|e| self.io(e.to_string()))
    }

    /// Read more; a close is an error.
    async fn read(&mut self, what: &str) -> Result<(), UpstreamError> {
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(self.io(format!("closed during {what}"))),
            Ok(_) => Ok(()),
            Err(e) => Err(self.io(e.to_string())),
        }
    }

    /// The login is over: anything more the node sent is out of step.
    fn done(self) -> Result<(), UpstreamError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(UpstreamError::Protocol {
                node: self.node.to_string(),
            })
        }
    }
}
