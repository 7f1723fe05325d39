use super::outbox::RECORD;
use super::*;
use crate::protocol::request::StoreMode;
use crate::protocol::test_util::{self, store};
use crate::protocol::{Command, Response};
use crate::protocol::{Limits, Parsed};
use bytes::BytesMut;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A node that never answers and records every write the TLS layer would
/// see (rustls turns each into records of its own).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().push(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn set(key: &str, len: usize) -> Command {
    Command::Store(store(StoreMode::Set, key, &vec![b'v'; len]))
}

/// Send `command` as the proxy's own request.
fn send(conn: &Connection, command: Command) -> PendingReply {
    conn.send(command, &internal_frame(), std::time::Instant::now())
        .unwrap()
}

/// A get, a set larger than a record, and a get, sent in that order.
fn before_big_after(conn: &Connection) -> Vec<PendingReply> {
    [get("before"), set("big", 40_000), get("after")]
        .into_iter()
        .map(|command| send(conn, command))
        .collect()
}

fn get(key: &str) -> Command {
    Command::Get(test_util::get(key))
}

/// Parse one write into whole requests; panics on a partial one.
fn requests_in(write: &[u8]) -> usize {
    let limits = Limits {
        max_item_size: 1 << 20,
    };
    let mut at = 0;
    let mut n = 0;
    while at < write.len() {
        match binary::parse_request(&write[at..], &limits).unwrap() {
            Parsed::Request(_, used) => at += used,
            other => panic!("a write ends inside a request: {other:?}"),
        }
        n += 1;
    }
    n
}

async fn written(rec: &Recorder, total: usize) -> Vec<Vec<u8>> {
    for _ in 0..200 {
        let writes = rec.0.lock().unwrap().clone();
        if writes.iter().map(Vec::len).sum::<usize>() >= total {
            return writes;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec.0.lock().unwrap().clone()
}

/// memcached -Z stalls when a request straddles two TLS records and more
/// input follows it in the second: every write must be whole requests and
/// fit one record.
#[tokio::test]
async fn pipelined_requests_never_straddle_a_tls_record() {
    let rec = Recorder::default();
    let conn = Connection::spawn(rec.clone(), "n0".into(), UpstreamProtocol::Binary);
    let mut commands = Vec::new();
    for i in 0..3 {
        commands.push(set(&format!("k{i}"), 15_000));
    }
    for i in 0..40 {
        commands.push(set(&format!("s{i}"), 700 + i * 13));
    }
    for i in 0..3 {
        commands.push(get(&format!("k{i}")));
    }
    commands.push(Command::Noop);
    let mut total = 0;
    let mut replies = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let mut one = BytesMut::new();
        binary::encode_request(c, false, i as u32 + 1, &mut one).unwrap();
        total += one.len();
        replies.push(send(&conn, c.clone()));
    }
    let writes = written(&rec, total).await;
    assert_eq!(writes.iter().map(Vec::len).sum::<usize>(), total);
    let mut n = 0;
    for w in &writes {
        assert!(
            w.len() <= RECORD,
            "a write of {} bytes spans records",
            w.len()
        );
        n += requests_in(w);
    }
    assert_eq!(n, commands.len());
    assert!(writes.len() > 3, "batched, not one write per request");
}

/// A request larger than a record is written alone (starting a record)
/// and nothing follows it until its reply arrives.
#[tokio::test]
async fn nothing_follows_a_request_larger_than_a_record() {
    let rec = Recorder::default();
    let conn = Connection::spawn(rec.clone(), "n0".into(), UpstreamProtocol::Binary);
    let _pending = before_big_after(&conn);
    let mut big = BytesMut::new();
    binary::encode_request(&set("big", 40_000), false, 2, &mut big).unwrap();
    let writes = written(&rec, big.len() + 30).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writes_later = rec.0.lock().unwrap().clone();
    assert_eq!(writes, writes_later, "nothing written behind the large set");
    let last = writes.last().unwrap();
    assert_eq!(last.len(), big.len(), "the large set is a write of its own");
    assert_eq!(requests_in(last), 1);
}

/// The load the pool balances on counts each request until it is
/// answered, and drops to zero when the connection is closed with
/// requests still in flight.
#[tokio::test]
async fn load_counts_requests_until_answered_or_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let conn = Connection::spawn(near, "n0".into(), UpstreamProtocol::Binary);
    let first = send(&conn, get("a"));
    let second = send(&conn, get("b"));
    assert_eq!(conn.load(), 2);

    // Answer the first request only: a miss, with its opaque.
    let mut buf = BytesMut::new();
    let limits = Limits {
        max_item_size: 1 << 20,
    };
    let (frame, used) = loop {
        far.read_buf(&mut buf).await.unwrap();
        if let Parsed::Request(request, used) = binary::parse_request(&buf, &limits).unwrap() {
            break (request.frame, used);
        }
    };
    let _ = buf.split_to(used);
    let mut out = BytesMut::new();
    crate::protocol::encode(&frame, Some(b"a"), &Response::Get(vec![None]), &mut out);
    far.write_all(&out).await.unwrap();
    assert!(first.await.unwrap().is_ok());
    assert_eq!(conn.load(), 1);

    conn.close();
    // Lost with its connection, and its command handed back for a try
    // elsewhere.
    match second.await {
        Ok(Err(NoReply {
            error: UpstreamError::Io { .. },
            command: Some(command),
        })) => assert_eq!(*command, get("b")),
        other => panic!("expected the lost request's command back, got {other:?}"),
    }
    assert_eq!(conn.load(), 0);
}

