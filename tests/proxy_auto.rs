//! `--upstream-protocol auto` (the default) in front of real nodes of each
//! dialect: memcached `-S -Z` (SASL through a sasldb), memcached `-Y -Z`
//! (an auth file) and a memgate node, each found at login and shown in
//! `memgate_proxy_upstream_protocol`; and a node that comes back from a
//! restart speaking another dialect, found again.
//!
//! Needs `memcached` and `saslpasswd2` (sasl2-bin), which `.ci/run` installs.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// memcached's arguments and environment for `-S -Z` with a sasldb holding
/// the proxy's credential, made in `dir`.
fn sasl_args(dir: &Path, tls: &[String]) -> Vec<String> {
    sasl_conf(dir, PROXY_USER, PROXY_PASS);
    let mut args = vec!["-S".to_string(), "-Z".into()];
    args.extend(tls.iter().cloned());
    args
}

/// A memcached `-S -Z` with a certificate from `pki`, and the TLS arguments
/// it was given, for more memcached processes.
fn sasl_node(dir: &Path, pki: &TestPki) -> (Memcached, Vec<String>) {
    let tls = memcached_tls_args(pki, dir);
    let sasl = start_memcached(dir, &sasl_args(dir, &tls), &[("SASL_CONF_PATH", dir)]);
    (sasl, tls)
}

/// memcached's arguments for `-Y -Z` with an auth file holding the proxy's
/// credential, made in `dir`.
fn ascii_auth_args(dir: &Path, tls: &[String]) -> Vec<String> {
    let authfile = dir.join("authfile");
    std::fs::write(&authfile, format!("{PROXY_USER}:{PROXY_PASS}\n")).unwrap();
    let mut args = vec![
        "-Y".to_string(),
        authfile.display().to_string(),
        "-Z".into(),
    ];
    args.extend(tls.iter().cloned());
    args
}

/// A `set` then a `get` of `key` through the proxy: whether both answered
/// as they should.
async fn round_trip(proxy: std::net::SocketAddr, key: &str) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(proxy).await else {
        return false;
    };
    let mut c = Client::new(stream);
    let value = format!("v-{key}");
    let request = format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len());
    let want = format!(
        "STORED\r\nVALUE {key} 0 {}\r\n{value}\r\nEND\r\n",
        value.len()
    );
    c.send(request.as_bytes()).await;
    let got = tokio::time::timeout(Duration::from_secs(3), async {
        let mut got = Vec::new();
        while got.len() < want.len() && !got.ends_with(b"ERROR\r\n") {
            got.extend(c.read_exact(1).await);
        }
        got
    })
    .await;
    matches!(got, Ok(got) if got == want.as_bytes())
}

/// The protocol gauge of `node`, as "dialect=value" for each dialect.
async fn protocols(proxy: &TestProxy, node: &str) -> Vec<String> {
    let (_, metrics) = http_get(proxy.metrics.unwrap(), "/metrics").await;
    ["meta", "meta-memcached", "binary"]
        .iter()
        .map(|p| {
            let node = format!("node=\"{node}\"");
            let protocol = format!("protocol=\"{p}\"");
            let value = sample(
                &metrics,
                "memgate_proxy_upstream_protocol",
                &[&node, &protocol],
            );
            format!("{p}={value:?}")
        })
        .collect()
}

/// What [`protocols`] says when `node` is spoken to in `dialect`.
fn only(dialect: &str) -> Vec<String> {
    ["meta", "meta-memcached", "binary"]
        .iter()
        .map(|p| format!("{p}={:?}", Some(if *p == dialect { 1.0 } else { 0.0 })))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_finds_each_nodes_dialect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (sasl, tls) = sasl_node(dir.path(), &pki);
    let ascii = start_memcached(dir.path(), &ascii_auth_args(dir.path(), &tls), &[]);
    let nodes = start_tls_nodes(&pki, 1).await;
    let entries = vec![
        format!("n0={}", sasl.addr),
        format!("n1={}", ascii.addr),
        format!("n2={}", nodes[0].tls.unwrap()),
    ];
    let config = proxy_config(&entries, &pki.ca_pem());
    assert_eq!(
        config.upstream_protocol,
        memgate::proxy::upstream::UpstreamProtocol::Auto,
        "auto is the default"
    );
    let proxy = start_proxy(config).await;
    // Not known before any login: every series at 0.
    for node in ["n0", "n1", "n2"] {
        assert_eq!(protocols(&proxy, node).await, only("none"), "{node}");
    }
    // Enough keys to land on every node.
    for i in 0..30 {
        assert!(round_trip(proxy.addr, &format!("key{i}")).await, "key{i}");
    }
    assert_eq!(protocols(&proxy, "n0").await, only("binary"));
    assert_eq!(protocols(&proxy, "n1").await, only("meta-memcached"));
    assert_eq!(protocols(&proxy, "n2").await, only("meta"));
    // A meta flag only meta carries passes to the memgate node and memcached
    // -Y, and is refused by name for memcached -S.
    let ring = memgate::proxy::ring::Ring::new(
        &entries
            .iter()
            .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let key_on = |node: usize| {
        (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| ring.locate(k.as_bytes()) == node)
            .unwrap()
    };
    let mut c = connect(proxy.addr).await;
    for node in [1, 2] {
        let key = key_on(node);
        c.expect(format!("ms {key} 1 I\r\nx\r\n").as_bytes(), b"HD\r\n")
            .await;
    }
    let key = key_on(0);
    c.send(format!("ms {key} 1 I\r\nx\r\n").as_bytes()).await;
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.extend(c.read_exact(1).await);
    }
    assert!(
        line.starts_with(b"CLIENT_ERROR"),
        "{}",
        String::from_utf8_lossy(&line)
    );
}

/// A memcached started on a given port; killed on drop.
struct OnPort(Child);

impl Drop for OnPort {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start memcached with `args` on `port` of 127.0.0.1, and wait until it
/// listens (a port just freed by a killed memcached may take a few tries).
fn memcached_on(port: u16, args: &[String]) -> OnPort {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut child = Command::new("memcached")
            .args([
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-u",
                "root",
                "-m",
                "64",
                "-t",
                "2",
            ])
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached");
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return OnPort(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            Instant::now() < deadline,
            "memcached never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_in_another_dialect_is_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (sasl, tls) = sasl_node(dir.path(), &pki);
    let addr = sasl.addr;
    // The metrics recorder is the test binary's, shared with the test
    // above: a node name of its own keeps their gauges apart.
    let mut config = proxy_config(&[format!("restarted={addr}")], &pki.ca_pem());
    config.down_retry_delay = Duration::from_millis(100);
    let proxy = start_proxy(config).await;
    assert!(round_trip(proxy.addr, "a").await);
    assert_eq!(protocols(&proxy, "restarted").await, only("binary"));

    // The same address, now memcached -Y: the next connection's login
    // (binary first, as last time) is answered in text, and the text login
    // on a new connection finds meta-memcached.
    drop(sasl);
    let _ascii = memcached_on(addr.port(), &ascii_auth_args(dir.path(), &tls));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !round_trip(proxy.addr, "b").await {
        assert!(
            Instant::now() < deadline,
            "never served by the restarted node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(protocols(&proxy, "restarted").await, only("meta-memcached"));
}
