//! The sidecar's failure model, against real sockets and misbehaving peers:
//! a node that accepts and goes silent, a node that stalls and comes back, a
//! path that forgets idle connections, reloads under load, and multi-key gets
//! that span a dead node. See docs/ARCHITECTURE.md, "Failure model".

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::net::TcpListener;

/// A TCP listener that accepts and then never reads nor answers: a node
/// whose process hangs, or a TLS handshake that stalls.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn silent_listener() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    Silent { addr, accepted }
}

/// Server entries under names of this test's own: the metrics recorder is
/// one per process, shared by every test in this file.
fn named(prefix: &str, nodes: &[TestNode]) -> Vec<String> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{prefix}{i}={}", n.tls.unwrap()))
        .collect()
}

/// Read one reply line (up to and including `\r\n`).
async fn line<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    c: &mut Client<S>,
) -> String {
    let mut out = Vec::new();
    while !out.ends_with(b"\r\n") {
        out.extend(c.read_exact(1).await);
    }
    String::from_utf8(out).unwrap()
}

async fn metrics_text(proxy: &TestProxy) -> String {
    http_get(proxy.metrics.unwrap(), "/metrics").await.1
}

/// One memgate node behind a relay that can stall it, and a proxy whose one
/// server is the relay, as `name`, with a 300 ms timeout; `adjust` changes
/// the rest of its configuration. The node stops when the returned one drops.
async fn behind_a_relay(
    name: &str,
    adjust: impl FnOnce(&mut memgate::proxy::ProxyConfig),
) -> (TestProxy, Relay, Vec<TestNode>) {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 1).await;
    let relay = relay(nodes[0].tls.unwrap(), None).await;
    let mut config = proxy_config(&[format!("{name}={}", relay.addr)], &pki.ca_pem());
    config.server_name = Some("localhost".into());
    config.timeout = Duration::from_millis(300);
    adjust(&mut config);
    (start_proxy(config).await, relay, nodes)
}

#[tokio::test]
async fn a_silent_node_costs_each_request_at_most_its_timeout_and_one_connect() {
    let silent = silent_listener().await;
    let pki = TestPki::new();
    let mut config = proxy_config(&[format!("silent0={}", silent.addr)], &pki.ca_pem());
    config.server_name = Some("localhost".into());
    config.timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_secs(2);
    let proxy = start_proxy(config).await;
    let started = Instant::now();
    let mut waits = Vec::new();
    for i in 0..10 {
        let addr = proxy.addr;
        waits.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let sent = Instant::now();
            c.send(format!("get k{i}\r\n").as_bytes()).await;
            let reply = line(&mut c).await;
            (reply, sent.elapsed())
        }));
    }
    for wait in waits {
        let (reply, took) = wait.await.unwrap();
        assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
        assert!(took < Duration::from_millis(900), "answered after {took:?}");
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        silent.accepted.load(Ordering::SeqCst),
        1,
        "the ten requests shared one connect attempt"
    );
}

#[tokio::test]
async fn one_timeout_does_not_mark_a_node_down() {
    let (proxy, relay, _nodes) = behind_a_relay("once0", |_| {}).await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    relay.stalled.store(true, Ordering::SeqCst);
    c.send(b"get a\r\n").await;
    let reply = line(&mut c).await;
    assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
    relay.stalled.store(false, Ordering::SeqCst);
    let metrics = metrics_text(&proxy).await;
    assert_eq!(
        sample(&metrics, "memgate_proxy_node_up", &["once0"]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "memgate_proxy_upstream_errors_total",
            &["once0", "timeout"]
        ),
        Some(1.0),
        "{metrics}"
    );
    let sent = Instant::now();
    c.expect(b"get a\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n").await;
    assert!(sent.elapsed() < Duration::from_millis(300));
}