/// Over meta, a reply must echo the opaque of the oldest request in flight:
/// one that does not fails that request and drops the connection, so no
/// client is answered with another key's value.
#[tokio::test]
async fn a_meta_reply_with_another_opaque_drops_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let conn = Connection::spawn(near, "n0".into(), UpstreamProtocol::Meta);
    let first = send(&conn, get("a"));
    let second = send(&conn, get("b"));
    let mut buf = Vec::new();
    while buf.iter().filter(|&&b| b == b'\n').count() < 2 {
        let mut chunk = [0u8; 1024];
        let n = far.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&buf),
        "mg a f v O1\r\nmg b f v O2\r\n",
        "the text get asks for flags and value, under the proxy's opaque"
    );
    far.write_all(b"EN O2\r\n").await.unwrap();
    assert!(matches!(
        first.await.unwrap(),
        Err(NoReply {
            error: UpstreamError::Protocol { .. },
            ..
        })
    ));
    assert!(
        !matches!(second.await, Ok(Ok(_))),
        "lost with its connection"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!conn.is_alive());
}

/// The -Z stall rule holds over meta too: a request larger than a record is
/// written alone, and nothing follows it until its reply.
#[tokio::test]
async fn over_meta_nothing_follows_a_request_larger_than_a_record() {
    let rec = Recorder::default();
    let conn = Connection::spawn(rec.clone(), "n0".into(), UpstreamProtocol::Meta);
    let _pending = before_big_after(&conn);
    let writes = written(&rec, 40_000).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        writes,
        rec.0.lock().unwrap().clone(),
        "nothing behind the set"
    );
    let last = writes.last().unwrap();
    assert!(
        last.starts_with(b"ms big 40000"),
        "the large set is a write of its own"
    );
    assert!(last.ends_with(b"\r\n") && last.len() < 40_100);
}

/// `KINDS` is what start-up exports at 0: it must name every `kind()`.
#[test]
fn every_error_kind_is_exported_from_start_up() {
    let node = || "n0".to_string();
    let errors = [
        UpstreamError::Connect {
            node: node(),
            reason: String::new(),
            refused: true,
        },
        UpstreamError::Tls {
            node: node(),
            reason: String::new(),
        },
        UpstreamError::Auth {
            node: node(),
            reason: String::new(),
        },
        UpstreamError::Timeout {
            node: node(),
            timeout: Duration::from_secs(1),
        },
        UpstreamError::Io {
            node: node(),
            reason: String::new(),
        },
        UpstreamError::Protocol { node: node() },
        UpstreamError::Down { node: node() },
        UpstreamError::Unsupported("meta flag N"),
    ];
    for error in &errors {
        assert!(UpstreamError::KINDS.contains(&error.kind()), "{error}");
    }
}

/// A write whose caller keeps its command (`Connection::send_kept`) goes
/// out whole, and is answered as one sent whole: what stays in flight,
/// without its key and value, still decodes the reply.
#[tokio::test]
async fn a_kept_store_goes_out_whole_and_is_answered() {
    use crate::protocol::request::MetaFrame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let conn = Connection::spawn(near, "n0".into(), UpstreamProtocol::Meta);
    let set = Command::Store(store(StoreMode::Set, "k", b"value"));
    let frame = Frame::Meta(Box::new(MetaFrame {
        return_cas: true,
        ..MetaFrame::default()
    }));
    let reply = conn
        .send_kept(&set, &frame, std::time::Instant::now())
        .unwrap();
    let mut buf = Vec::new();
    while buf.iter().filter(|&&b| b == b'\n').count() < 2 {
        let mut chunk = [0u8; 1024];
        let n = far.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&buf), "ms k 5 c O1\r\nvalue\r\n");
    far.write_all(b"HD c7 O1\r\n").await.unwrap();
    assert_eq!(reply.await.unwrap().unwrap(), Response::Stored { cas: 7 });
    assert_eq!(set, Command::Store(store(StoreMode::Set, "k", b"value")));
}
