//! The sidecar in front of three in-process TLS nodes: routing, pipelining,
//! client logins, failures and metrics, over real sockets.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

async fn cluster(
    n: usize,
    tweak: impl FnOnce(&mut memgate::proxy::ProxyConfig),
) -> (TestPki, Vec<TestNode>, TestProxy) {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, n).await;
    let mut config = proxy_config(&server_entries(&nodes), &pki.ca_pem());
    tweak(&mut config);
    let proxy = start_proxy(config).await;
    (pki, nodes, proxy)
}

fn items(node: &TestNode) -> u64 {
    node.shared.tenants().get("42").unwrap().store.usage().items
}

#[tokio::test]
async fn text_requests_are_spread_over_the_nodes() {
    let (_pki, nodes, proxy) = cluster(3, |_| {}).await;
    let mut c = connect(proxy.addr).await;
    for i in 0..60 {
        c.expect(
            format!("set key{i} {i} 0 5\r\nval{i:02}\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    }
    for i in 0..60 {
        c.expect(
            format!("get key{i}\r\n").as_bytes(),
            format!("VALUE key{i} {i} 5\r\nval{i:02}\r\nEND\r\n").as_bytes(),
        )
        .await;
    }
    let per_node: Vec<u64> = nodes.iter().map(items).collect();
    assert_eq!(per_node.iter().sum::<u64>(), 60, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "ketama spreads keys: {per_node:?}"
    );
    // Each key sits on the node the ring names.
    let servers = server_entries(&nodes)
        .iter()
        .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
        .collect::<Vec<_>>();
    let ring = memgate::proxy::ring::Ring::new(&servers).unwrap();
    for i in 0..60 {
        let key = format!("key{i}");
        let home = ring.locate(key.as_bytes());
        let mut direct = connect_tls(nodes[home].tls.unwrap(), &_pki.ca_pem(), "localhost").await;
        assert_eq!(direct.sasl_login(PROXY_USER, PROXY_PASS).await, 0);
        direct
            .send(&bin_request(0x00, key.as_bytes(), &[], &[], 1, 0))
            .await;
        assert_eq!(direct.read_bin().await.status, 0, "{key} on node {home}");
    }
}

#[tokio::test]
async fn multi_get_is_split_and_merged_in_order() {
    let (_pki, _nodes, proxy) = cluster(3, |_| {}).await;
    let mut c = connect(proxy.addr).await;
    let mut expected = Vec::new();
    let mut line = b"get".to_vec();
    for i in 0..40 {
        if i % 3 != 0 {
            c.expect(
                format!("set m{i} 0 0 2\r\n{i:02}\r\n").as_bytes(),
                b"STORED\r\n",
            )
            .await;
            expected.extend(format!("VALUE m{i} 0 2\r\n{i:02}\r\n").bytes());
        }
        line.extend(format!(" m{i}").bytes());
    }
    line.extend(b"\r\n");
    expected.extend(b"END\r\n");
    c.expect(&line, &expected).await;
}

#[tokio::test]
async fn meta_and_binary_clients_and_pipelines() {
    let (_pki, _nodes, proxy) = cluster(3, |_| {}).await;
    let mut m = connect(proxy.addr).await;
    m.expect(
        b"ms mk 2 F7\r\nhi\r\nmg mk v f k\r\nmn\r\n",
        b"HD\r\nVA 2 f7 kmk\r\nhi\r\nMN\r\n",
    )
    .await;
    m.expect(b"md mk q\r\nmg mk v\r\n", b"EN\r\n").await;

    let mut b = connect(proxy.addr).await;
    // Any SASL login is accepted: the proxy logs in upstream itself.
    assert_eq!(b.sasl_login("whoever", "whatever").await, 0);
    let mut burst = Vec::new();
    for i in 0..20u32 {
        burst.extend(bin_request(
            0x11,
            format!("b{i}").as_bytes(),
            &[0, 0, 0, 1, 0, 0, 0, 0],
            b"v",
            i,
            0,
        ));
    }
    for i in 0..25u32 {
        burst.extend(bin_request(
            0x0d,
            format!("b{i}").as_bytes(),
            &[],
            &[],
            100 + i,
            0,
        ));
    }
    burst.extend(bin_request(0x0a, b"", &[], &[], 999, 0));
    b.send(&burst).await;
    for i in 0..20u32 {
        let r = b.read_bin().await;
        assert_eq!(
            (r.opaque, r.key.clone(), r.value.clone()),
            (100 + i, format!("b{i}").into_bytes(), b"v".to_vec())
        );
    }
    let r = b.read_bin().await;
    assert_eq!((r.opcode, r.opaque), (0x0a, 999));
    // A GETK miss names its key, as memcached's does.
    b.send(&bin_request(0x0c, b"nothing", &[], &[], 5, 0)).await;
    let r = b.read_bin().await;
    assert_eq!((r.status, r.key, r.value), (1, b"nothing".to_vec(), vec![]));
}

#[tokio::test]
async fn ascii_login_is_accepted_not_stored() {
    let (_pki, nodes, proxy) = cluster(1, |_| {}).await;
    let mut c = connect(proxy.addr).await;
    c.expect(
        format!(
            "set {PROXY_USER} 0 0 {}\r\n{PROXY_PASS}\r\n",
            PROXY_PASS.len()
        )
        .as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(format!("get {PROXY_USER}\r\n").as_bytes(), b"END\r\n")
        .await;
    assert_eq!(items(&nodes[0]), 0);
}

#[tokio::test]
async fn bad_input_and_oversize_values_keep_the_stream_in_sync() {
    let (_pki, _nodes, proxy) = cluster(2, |_| {}).await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"garbage here\r\n", b"ERROR\r\n").await;
    let mut big = format!("set big 0 0 {}\r\n", 1 << 20).into_bytes();
    big.extend(vec![b'x'; 1 << 20]);
    big.extend(b"\r\nset small 0 0 1\r\ns\r\nget small\r\n");
    c.expect(
        &big,
        b"SERVER_ERROR object too large for cache\r\nSTORED\r\nVALUE small 0 1\r\ns\r\nEND\r\n",
    )
    .await;
}

#[tokio::test]
async fn large_values_are_not_followed_on_the_wire() {
    let (_pki, _nodes, proxy) = cluster(1, |_| {}).await;
    let mut c = connect(proxy.addr).await;
    set_and_get_in_one_burst(&mut c, "big", 0, &[b'q'; 40_000]).await;
}

#[tokio::test]
async fn many_clients_pipelining_never_get_each_others_replies() {
    let (_pki, _nodes, proxy) = cluster(3, |_| {}).await;
    pipelining_clients_get_their_own_bytes(proxy.addr, 100).await;
}

#[tokio::test]
async fn client_disconnecting_mid_pipeline_disturbs_no_one() {
    let (_pki, _nodes, proxy) = cluster(2, |_| {}).await;
    let mut steady = connect(proxy.addr).await;
    steady.expect(b"set s 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    for _ in 0..20 {
        let mut rude = connect(proxy.addr).await;
        rude.send(&b"get s\r\nset x 0 0 1\r\n1\r\n".repeat(50))
            .await;
        drop(rude);
        steady
            .expect(b"get s\r\n", b"VALUE s 0 1\r\n1\r\nEND\r\n")
            .await;
    }
}

#[tokio::test]
async fn down_node_fails_its_keys_only_and_eject_rehashes() {
    let pki = TestPki::new();
    let mut nodes = start_tls_nodes(&pki, 3).await;
    // Named apart from other tests' n0..n2: the metrics gauges are the
    // process's, shared by every test in this binary.
    let entries: Vec<String> = server_entries(&nodes)
        .iter()
        .map(|e| e.replacen('n', "down", 1))
        .collect();
    let servers: Vec<_> = entries
        .iter()
        .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
        .collect();
    let ring = memgate::proxy::ring::Ring::new(&servers).unwrap();
    // Stop node 2 before the proxy ever reaches it.
    drop(nodes.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let keys: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
    for failover in [
        memgate::proxy::pool::Failover::Error,
        memgate::proxy::pool::Failover::Eject,
    ] {
        let mut config = proxy_config(&entries, &pki.ca_pem());
        config.failover = failover;
        let proxy = start_proxy(config).await;
        let mut c = connect(proxy.addr).await;
        for key in &keys {
            c.send(format!("set {key} 0 0 1\r\nv\r\n").as_bytes()).await;
            let reply = String::from_utf8(c.read_exact(8).await).unwrap();
            let on_dead = ring.locate(key.as_bytes()) == 2;
            if on_dead && failover == memgate::proxy::pool::Failover::Error {
                assert!(reply.starts_with("SERVER_E"), "{key}: {reply}");
                let mut rest = Vec::new();
                while !rest.ends_with(b"\r\n") {
                    rest.extend(c.read_exact(1).await);
                }
            } else {
                assert_eq!(
                    reply, "STORED\r\n",
                    "{key} (on dead node: {on_dead}, {failover:?})"
                );
            }
        }
        let (status, _) = http_get(proxy.metrics.unwrap(), "/readyz").await;
        assert_eq!(status, 200);
        let (_, metrics) = http_get(proxy.metrics.unwrap(), "/metrics").await;
        assert!(
            metrics.contains("memgate_proxy_node_up{node=\"down2\"} 0"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn restarted_node_is_used_again_after_the_retry_delay() {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 1).await;
    let addr = nodes[0].tls.unwrap();
    let mut config = proxy_config(&server_entries(&nodes), &pki.ca_pem());
    config.down_retry_delay = Duration::from_millis(300);
    let proxy = start_proxy(config).await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    drop(nodes);
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(b"get a\r\n").await;
    let reply = String::from_utf8(c.read_exact(12).await).unwrap();
    assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n") {
        rest.extend(c.read_exact(1).await);
    }
    // Restart a node on the same port.
    let server = pki.server_config();
    let _restarted = start_node(Some(&proxy_cache()), false, |cfg| {
        cfg.listen = None;
        cfg.tls_listen = Some((addr, server));
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.expect(b"get a\r\n", b"END\r\n").await;
    c.expect(b"set a 0 0 1\r\n2\r\n", b"STORED\r\n").await;
}

#[tokio::test]
async fn wrong_password_marks_node_down_with_reason_auth() {
    let (_pki, _nodes, proxy) = cluster(1, |c| c.password = "wrong".into()).await;
    let metrics = refused_and_counted(&proxy, "memgate_proxy_sasl_failures_total").await;
    assert!(metrics.contains("kind=\"auth\""), "{metrics}");
    let (status, _) = http_get(proxy.metrics.unwrap(), "/readyz").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn certificates_from_another_ca_or_name_are_refused() {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 1).await;
    let other = TestPki::new();
    for (ca, name) in [
        (other.ca_pem(), None),
        (pki.ca_pem(), Some("wrong.example.com")),
    ] {
        let mut config = proxy_config(&server_entries(&nodes), &ca);
        config.server_name = name.map(str::to_string);
        let proxy = start_proxy(config).await;
        assert_refused_before_login(&proxy, &nodes[0]).await;
    }
}

/// A client's request through `proxy` gets SERVER_ERROR at once, the proxy
/// counts a TLS failure for node n0, and `node` never saw a login attempt:
/// no password went to a node whose certificate did not verify.
async fn assert_refused_before_login(proxy: &TestProxy, node: &TestNode) {
    refused_and_counted(proxy, "memgate_proxy_tls_failures_total").await;
    let tenants = node.shared.tenants();
    assert_eq!(
        tenants
            .get("42")
            .unwrap()
            .stats
            .auth_cmds
            .load(Ordering::Relaxed),
        0,
        "no password sent"
    );
}

#[tokio::test]
async fn health_endpoints_and_drain() {
    let (_pki, _nodes, mut proxy) = cluster(1, |_| {}).await;
    let m = proxy.metrics.unwrap();
    assert_eq!(http_get(m, "/healthz").await.0, 200);
    let mut c = connect(proxy.addr).await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    assert_eq!(http_get(m, "/readyz").await.0, 200);
    let (_, metrics) = http_get(m, "/metrics").await;
    assert!(
        metrics.contains("memgate_proxy_requests_total{command=\"set\",result=\"ok\"}"),
        "{metrics}"
    );
    proxy.shutdown();
    // The idle client is closed by the drain, and the proxy finishes.
    assert!(c.read_to_close().await.is_empty());
    tokio::time::timeout(Duration::from_secs(5), &mut proxy.done)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn expired_node_certificate_is_refused() {
    use memgate::pki::{CertSpec, Usage};
    use std::time::SystemTime;
    let pki = TestPki::new();
    let day = Duration::from_secs(86_400);
    let mut spec = CertSpec::new("localhost", &["localhost", "127.0.0.1"], Usage::Server);
    spec.not_before = SystemTime::now() - 10 * day;
    spec.not_after = SystemTime::now() - day;
    let issued = pki.ca.issue(&spec).unwrap();
    let server = memgate::tls::server_config(
        memgate::tls::certs_from_pem(issued.cert_pem.as_bytes()).unwrap(),
        memgate::tls::key_from_pem(issued.key_pem.as_bytes()).unwrap(),
        None,
    )
    .unwrap();
    let node = start_node(Some(&proxy_cache()), false, |c| {
        c.listen = None;
        c.tls_listen = Some(("127.0.0.1:0".parse().unwrap(), server));
    })
    .await;
    let nodes = vec![node];
    let proxy = start_proxy(proxy_config(&server_entries(&nodes), &pki.ca_pem())).await;
    assert_refused_before_login(&proxy, &nodes[0]).await;
}

#[tokio::test]
async fn half_closed_client_still_gets_its_replies() {
    let (_pki, _nodes, proxy) = cluster(3, |_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut burst = Vec::new();
    let mut expect = Vec::new();
    for i in 0..20 {
        burst.extend(format!("set h{i} 0 0 2\r\n{i:02}\r\nget h{i}\r\n").bytes());
        expect.extend(format!("STORED\r\nVALUE h{i} 0 2\r\n{i:02}\r\nEND\r\n").bytes());
    }
    stream.write_all(&burst).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expect)
    );
}

#[tokio::test]
async fn more_pipelined_requests_than_the_queue_holds_are_all_answered() {
    // More than the session's 1024 in-flight replies arrive in one burst and
    // the client then only waits: the rest must be started from the buffer.
    let (_pki, _nodes, proxy) = cluster(2, |_| {}).await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set p 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    c.expect(
        &b"get p\r\n".repeat(3000),
        &b"VALUE p 0 1\r\n1\r\nEND\r\n".repeat(3000),
    )
    .await;
}

/// With `--busy-poll` the sidecar polls for the window after each reply,
/// then sleeps, and the next reply sets it polling again: the polling
/// counter grows by about a window per reply, and not at all while idle.
/// The window is long (50 ms) so that a loaded machine descheduling the
/// test's thread for a few milliseconds cannot make the counts miss.
#[tokio::test]
async fn busy_poll_polls_after_replies_and_then_sleeps() {
    const NAME: &str = "memgate_proxy_busy_poll_microseconds_total";
    let window = Duration::from_millis(50);
    let (_pki, _nodes, proxy) = cluster(1, |c| c.busy_poll = Some(window)).await;
    let polled = || async {
        let (_, text) = http_get(proxy.metrics.unwrap(), "/metrics").await;
        sample(&text, NAME, &[]).expect("the counter is exported")
    };
    let mut c = connect(proxy.addr).await;
    let before = polled().await;
    for round in 1..=2 {
        c.expect(b"set k 0 0 1\r\n1\r\n", b"STORED\r\n").await;
        // The window closes 50 ms after the reply; well after it, the task
        // has counted its polling and gone to sleep.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = polled().await;
        let spent = after - before;
        assert!(
            spent >= 20_000.0 * f64::from(round) && spent < 250_000.0 * f64::from(round),
            "round {round}: polled {spent} µs in all for a 50 ms window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(polled().await, after, "round {round}: it polled while idle");
    }
}

/// Many clients pipeline a write and then a read of the same key, over and
/// over, through two connections per node while the pool warms up: every
/// read returns the write just acknowledged before it (read-your-writes).
/// With one slot index shared by all nodes, a client moved to another
/// connection of a node whose earlier request was still queued on the old
/// one, and its get overtook its set: an older value, or a miss.
#[tokio::test]
async fn pipelined_reads_see_the_clients_own_writes_during_warm_up() {
    for round in 0..3 {
        let (_pki, _nodes, proxy) = cluster(3, |c| c.connections_per_node = 2).await;
        let addr = proxy.addr;
        let mut tasks = Vec::new();
        for client in 0..12 {
            tasks.push(tokio::spawn(async move {
                let mut c = connect(addr).await;
                for burst in 0..20 {
                    let mut request = Vec::new();
                    let mut want = Vec::new();
                    for j in 0..12 {
                        let key = format!("r{round}c{client}k{}", j % 4);
                        let value = format!("{burst}.{j}");
                        request.extend(
                            format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len())
                                .bytes(),
                        );
                        want.extend(b"STORED\r\n");
                        want.extend(
                            format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).bytes(),
                        );
                    }
                    c.expect(&request, &want).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}

/// Held by the tests that move large values: one measures this process's
/// RSS, which the other's would inflate.
static LARGE_VALUES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The sum of `stat` over the nodes, as the sidecar's merged `stats` says.
async fn merged_stat<S>(client: &mut common::Client<S>, stat: &str) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    client.send(b"stats\r\n").await;
    let mut reply = Vec::new();
    while !reply.ends_with(b"END\r\n") {
        reply.extend(client.read_exact(1).await);
    }
    let reply = String::from_utf8(reply).unwrap();
    let prefix = format!("STAT {stat} ");
    let line = reply.lines().find(|l| l.starts_with(&prefix));
    let value = line.unwrap_or_else(|| panic!("no {stat} in {reply}"));
    value[prefix.len()..].parse().unwrap()
}

/// A multi-key get whose replies would fill the client's buffer is not sent
/// upstream beside another one: while the client reads nothing, the nodes
/// see its first get only (25 MB of replies), not a second one because the
/// first's weight was not known yet when the second was read.
#[tokio::test]
async fn a_client_that_stops_reading_has_one_large_get_in_flight() {
    let _alone = LARGE_VALUES.lock().await;
    // 64 MiB a node, so that no shard of a node's cache overflows with 500
    // KB items (16 MiB makes 2 MiB shards, and five of the 17 or so items a
    // node holds land in one shard about one run in twenty: an eviction).
    let pki = TestPki::new();
    let big = cache(
        "42",
        "64MiB",
        &[],
        &[credential(PROXY_USER, PROXY_PASS, &["primary = true"])],
    );
    let nodes = start_tls_nodes_with(&pki, 3, &big).await;
    let proxy = start_proxy(proxy_config(&server_entries(&nodes), &pki.ca_pem())).await;
    const SIZE: usize = 500_000;
    let value = |i: usize| vec![b'a' + (i % 26) as u8; SIZE];
    let mut writer = connect(proxy.addr).await;
    let keys: Vec<String> = (0..50).map(|i| format!("large{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let mut set = format!("set {key} 0 0 {SIZE}\r\n").into_bytes();
        set.extend(value(i));
        set.extend(b"\r\n");
        writer.expect(&set, b"STORED\r\n").await;
    }
    assert_eq!(merged_stat(&mut writer, "cmd_get").await, 0);
    let mut slow = connect(proxy.addr).await;
    let request = format!("get {}\r\n", keys.join(" "));
    slow.send(request.repeat(4).as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One get of 50 keys reached the nodes; the client's socket cannot take
    // its 25 MB of replies, so the next waits in the sidecar, unsent.
    assert_eq!(merged_stat(&mut writer, "cmd_get").await, 50);
    let mut want = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        want.extend(format!("VALUE {key} 0 {SIZE}\r\n").bytes());
        want.extend(value(i));
        want.extend(b"\r\n");
    }
    want.extend(b"END\r\n");
    for _ in 0..4 {
        assert!(slow.read_exact(want.len()).await == want);
    }
    assert_eq!(merged_stat(&mut writer, "cmd_get").await, 200);
}

/// A client that pipelines big multi-gets and reads nothing is held to its
/// buffer: the sidecar stops reading it instead of buffering its replies
/// (100 MB of them here), other clients are served meanwhile, and it gets
/// every value right when it reads at last.
#[tokio::test]
async fn a_client_that_stops_reading_is_held_to_its_buffer() {
    let _alone = LARGE_VALUES.lock().await;
    let (_pki, _nodes, proxy) = cluster(3, |_| {}).await;
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 100_000];
    let mut writer = connect(proxy.addr).await;
    let keys: Vec<String> = (0..50).map(|i| format!("big{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let mut set = format!("set {key} 0 0 100000\r\n").into_bytes();
        set.extend(value(i));
        set.extend(b"\r\n");
        writer.expect(&set, b"STORED\r\n").await;
    }
    // The proxy and its nodes run in this process.
    let before = common::process::own_rss_kib();
    let mut slow = connect(proxy.addr).await;
    let request = format!("get {}\r\n", keys.join(" "));
    slow.send(request.repeat(20).as_bytes()).await;
    // The flood begins; another client is served meanwhile, promptly.
    let mut other = connect(proxy.addr).await;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        other
            .expect(b"set small 0 0 1\r\nx\r\n", b"STORED\r\n")
            .await;
        other
            .expect(b"get small\r\n", b"VALUE small 0 1\r\nx\r\nEND\r\n")
            .await;
        assert!(started.elapsed() < Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = common::process::own_rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB while the client did not read");
    assert!(grown < 40 << 10, "RSS grew by {grown} KiB");
    // Everything arrives, right, once the client reads.
    let mut want = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        want.extend(format!("VALUE {key} 0 100000\r\n").bytes());
        want.extend(value(i));
        want.extend(b"\r\n");
    }
    want.extend(b"END\r\n");
    for _ in 0..20 {
        assert!(slow.read_exact(want.len()).await == want);
    }
}
