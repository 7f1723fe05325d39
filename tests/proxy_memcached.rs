//! The sidecar in front of three real `memcached -S -Z` processes (Debian's
//! memcached 1.6, TLS with a certificate from our PKI, SASL PLAIN through a
//! sasldb): every dialect, multi-gets across the nodes, the large-value bursts
//! that stall memcached -Z, many pipelining clients, and a wrong password.
//!
//! Needs `memcached` and `saslpasswd2` (sasl2-bin), which `.ci/run` installs.

mod common;

use common::*;

const USER: &str = "mguser";
const PASS: &str = "mg-pass-123";

/// Three memcached -S -Z nodes sharing one PKI and sasldb.
struct RealCluster {
    nodes: Vec<Memcached>,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl RealCluster {
    fn start(n: usize) -> RealCluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let tls = memcached_tls_args(&pki, dir.path());

        sasl_conf(dir.path(), USER, PASS);

        let nodes = (0..n)
            .map(|_| {
                let mut args = vec!["-S".to_string(), "-Z".into()];
                args.extend(tls.iter().cloned());
                start_memcached(dir.path(), &args, &[("SASL_CONF_PATH", dir.path())])
            })
            .collect();
        RealCluster {
            nodes,
            ca_pem: pki.ca_pem(),
            _dir: dir,
        }
    }

    fn entries(&self) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("n{i}={}", n.addr))
            .collect()
    }

    fn proxy_config(&self) -> memgate::proxy::ProxyConfig {
        let mut config = proxy_config(&self.entries(), &self.ca_pem);
        config.username = USER.into();
        config.password = PASS.into();
        config.upstream_protocol = memgate::proxy::upstream::UpstreamProtocol::Binary;
        config
    }
}

async fn setup() -> (RealCluster, TestProxy) {
    let cluster = RealCluster::start(3);
    let proxy = start_proxy(cluster.proxy_config()).await;
    (cluster, proxy)
}

fn ring_of(cluster: &RealCluster) -> memgate::proxy::ring::Ring {
    let servers: Vec<_> = cluster
        .entries()
        .iter()
        .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
        .collect();
    memgate::proxy::ring::Ring::new(&servers).unwrap()
}