/// The session's one timer fires while nothing is in flight (it is then not
/// polled); a request after that idle spell to a node gone silent must still
/// be answered within its timeout.
#[tokio::test]
async fn a_request_after_an_idle_spell_still_times_out() {
    let (proxy, relay, _nodes) = behind_a_relay("idle0", |_| {}).await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    // Past the set's deadline: the timer armed for it goes off unwatched.
    tokio::time::sleep(Duration::from_millis(600)).await;
    relay.stalled.store(true, Ordering::SeqCst);
    let sent = Instant::now();
    c.send(b"get a\r\n").await;
    let reply = tokio::time::timeout(Duration::from_secs(5), line(&mut c))
        .await
        .expect("no reply: the timer was never re-armed");
    assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
    let took = sent.elapsed();
    assert!(took < Duration::from_millis(900), "answered after {took:?}");
    relay.stalled.store(false, Ordering::SeqCst);
}

#[tokio::test]
async fn a_stalled_node_serves_again_about_a_probe_interval_after_it_answers() {
    let (proxy, relay, _nodes) = behind_a_relay("stall0", |config| {
        config.down_retry_delay = Duration::from_secs(1);
    })
    .await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    relay.stalled.store(true, Ordering::SeqCst);
    // Three seconds of stall, with a client asking all along.
    let stall = Instant::now();
    while stall.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        c.send(b"get a\r\n").await;
        let reply = line(&mut c).await;
        assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
        assert!(
            sent.elapsed() < Duration::from_millis(450),
            "{:?}",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = metrics_text(&proxy).await;
    assert_eq!(
        sample(&metrics, "memgate_proxy_node_up", &["stall0"]),
        Some(0.0),
        "three seconds of timeouts mark it down: {metrics}"
    );
    let connects_while_down = relay.accepted.load(Ordering::SeqCst);
    assert!(
        connects_while_down <= 6,
        "a down node costs about one connect per probe interval, not one per request: {connects_while_down}"
    );
    relay.stalled.store(false, Ordering::SeqCst);
    let back = Instant::now();
    loop {
        c.send(b"get a\r\n").await;
        let reply = line(&mut c).await;
        if reply == "VALUE a 0 1\r\n" {
            assert_eq!(line(&mut c).await, "1\r\n");
            assert_eq!(line(&mut c).await, "END\r\n");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_millis(2500),
            "still failing {:?} after the node answers again: {reply}",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_connection_forgotten_by_the_path_never_fails_a_request() {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 1).await;
    // The path forgets a connection after 600 ms without traffic.
    let relay = relay(nodes[0].tls.unwrap(), Some(Duration::from_millis(600))).await;
    let mut config = proxy_config(&[format!("idle0={}", relay.addr)], &pki.ca_pem());
    config.server_name = Some("localhost".into());
    config.timeout = Duration::from_millis(500);
    config.keepalive = Duration::from_millis(200);
    let proxy = start_proxy(config).await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.expect(b"get a\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n").await;
    }
}

#[tokio::test]
async fn every_error_series_is_exported_at_zero_from_start_up() {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 2).await;
    let proxy = start_proxy(proxy_config(&named("fresh", &nodes), &pki.ca_pem())).await;
    let metrics = metrics_text(&proxy).await;
    for node in ["fresh0", "fresh1"] {
        for kind in [
            "connect", "tls", "auth", "timeout", "io", "protocol", "down",
        ] {
            let node_label = format!("node=\"{node}\"");
            let kind_label = format!("kind=\"{kind}\"");
            assert_eq!(
                sample(
                    &metrics,
                    "memgate_proxy_upstream_errors_total",
                    &[&node_label, &kind_label]
                ),
                Some(0.0),
                "{node} {kind}: {metrics}"
            );
        }
        for name in [
            "memgate_proxy_tls_failures_total",
            "memgate_proxy_sasl_failures_total",
        ] {
            assert_eq!(
                sample(&metrics, name, &[&format!("node=\"{node}\"")]),
                Some(0.0),
                "{name} {node}: {metrics}"
            );
        }
    }
}

#[tokio::test]
async fn ten_reloads_under_load_fail_no_request_and_keep_the_connections() {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 3).await;
    let mut config = proxy_config(&named("reload", &nodes), &pki.ca_pem());
    let same = config.clone();
    config.reload_from = Some(Arc::new(move || Ok(same.clone())));
    let proxy = start_proxy(config).await;
    // Warm every node's connections.
    let mut c = connect(proxy.addr).await;
    for i in 0..30 {
        c.expect(format!("set w{i} 0 0 1\r\nw\r\n").as_bytes(), b"STORED\r\n")
            .await;
    }
    let connects = |m: &str| -> f64 {
        m.lines()
            .filter(|l| {
                l.starts_with("memgate_proxy_upstream_connects_total") && l.contains("reload")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = connects(&metrics_text(&proxy).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..8 {
        let (addr, stop) = (proxy.addr, Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("c{id}k{}", n % 50);
                let value = format!("{id}-{n}");
                c.expect(
                    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
                    b"STORED\r\n",
                )
                .await;
                c.expect(
                    format!("get {key}\r\n").as_bytes(),
                    format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).as_bytes(),
                )
                .await;
                n += 1;
            }
            n
        }));
    }
    for i in 1..=10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.reload.send(i).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let done = client.await.expect("no request failed during the reloads");
        assert!(done > 0);
    }
    let after = connects(&metrics_text(&proxy).await);
    assert_eq!(before, after, "unchanged nodes kept their connections");
}

