//! Logging in on a fresh upstream connection, before it carries requests:
//! SASL PLAIN over binary for memcached `-S`, or an ASCII login (MemCachier's
//! form for memgate nodes, memcached `-Y`'s for memcached) for meta; and the
//! logins of `--upstream-protocol auto`, which find out the dialect.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{upstream_limits, UpstreamError, UpstreamProtocol};
use crate::protocol::binary::ResponsePacket;
use crate::protocol::meta;
use crate::protocol::meta::client::{Expect, LoginForm, NodeReply};
use crate::protocol::{binary, sasl, Command};

/// What a node that does not speak the protocol asked of it answers, said
/// so that the operator knows which `--upstream-protocol` to pick.
const NOT_TEXT: &str = "node does not speak the text protocol; is it memcached -S? \
                        use --upstream-protocol binary";
const NOT_BINARY: &str = "node answered the binary SASL login in text; is it memcached -Y? \
                          use --upstream-protocol meta-memcached";

/// Why a login did not complete.
#[derive(Debug)]
pub(super) enum Failed {
    /// The node answered in another dialect than the one tried: `auto`
    /// tries the other.
    WrongDialect(UpstreamError),
    /// Anything else: refused credentials, a broken connection.
    Other(UpstreamError),
}

impl From<Failed> for UpstreamError {
    fn from(failed: Failed) -> UpstreamError {
        match failed {
            Failed::WrongDialect(error) | Failed::Other(error) => error,
        }
    }
}

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
    sasl_then(stream, node, user, pass, &[Command::Noop]).await?;
    Ok(())
}

/// `auto`'s binary login: SASL PLAIN followed by a VERSION, which names a
/// memgate node, and the NOOP that memcached `-Y` answers in text (its
/// opcode, 0x0a, ends the line memcached reads the binary bytes as). A
/// memgate node is spoken to in meta, so it is a wrong dialect here.
pub(super) async fn sasl_login_auto<S>(
    stream: &mut S,
    node: &str,
    user: &str,
    pass: &str,
) -> Result<(), Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let replies = sasl_then(stream, node, user, pass, &[Command::Version, Command::Noop]).await?;
    if replies
        .first()
        .is_some_and(|version| is_memgate(&version.value))
    {
        return Err(Failed::WrongDialect(UpstreamError::Auth {
            node: node.to_string(),
            reason: "node is a memgate node, spoken to in meta".into(),
        }));
    }
    Ok(())
}

/// SASL PLAIN, then the commands `next` pipelined behind it: their replies.
async fn sasl_then<S>(
    stream: &mut S,
    node: &str,
    user: &str,
    pass: &str,
    next: &[Command],
) -> Result<Vec<ResponsePacket>, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let command = Command::SaslAuth {
        mechanism: bytes::Bytes::from_static(sasl::PLAIN.as_bytes()),
        data: sasl::encode_plain(user, pass).into(),
    };
    let unsupported = |binary::Unsupported(what)| Failed::Other(UpstreamError::Unsupported(what));
    let mut out = BytesMut::new();
    binary::encode_request(&command, false, 0, &mut out).map_err(unsupported)?;
    for (opaque, command) in (1..).zip(next) {
        binary::encode_request(command, false, opaque, &mut out).map_err(unsupported)?;
    }
    let auth = |reason: String| UpstreamError::Auth {
        node: node.to_string(),
        reason,
    };
    let mut login = LoginStream::new(stream, node);
    login.write(&out).await.map_err(Failed::Other)?;
    let mut authenticated = false;
    let mut replies = Vec::with_capacity(next.len());
    loop {
        if login
            .buf
            .first()
            .is_some_and(|&b| b != binary::RESPONSE_MAGIC)
        {
            return Err(Failed::WrongDialect(auth(NOT_BINARY.into())));
        }
        let parsed = binary::parse_response(&login.buf).map_err(|_| {
            Failed::Other(UpstreamError::Protocol {
                node: node.to_string(),
            })
        })?;
        if let Some((packet, used)) = parsed {
            let _ = login.buf.split_to(used);
            match (authenticated, packet.status) {
                (false, binary::status::NO_ERROR) => authenticated = true,
                (false, status) => {
                    return Err(Failed::Other(auth(format!("status {status:#04x}"))))
                }
                (true, _) => {
                    replies.push(packet);
                    if replies.len() == next.len() {
                        return login.done().map(|()| replies).map_err(Failed::Other);
                    }
                }
            }
            continue;
        }
        login.read("SASL").await.map_err(Failed::Other)?;
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
    let mut out = BytesMut::new();
    meta::client::encode_login(form, user, pass, &mut out).map_err(|e| UpstreamError::Auth {
        node: node.to_string(),
        reason: format!("cannot send this username: {}", e.0),
    })?;
    let mut login = LoginStream::new(stream, node);
    login.write(&out).await?;
    let reply = ascii_reply(&mut login, Expect::Login).await?;
    ascii_login_result(node, form, &reply)?;
    login.done()
}