/// Read one text line (through "\r\n").
async fn line<S>(c: &mut Client<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    while !out.ends_with(b"\r\n") {
        out.extend(c.read_exact(1).await);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_meta_and_binary_through_memcached() {
    let (_cluster, proxy) = setup().await;
    let mut c = connect(proxy.addr).await;
    c.expect(b"set t1 5 0 3\r\nabc\r\n", b"STORED\r\n").await;
    c.expect(b"get t1\r\n", b"VALUE t1 5 3\r\nabc\r\nEND\r\n")
        .await;
    c.expect(b"add t1 0 0 1\r\nx\r\n", b"NOT_STORED\r\n").await;
    c.expect(b"replace t1 7 0 3\r\nxyz\r\n", b"STORED\r\n")
        .await;
    c.expect(b"append t1 0 0 2\r\n12\r\n", b"STORED\r\n").await;
    c.expect(b"prepend t1 0 0 2\r\n<<\r\n", b"STORED\r\n").await;
    c.expect(b"get t1\r\n", b"VALUE t1 7 7\r\n<<xyz12\r\nEND\r\n")
        .await;
    c.send(b"gets t1\r\n").await;
    let header = line(&mut c).await;
    let cas: u64 = header
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(header.starts_with("VALUE t1 7 7 "), "{header}");
    assert_eq!(c.read_exact(14).await, b"<<xyz12\r\nEND\r\n");
    c.expect(
        format!("cas t1 0 0 1 {}\r\nz\r\n", cas + 1000).as_bytes(),
        b"EXISTS\r\n",
    )
    .await;
    c.expect(
        format!("cas t1 0 0 1 {cas}\r\nz\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n").await;
    c.expect(b"incr n 5\r\n", b"15\r\n").await;
    c.expect(b"decr n 100\r\n", b"0\r\n").await;
    c.expect(b"incr nope 1\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"touch n 100\r\n", b"TOUCHED\r\n").await;
    c.expect(b"touch nope 100\r\n", b"NOT_FOUND\r\n").await;
    // memcached keeps a decremented value's length, padding it with spaces.
    c.expect(b"gat 100 n\r\n", b"VALUE n 0 2\r\n0 \r\nEND\r\n")
        .await;
    c.expect(b"delete t1\r\n", b"DELETED\r\n").await;
    c.expect(b"delete t1\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"get t1\r\n", b"END\r\n").await;
    c.expect(
        b"set q 0 0 1 noreply\r\nq\r\nget q\r\n",
        b"VALUE q 0 1\r\nq\r\nEND\r\n",
    )
    .await;
    c.send(b"version\r\n").await;
    assert!(line(&mut c).await.starts_with("VERSION "));
    c.expect(b"verbosity 1\r\n", b"OK\r\n").await;
    c.send(b"stats\r\n").await;
    let mut stats = Vec::new();
    loop {
        let l = line(&mut c).await;
        if l == "END\r\n" {
            break;
        }
        stats.push(l);
    }
    assert!(
        stats.iter().any(|l| l.starts_with("STAT curr_items ")),
        "{stats:?}"
    );

    // Meta.
    let mut m = connect(proxy.addr).await;
    m.expect(
        b"ms mk 2 F7 T0\r\nhi\r\nmg mk v f k\r\nmn\r\n",
        b"HD\r\nVA 2 f7 kmk\r\nhi\r\nMN\r\n",
    )
    .await;
    m.expect(
        b"ma mk\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await;
    m.expect(b"ms mc 1\r\n5\r\nma mc MI D3 v\r\n", b"HD\r\nVA 1\r\n8\r\n")
        .await;
    m.expect(b"md mk q\r\nmg mk v\r\nmn\r\n", b"EN\r\nMN\r\n")
        .await;

    // Binary, after a SASL login the proxy accepts whatever it carries.
    let mut b = connect(proxy.addr).await;
    assert_eq!(b.sasl_login("someone", "anything").await, 0);
    b.send(&bin_request(
        0x01,
        b"bk",
        &[0, 0, 0, 9, 0, 0, 0, 0],
        b"bv",
        1,
        0,
    ))
    .await;
    let r = b.read_bin().await;
    assert_eq!((r.opcode, r.status, r.opaque), (0x01, 0, 1));
    assert_ne!(r.cas, 0);
    b.send(&bin_request(0x0c, b"bk", &[], &[], 2, 0)).await;
    let r = b.read_bin().await;
    assert_eq!(
        (r.status, r.extras, r.key, r.value),
        (0, vec![0, 0, 0, 9], b"bk".to_vec(), b"bv".to_vec())
    );
    b.send(&bin_request(0x0c, b"missing", &[], &[], 3, 0)).await;
    let r = b.read_bin().await;
    assert_eq!(
        (r.status, r.key),
        (1, b"missing".to_vec()),
        "GETK miss carries the key"
    );
    b.send(&bin_request(0x0a, b"", &[], &[], 4, 0)).await;
    assert_eq!(b.read_bin().await.opcode, 0x0a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_ring_node_and_multi_get_merges() {
    let (cluster, proxy) = setup().await;
    let ring = ring_of(&cluster);
    let mut c = connect(proxy.addr).await;
    let mut line_req = b"get".to_vec();
    let mut expected = Vec::new();
    for i in 0..60 {
        let key = format!("mk{i}");
        if i % 4 != 0 {
            c.expect(
                format!("set {key} {i} 0 4\r\nv{i:03}\r\n").as_bytes(),
                b"STORED\r\n",
            )
            .await;
            expected.extend(format!("VALUE {key} {i} 4\r\nv{i:03}\r\n").bytes());
        }
        line_req.extend(format!(" {key}").bytes());
    }
    line_req.extend(b"\r\n");
    expected.extend(b"END\r\n");
    c.expect(&line_req, &expected).await;

    // Every stored key sits on the memcached the ring names, and only there.
    let mut per_node = [0usize; 3];
    let mut direct = Vec::new();
    for node in &cluster.nodes {
        let mut d = connect_tls(node.addr, &cluster.ca_pem, "127.0.0.1").await;
        assert_eq!(d.sasl_login(USER, PASS).await, 0);
        direct.push(d);
    }
    for i in (0..60).filter(|i| i % 4 != 0) {
        let key = format!("mk{i}");
        let home = ring.locate(key.as_bytes());
        for (n, d) in direct.iter_mut().enumerate() {
            d.send(&bin_request(0x00, key.as_bytes(), &[], &[], 1, 0))
                .await;
            let status = d.read_bin().await.status;
            assert_eq!(status == 0, n == home, "{key}: node {n}, home {home}");
        }
        per_node[home] += 1;
    }
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_followed_by_pipelined_commands_do_not_stall() {
    let (cluster, proxy) = setup().await;
    // Text: one 40 KB set and a get in the same burst.
    let mut c = connect(proxy.addr).await;
    let value: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    set_and_get_in_one_burst(&mut c, "big", 3, &value).await;

    // Binary: three 15 KB SETQ on one node, then GETKQ for each and NOOP.
    let ring = ring_of(&cluster);
    let keys: Vec<String> = (0..)
        .map(|i| format!("q15-{i}"))
        .filter(|k| ring.locate(k.as_bytes()) == 1)
        .take(3)
        .collect();
    let mut b = connect(proxy.addr).await;
    let mut burst = Vec::new();
    let values: Vec<Vec<u8>> = (0..3u8)
        .map(|n| (0..15_000u32).map(|i| (i as u8) ^ n).collect())
        .collect();
    for (i, key) in keys.iter().enumerate() {
        burst.extend(bin_request(
            0x11,
            key.as_bytes(),
            &[0, 0, 0, i as u8, 0, 0, 0, 0],
            &values[i],
            i as u32,
            0,
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        burst.extend(bin_request(
            0x0d,
            key.as_bytes(),
            &[],
            &[],
            10 + i as u32,
            0,
        ));
    }
    burst.extend(bin_request(0x0a, b"", &[], &[], 99, 0));
    b.send(&burst).await;
    for (i, key) in keys.iter().enumerate() {
        let r = b.read_bin().await;
        assert_eq!((r.opcode, r.status, r.opaque), (0x0d, 0, 10 + i as u32));
        assert_eq!(r.key, key.as_bytes());
        assert_eq!(r.extras, vec![0, 0, 0, i as u8]);
        assert!(r.value == values[i], "value {i} byte for byte");
    }
    let r = b.read_bin().await;
    assert_eq!((r.opcode, r.opaque), (0x0a, 99));

    // Many mid-sized values back to back, pipelined from one client.
    let mut burst = Vec::new();
    let mut expect = Vec::new();
    for i in 0..20 {
        let len = 5_000 + i * 1_111;
        let v = vec![b'0' + (i % 10) as u8; len];
        burst.extend(format!("set mid{i} 0 0 {len}\r\n").bytes());
        burst.extend(&v);
        burst.extend(b"\r\n");
        expect.extend(b"STORED\r\n");
    }
    for i in 0..20 {
        let len = 5_000 + i * 1_111;
        burst.extend(format!("get mid{i}\r\n").bytes());
        expect.extend(format!("VALUE mid{i} 0 {len}\r\n").bytes());
        expect.extend(vec![b'0' + (i % 10) as u8; len]);
        expect.extend(b"\r\nEND\r\n");
    }
    c.expect(&burst, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelining_clients_get_their_own_bytes() {
    let (_cluster, proxy) = setup().await;
    pipelining_clients_get_their_own_bytes(proxy.addr, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sasl_password_marks_the_node_down() {
    let cluster = RealCluster::start(1);
    let mut config = cluster.proxy_config();
    config.password = "not-the-password".into();
    let proxy = start_proxy(config).await;
    let metrics = refused_and_counted(&proxy, "memgate_proxy_sasl_failures_total").await;
    assert!(
        metrics.contains("memgate_proxy_node_up{node=\"n0\"} 0"),
        "{metrics}"
    );
    assert_eq!(http_get(proxy.metrics.unwrap(), "/readyz").await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_ascii_through_the_proxy_to_memcached() {
    let (_cluster, proxy) = setup().await;
    memccapable(proxy.addr, "-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_binary_through_the_proxy_to_memcached() {
    let (_cluster, proxy) = setup().await;
    memccapable(proxy.addr, "-b").await;
}

/// Run tests/clients/SCRIPT with the proxy's address and its login.
async fn through_the_proxy(interpreter: &str, script: &str) -> String {
    let (_cluster, proxy) = setup().await;
    let addr = proxy.addr.to_string();
    client_script(interpreter, script, &[&addr, USER, PASS]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_through_the_proxy_to_memcached() {
    let out = through_the_proxy("python3", "proxy_clients.py").await;
    assert!(
        out.contains("all python clients through the proxy: ok"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_memcached_through_the_proxy_to_memcached() {
    let out = through_the_proxy("php", "proxy_php.php").await;
    assert!(out.contains("php-memcached through the proxy: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dalli_through_the_proxy_to_memcached() {
    let out = through_the_proxy("ruby", "proxy_dalli.rb").await;
    assert!(out.contains("dalli through the proxy: ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_flags_binary_cannot_carry_are_refused_by_name() {
    let (_cluster, proxy) = setup().await;
    let mut m = connect(proxy.addr).await;
    let refused = |flag: &str| {
        format!("CLIENT_ERROR {flag} not supported through memgate proxy to a binary-only node\r\n")
    };
    for (request, flag) in [
        (&b"mg k N30 v\r\n"[..], "meta flag N (vivify)"),
        (b"mg k R30 v\r\n", "meta flag R (recache)"),
        (b"mg k h v\r\n", "meta flag h (hit before)"),
        (b"mg k l v\r\n", "meta flag l (last access)"),
        (b"mg k t v\r\n", "meta flag t (remaining TTL)"),
        (b"md k I\r\n", "meta flag I (invalidate)"),
        (b"ms k 1 I\r\nx\r\n", "meta flag I (invalidate)"),
        (b"me k\r\n", "me (meta debug)"),
    ] {
        m.expect(request, refused(flag).as_bytes()).await;
    }
    // What binary can carry still passes.
    m.expect(b"ms k 1 T60 c\r\nx\r\nmg k v f\r\n", b"HD c")
        .await;
    assert!(line(&mut m).await.ends_with("\r\n"));
    m.expect(b"", b"VA 1 f0\r\nx\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_login_to_memcached_sasl_says_to_use_binary() {
    let cluster = RealCluster::start(1);
    let mut config = cluster.proxy_config();
    config.upstream_protocol = memgate::proxy::upstream::UpstreamProtocol::Meta;
    let proxy = start_proxy(config).await;
    let mut c = connect(proxy.addr).await;
    c.send(b"get a\r\n").await;
    let reply = line(&mut c).await;
    assert!(
        reply
            .starts_with("SERVER_ERROR login to n0 refused: node does not speak the text protocol")
            && reply.contains("use --upstream-protocol binary"),
        "{reply}"
    );
}