#[tokio::test]
async fn a_multi_get_across_a_dead_node_returns_the_live_hits() {
    let pki = TestPki::new();
    let mut nodes = start_tls_nodes(&pki, 3).await;
    let entries = named("mg", &nodes);
    let servers: Vec<_> = entries
        .iter()
        .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
        .collect();
    let ring = memgate::proxy::ring::Ring::new(&servers).unwrap();
    let proxy = start_proxy(proxy_config(&entries, &pki.ca_pem())).await;
    let mut c = connect(proxy.addr).await;
    let keys: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    for key in &keys {
        c.expect(
            format!("set {key} 0 0 1\r\nv\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    }
    drop(nodes.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live: Vec<&String> = keys
        .iter()
        .filter(|k| ring.locate(k.as_bytes()) != 2)
        .collect();
    assert!(live.len() < keys.len() && !live.is_empty());
    let mut expected = String::new();
    for key in &live {
        expected.push_str(&format!("VALUE {key} 0 1\r\nv\r\n"));
    }
    expected.push_str("END\r\n");
    // Twice: first while the dead node's connection is found lost, then
    // while the node is marked down.
    for _ in 0..2 {
        c.expect(
            format!("get {}\r\n", keys.join(" ")).as_bytes(),
            expected.as_bytes(),
        )
        .await;
    }
    let metrics = metrics_text(&proxy).await;
    let missed = sample(
        &metrics,
        "memgate_proxy_multiget_unreachable_keys_total",
        &["mg2"],
    );
    assert_eq!(
        missed,
        Some(2.0 * (keys.len() - live.len()) as f64),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_twenty_thousand_key_get_is_answered_promptly() {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 3).await;
    let proxy = start_proxy(proxy_config(&named("wide", &nodes), &pki.ca_pem())).await;
    let mut c = connect(proxy.addr).await;
    for i in (0..20_000).step_by(1000) {
        c.expect(
            format!("set key{i} 0 0 1\r\nv\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    }
    let keys: Vec<String> = (0..20_000).map(|i| format!("key{i}")).collect();
    let mut expected = String::new();
    for i in (0..20_000).step_by(1000) {
        expected.push_str(&format!("VALUE key{i} 0 1\r\nv\r\n"));
    }
    expected.push_str("END\r\n");
    let sent = Instant::now();
    c.expect(
        format!("get {}\r\n", keys.join(" ")).as_bytes(),
        expected.as_bytes(),
    )
    .await;
    // 0.2 s in a release build; the test build is less optimised.
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
}
