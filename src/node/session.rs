//! One client connection to the node: dialect detection, the auth gate,
//! capability checks and dispatch to the logged-in cache's store.
//!
//! The loop is read → parse every complete request already buffered → write
//! the replies → read again. Parsing everything that is buffered before the
//! next read matters for TLS: decrypted input is never left waiting for more
//! bytes from the network (the flaw docs/ARCHITECTURE.md records in memcached `-Z`).
//! Writing before reading more also bounds memory: a client that never reads
//! its replies stops being read from, instead of growing our buffers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::counters::CacheStats;
use super::tenants::{Attempt, Login, LoginFailure, Tenant};
use super::NodeShared;
use crate::clock::unix_now;
use crate::protocol::input::{self, Input, Next, FLUSH_THRESHOLD};
use crate::protocol::request::{Command, Frame, Get, MetaFrame, StoreMode, TextFrame};
use crate::protocol::{self, binary, meta, sasl, text, ErrorReply, Request, Response};
use crate::session::{self, SessionError};

/// The session's login state.
enum Auth {
    /// Not logged in yet; only auth commands pass.
    Pending,
    LoggedIn(Login),
}

/// A login request, as [`Session::login_request`] finds it.
enum Credentials<'r> {
    /// SASL PLAIN's.
    Sasl(sasl::PlainCredentials),
    /// The ASCII login's `set` key and value.
    Ascii { key: &'r [u8], value: &'r [u8] },
    /// SASL with a mechanism other than PLAIN.
    OtherMechanism,
    /// SASL PLAIN whose data is not `authzid\0user\0password`.
    Malformed,
}

/// What the dispatcher wants done after a request.
enum After {
    Continue,
    Close,
}

/// Serve one client until it quits, errs or disconnects.
pub async fn serve<S>(
    mut stream: S,
    shared: Arc<NodeShared>,
    peer: IpAddr,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session {
        auth: if shared.settings.no_auth {
            match shared.implicit_login() {
                Some(login) => {
                    count_connection(&login);
                    Auth::LoggedIn(login)
                }
                None => Auth::Pending,
            }
        } else {
            Auth::Pending
        },
        shared,
        peer,
        paused_until: None,
    };
    let result = session.run(&mut stream).await;
    if let Auth::LoggedIn(login) = &session.auth {
        CacheStats::decr(&login.tenant.stats.curr_connections);
    }
    // Best effort: the peer may already be gone.
    let _ = stream.shutdown().await;
    result
}

/// A data command other than a get on the logged-in cache's store.
fn execute(tenant: &Tenant, command: &Command, now: u64) -> Response {
    tenant.hot_keys.record(command, now);
    tenant.store.execute(command, now)
}

