use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::*;
use crate::protocol::request::TextFrame;
use crate::protocol::request::{Store, StoreMode};
use crate::proxy::ring::{parse_server_entry, Ring};
use crate::proxy::upstream::{Connection, Settings, Target, UpstreamProtocol};

fn upstream(name: &str, port: u16, slots: usize) -> Arc<Upstream> {
    let target = Target {
        name: name.into(),
        addr: format!("127.0.0.1:{port}"),
        server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    };
    Arc::new(Upstream::new(target, slots, 2))
}

/// A logged-in connection to a node the test plays: what the proxy sends
/// arrives on the far end.
fn connection(name: &str) -> (Connection, tokio::io::DuplexStream) {
    let (near, far) = tokio::io::duplex(1 << 20);
    (
        Connection::spawn(near, name.into(), UpstreamProtocol::Meta),
        far,
    )
}

fn settings() -> Settings {
    let ca = crate::pki::CertificateAuthority::generate("session test CA").unwrap();
    let tls = crate::tls::client_config(ca.cert_pem().as_bytes(), None).unwrap();
    Settings {
        tls: tokio_rustls::TlsConnector::from(tls),
        protocol: UpstreamProtocol::Meta,
        username: "u".into(),
        password: "p".into(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        keepalive: Duration::ZERO,
        tls_fingerprint: None,
    }
}

/// What has arrived at a node's end of a connection within a moment.
async fn arrived(far: &mut tokio::io::DuplexStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(100), far.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Node A has only its second slot connected, node B both. A client sends a
/// set to B, a get to A, then a get of the same key to B: the get must
/// follow its set on B's connection. With one slot index for every node,
/// A's fallback to its second slot moved the client to B's second
/// connection too, where the get could overtake the set still queued on the
/// first. Nor may it move when that connection gets busy.
#[tokio::test]
async fn a_clients_requests_to_a_node_stay_on_one_connection() {
    let a = upstream("a", 1, 2);
    let b = upstream("b", 2, 2);
    let (a1, _a1_far) = connection("a");
    a.fill_slot(1, a1);
    let (b0, mut b0_far) = connection("b");
    let (b1, mut b1_far) = connection("b");
    b.fill_slot(0, b0.clone());
    b.fill_slot(1, b1);
    let servers = vec![
        parse_server_entry("a=127.0.0.1:1").unwrap(),
        parse_server_entry("b=127.0.0.1:2").unwrap(),
    ];
    let cluster = Arc::new(Cluster::new(
        vec![Arc::clone(&a), Arc::clone(&b)],
        Ring::new(&servers).unwrap(),
        settings(),
        Failover::Error,
        Duration::from_secs(1),
    ));
    let frame = || Frame::Text(TextFrame::default());
    let set = Command::Store(Store {
        mode: StoreMode::Set,
        key: "k".into(),
        flags: 0,
        exptime: 0,
        data: "v2".into(),
        cas: None,
        invalidate: false,
        vivify: None,
    });
    let get = |key: &'static str| {
        Command::Get(Get {
            keys: smallvec::smallvec![key.into()],
            ..Get::default()
        })
    };
    let mut pins = Pins::default();
    let mut now = Instant::now();
    let _set = start(&cluster, &b, set, frame(), &mut pins, &mut now).await;
    let _other = start(&cluster, &a, get("x"), frame(), &mut pins, &mut now).await;
    // Other clients load B's first connection meanwhile: a client placed
    // afresh would now spill to the second.
    let _busy: Vec<_> = (0..20)
        .map(|_| b0.send(Command::Noop, &frame(), std::time::Instant::now()))
        .collect();
    let _get = start(&cluster, &b, get("k"), frame(), &mut pins, &mut now).await;
    let first = arrived(&mut b0_far).await;
    let second = arrived(&mut b1_far).await;
    assert!(first.starts_with("ms k "), "{first:?}");
    assert!(
        first.contains("\r\nmg k "),
        "the get follows its set: {first:?}"
    );
    assert_eq!(
        second, "",
        "nothing of this client's on B's other connection"
    );
}