/// `auto`'s text login: memcached `-Y`'s form, which memgate nodes take
/// too, with a `version` pipelined behind it that tells the two apart, in
/// one round trip: meta for a memgate node, meta-memcached for memcached.
/// A username `-Y` cannot carry (one with a space) goes in MemCachier's
/// form, which only memgate nodes take.
pub(super) async fn ascii_login_auto<S>(
    stream: &mut S,
    node: &str,
    user: &str,
    pass: &str,
) -> Result<UpstreamProtocol, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    if meta::client::encode_login(LoginForm::Memcached, user, pass, &mut out).is_err() {
        out.clear();
        meta::client::encode_login(LoginForm::MemCachier, user, pass, &mut out).map_err(|e| {
            Failed::Other(UpstreamError::Auth {
                node: node.to_string(),
                reason: format!("cannot send this username: {}", e.0),
            })
        })?;
    }
    meta::client::encode_request(&Command::Version, &super::internal_frame(), 0, &mut out)
        .map_err(|e| Failed::Other(UpstreamError::NotCarried(e.0)))?;
    let mut login = LoginStream::new(stream, node);
    login.write(&out).await.map_err(Failed::Other)?;
    // Both nodes answer wrong credentials in text, memcached -Y with either
    // error line (`unauthenticated` when a request follows the login).
    let reply = ascii_reply(&mut login, Expect::Login).await?;
    if let Err(refused) = meta::client::login_result(&reply) {
        let reason = match refused {
            meta::client::LoginReplyError::NotAscii(said) => {
                format!("credentials refused ({said})")
            }
            refused => refused.to_string(),
        };
        return Err(Failed::Other(UpstreamError::Auth {
            node: node.to_string(),
            reason,
        }));
    }
    let NodeReply::Version(version) = ascii_reply(&mut login, Expect::Version).await? else {
        return Err(Failed::Other(UpstreamError::Protocol {
            node: node.to_string(),
        }));
    };
    login.done().map_err(Failed::Other)?;
    Ok(match is_memgate(version.as_bytes()) {
        true => UpstreamProtocol::Meta,
        false => UpstreamProtocol::MetaMemcached,
    })
}

/// Whether a version string is a memgate node's (`memgate::VERSION`).
fn is_memgate(version: &[u8]) -> bool {
    version.windows(8).any(|w| w == b"-memgate")
}

/// The next text reply on a login stream. A binary response, or a node
/// that closes on a text line (memcached -S does one or the other), is not
/// a text node.
async fn ascii_reply<S>(login: &mut LoginStream<'_, S>, expect: Expect) -> Result<NodeReply, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let not_text = || {
        Failed::WrongDialect(UpstreamError::Auth {
            node: login.node.to_string(),
            reason: NOT_TEXT.into(),
        })
    };
    loop {
        if login.buf.first() == Some(&binary::RESPONSE_MAGIC) {
            return Err(not_text());
        }
        match meta::client::parse_reply(&login.buf, expect, &upstream_limits()) {
            Ok(Some((reply, used))) => {
                let _ = login.buf.split_to(used);
                return Ok(reply);
            }
            Ok(None) => {}
            Err(_) => return Err(not_text()),
        }
        if login.read("login").await.is_err() {
            return Err(not_text());
        }
    }
}

/// Whether the reply to an ASCII login in `form` says it succeeded.
fn ascii_login_result(node: &str, form: LoginForm, reply: &NodeReply) -> Result<(), Failed> {
    let auth = |reason: String| UpstreamError::Auth {
        node: node.to_string(),
        reason,
    };
    match meta::client::login_result(reply) {
        Ok(()) => Ok(()),
        Err(meta::client::LoginReplyError::Refused) => {
            Err(Failed::Other(auth("credentials refused".into())))
        }
        // A text answer other than STORED: a text node that does not take
        // this form of login.
        Err(meta::client::LoginReplyError::NotAscii(said)) => {
            Err(Failed::WrongDialect(auth(format!(
                "node refused the {form:?} form of ASCII login ({said:?}); memgate \
                 nodes take --upstream-protocol meta, memcached -Y meta-memcached"
            ))))
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