/// How a retrieval's reply is written straight from the store.
#[derive(Clone, Copy)]
enum GetReply<'f> {
    /// `get`, `gets`, `gat`, `gats`: a `VALUE` per hit, then `END`.
    Text(&'f TextFrame),
    /// `mg`: its one key's hit, or `EN`.
    Meta(&'f MetaFrame),
    /// GET, GETK, their quiet forms, GAT, and a TOUCH answered from the
    /// item.
    Binary { opcode: u8, opaque: u32 },
}

/// A retrieval whose reply is written into `out` from the store as each
/// key is found: each value is copied once, from its segment into the
/// reply (`Store::get_each`), where a [`Response`] copied it twice and
/// allocated for it. `None` once written; the response that refuses the
/// keys otherwise.
fn written_get(
    tenant: &Tenant,
    get: &Get,
    reply: GetReply,
    now: u64,
    out: &mut BytesMut,
) -> Option<Response> {
    let hot_keys = &tenant.hot_keys;
    // Called under the shard's lock; the hot keys' lock, taken only while
    // someone watches them, is never held while a shard's is taken.
    let found = tenant.store.get_each(get, now, |key, found| {
        hot_keys.record_read(key, found.as_ref().map_or(0, |f| f.data.len()), now);
        match (reply, found) {
            (GetReply::Text(frame), Some(found)) => text::put_value(frame, &found, out),
            (GetReply::Text(_), None) => {}
            (GetReply::Meta(frame), found) => meta::put_get(frame, key, found.as_ref(), out),
            (GetReply::Binary { opcode, opaque }, found) => {
                binary::put_get(opcode, opaque, Some(key), found.as_ref(), out)
            }
        }
    });
    match found {
        Ok(()) => {
            if let GetReply::Text(_) = reply {
                text::put_end(out);
            }
            None
        }
        Err(refused) => {
            // A refused get's keys count as misses.
            for key in &get.keys {
                hot_keys.record_read(key, 0, now);
            }
            Some(refused)
        }
    }
}

fn count_connection(login: &Login) {
    CacheStats::incr(&login.tenant.stats.curr_connections);
    CacheStats::incr(&login.tenant.stats.total_connections);
}

struct Session {
    shared: Arc<NodeShared>,
    auth: Auth,
    /// The client's address, for the failed-login throttle.
    peer: IpAddr,
    /// Set by a throttled login, answered at once: nothing more is read
    /// from the connection before then, when the throttle may let the next
    /// attempt through.
    paused_until: Option<Instant>,
}

impl Session {
    async fn run<S>(&mut self, stream: &mut S) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = protocol::Limits {
            max_item_size: self.shared.settings.max_item_size,
        };
        let auth_deadline = Instant::now() + self.shared.settings.auth_timeout;
        let mut input = Input::default();
        let mut wbuf = BytesMut::new();

        loop {
            let n = self.read(stream, input.read_buf(), auth_deadline).await?;
            if n == 0 {
                return Ok(());
            }
            self.count_read(n);
            // One clock read for what this read brought (memcached's
            // `current_time` is a second-resolution clock too), read again
            // after anything that waits.
            let mut now = unix_now();
            // Matched by hand, and the request by reference: each `?` and
            // move of a request was a `memcpy` of it (callgrind,
            // benches/STORE.md).
            loop {
                let next = match input.next(&limits) {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(error) => return Err(error.into()),
                };
                match next {
                    Next::Request(ref request) => match self.login_request(request) {
                        // It may wait for a password hash, off this worker.
                        Some(credentials) => {
                            let response = self.log_in(credentials).await;
                            now = unix_now();
                            let key = request.echoed_key_ref();
                            protocol::encode(&request.frame, key, &response, &mut wbuf);
                        }
                        None => {
                            if let After::Close = self.dispatch(request, now, &mut wbuf) {
                                self.write(stream, &mut wbuf).await?;
                                return Ok(());
                            }
                        }
                    },
                    Next::Reject {
                        frame,
                        error,
                        unlink,
                    } => {
                        if let (Some(key), Auth::LoggedIn(login)) = (unlink, &self.auth) {
                            if login.caps.write {
                                login.tenant.store.unlink(&key);
                            }
                        }
                        protocol::encode(&frame, None, &Response::Error(error), &mut wbuf);
                    }
                }
                if wbuf.len() >= FLUSH_THRESHOLD {
                    self.write(stream, &mut wbuf).await?;
                    now = unix_now();
                }
            }
            self.write(stream, &mut wbuf).await?;
        }
    }

    /// Read more input; before login, no later than the auth deadline.
    async fn read<S>(
        &self,
        stream: &mut S,
        rbuf: &mut BytesMut,
        deadline: Instant,
    ) -> Result<usize, SessionError>
    where
        S: AsyncRead + Unpin,
    {
        match self.auth {
            Auth::LoggedIn(_) => Ok(stream.read_buf(rbuf).await?),
            Auth::Pending => {
                let timeout = SessionError::AuthTimeout(self.shared.settings.auth_timeout);
                // While its logins would be refused unchecked, the
                // connection is not read: a flood waits instead of costing.
                let now = Instant::now();
                let blocked = self.shared.tenants().address_blocked(self.peer, now);
                let resume = self.paused_until.max(blocked.map(|d| now + d));
                if let Some(resume) = resume.filter(|&r| r > now) {
                    if resume >= deadline {
                        tokio::time::sleep_until(deadline.into()).await;
                        return Err(timeout);
                    }
                    tokio::time::sleep_until(resume.into()).await;
                }
                let deadline = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(deadline, stream.read_buf(rbuf)).await {
                    Ok(read) => Ok(read?),
                    Err(_) => Err(timeout),
                }
            }
        }
    }

    async fn write<S>(&mut self, stream: &mut S, wbuf: &mut BytesMut) -> Result<(), SessionError>
    where
        S: AsyncWrite + Unpin,
    {
        if wbuf.is_empty() {
            return Ok(());
        }
        stream.write_all(wbuf).await?;
        stream.flush().await?;
        if let Auth::LoggedIn(login) = &self.auth {
            CacheStats::add(&login.tenant.stats.bytes_written, wbuf.len() as u64);
        }
        input::written(wbuf);
        Ok(())
    }

    fn count_read(&self, n: usize) {
        if let Auth::LoggedIn(login) = &self.auth {
            CacheStats::add(&login.tenant.stats.bytes_read, n as u64);
        }
    }

    /// Answer one request into `out`. By reference: a request is large, and
    /// each move of it was a `memcpy` (callgrind, benches/STORE.md).
    fn dispatch(&self, request: &Request, now: u64, out: &mut BytesMut) -> After {
        let Request { command, frame } = request;
        let (response, after) = match command {
            Command::Quit => (session::quit_reply(frame), After::Close),
            // memcached built or started without SASL does not know the SASL
            // commands, and clients that always send credentials skip the
            // login when told so.
            Command::SaslList | Command::SaslAuth { .. } | Command::SaslStep { .. }
                if self.shared.settings.no_auth =>
            {
                (Response::Error(ErrorReply::UnknownCommand), After::Continue)
            }
            // Listed before login: a client asks for it to log in.
            Command::SaslList => (session::sasl_mechanisms(), After::Continue),
            // PLAIN completes in one step; there is nothing to continue.
            Command::SaslStep { .. } => (Response::Error(ErrorReply::AuthFailure), After::Continue),
            command => match self.authorized(command, frame, now, out) {
                Some(response) => (response, After::Continue),
                None => return After::Continue,
            },
        };
        protocol::encode(frame, request.echoed_key_ref(), &response, out);
        after
    }

    /// Commands that need a login: their response, or `None` when the
    /// reply is written into `out` already (a get's).
    fn authorized(
        &self,
        command: &Command,
        frame: &Frame,
        now: u64,
        out: &mut BytesMut,
    ) -> Option<Response> {
        let login = match &self.auth {
            Auth::LoggedIn(login) if !login.tenant.is_disabled() => login,
            Auth::LoggedIn(_) | Auth::Pending => {
                return Some(Response::Error(ErrorReply::Unauthenticated))
            }
        };
        let tenant = &login.tenant;
        let caps = login.caps;
        tenant.touch(now);
        if let Some(response) = session::local_answer(command, crate::VERSION) {
            return Some(response);
        }
        // memcached answers a binary TOUCH from the item, as it does GAT
        // less the value: the reply carries the flags and CAS.
        let gat;
        let command = match (command, frame) {
            (Command::Touch { key, exptime }, Frame::Binary { opcode, .. })
                if *opcode == binary::opcode::TOUCH =>
            {
                gat = Command::Get(Get {
                    keys: smallvec::smallvec![key.clone()],
                    touch: Some(*exptime),
                    ..Get::default()
                });
                &gat
            }
            (command, _) => command,
        };
        Some(match command {
            Command::Stats { group } => {
                // No group memcached knows needs more than ASCII, so a group
                // that is not UTF-8 is read lossily: it names none of them.
                let group = group.as_deref().map(String::from_utf8_lossy);
                match (self.shared.stats(tenant, group.as_deref()), frame) {
                    // memcached answers a binary STAT for a group it does not
                    // know, or a bad `detail`, with "not found".
                    (Response::Error(_), Frame::Binary { .. }) => Response::NotFound,
                    (response, _) => response,
                }
            }
            Command::Store(_) if !caps.write => Response::NotStored,
            Command::Delete(_) | Command::Arith(_) | Command::Touch { .. } if !caps.write => {
                Response::Error(ErrorReply::PermissionDenied)
            }
            Command::Get(get) if !caps.write && (get.touch.is_some() || get.vivify.is_some()) => {
                Response::Error(ErrorReply::PermissionDenied)
            }
            Command::FlushAll { .. } if !caps.flush => Response::Error(ErrorReply::FlushNotAllowed),
            Command::Copy { .. } if !caps.write => Response::NotStored,
            Command::Bury { .. } if !caps.write => Response::Error(ErrorReply::PermissionDenied),
            // A sidecar's delete (`node::tombstones`): buried first, so that
            // no copy lands between the delete and its tombstone.
            Command::Bury {
                key,
                ttl,
                version,
                report,
            } => {
                tenant.tombstones.bury(key, *ttl, *version, now);
                match tenant.store.delete_reporting(key, now) {
                    Response::DeletedCas { .. } if !*report => Response::Deleted,
                    Response::NotFoundCas { .. } if !*report => Response::NotFound,
                    response => response,
                }
            }
            // A sidecar's copy or replica write: a mirror (a versioned set)
            // passes a tombstone of an older version, no other copy does.
            Command::Copy { store, version } => {
                let graves = &tenant.tombstones;
                let refused = match *version {
                    Some(version) if store.mode == StoreMode::Set => {
                        graves.refuses_mirror(&store.key, version, now)
                    }
                    _ => graves.refuses_copy(&store.key, now),
                };
                match refused {
                    true => Response::NotStored,
                    false => tenant.store.copy(store, *version, now),
                }
            }
            Command::Get(get) => {
                let reply = match frame {
                    Frame::Text(text) => GetReply::Text(text),
                    Frame::Meta(meta) => GetReply::Meta(meta),
                    &Frame::Binary { opcode, opaque } => GetReply::Binary { opcode, opaque },
                };
                return written_get(tenant, get, reply, now, out);
            }
            command => execute(tenant, command, now),
        })
    }

    /// `request`'s credentials if it is a login: SASL, or before login
    /// MemCachier's ASCII auth, whose first text `set` carries them.
    fn login_request<'r>(&self, request: &'r Request) -> Option<Credentials<'r>> {
        match (&request.command, &request.frame) {
            (Command::SaslAuth { .. }, _) if self.shared.settings.no_auth => None,
            (Command::SaslAuth { mechanism, data }, _) => {
                if mechanism.as_ref() != sasl::PLAIN.as_bytes() {
                    return Some(Credentials::OtherMechanism);
                }
                Some(match sasl::parse_plain(data) {
                    Some(creds) => Credentials::Sasl(creds),
                    None => Credentials::Malformed,
                })
            }
            (Command::Store(store), Frame::Text(_))
                if store.mode == StoreMode::Set && matches!(self.auth, Auth::Pending) =>
            {
                Some(Credentials::Ascii {
                    key: &store.key,
                    value: &store.data,
                })
            }
            _ => None,
        }
    }

    /// Check credentials and switch the session to their cache.
    async fn log_in(&mut self, credentials: Credentials<'_>) -> Response {
        let (attempt, ok) = match &credentials {
            Credentials::Sasl(creds) => (
                Attempt::Sasl {
                    username: creds.username.as_bytes(),
                    password: creds.password.as_bytes(),
                },
                Response::AuthOk,
            ),
            Credentials::Ascii { key, value } => {
                (Attempt::Ascii { key, value }, Response::Stored { cas: 0 })
            }
            Credentials::OtherMechanism => {
                tracing::debug!("SASL mechanism other than PLAIN refused");
                return Response::Error(ErrorReply::AuthFailure);
            }
            Credentials::Malformed => {
                self.shared.count_anonymous_auth_failure();
                return Response::Error(ErrorReply::AuthFailure);
            }
        };
        match self.shared.tenants().log_in(attempt, self.peer).await {
            Ok(login) => self.accept(login, ok),
            Err(failure) => self.reject(failure),
        }
    }

    fn accept(&mut self, login: Login, ok: Response) -> Response {
        CacheStats::incr(&login.tenant.stats.auth_cmds);
        login.tenant.touch(unix_now());
        if let Auth::LoggedIn(old) = &self.auth {
            CacheStats::decr(&old.tenant.stats.curr_connections);
        }
        count_connection(&login);
        tracing::debug!(cache = %login.tenant.id, "client logged in");
        self.auth = Auth::LoggedIn(login);
        ok
    }

    fn reject(&mut self, failure: LoginFailure) -> Response {
        let retry_after = failure.retry_after();
        if let Some(after) = retry_after {
            self.paused_until = Some(Instant::now() + after);
        }
        match failure.tenant {
            Some(tenant) => {
                CacheStats::incr(&tenant.stats.auth_cmds);
                CacheStats::incr(&tenant.stats.auth_errors);
            }
            None => self.shared.count_anonymous_auth_failure(),
        }
        tracing::info!("client login failed");
        match retry_after {
            Some(_) => Response::Error(ErrorReply::AuthThrottled),
            None => Response::Error(ErrorReply::AuthFailure),
        }
    }
}
