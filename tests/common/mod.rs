//! Shared helpers for integration tests, in one home: in-process nodes on
//! port 0, PKI made in memory, a tiny raw-socket client that reads exact
//! replies, HTTP requests through the project's own client, and runners for
//! the real memcached clients and conformance tools; and in modules of their
//! own:
//! - [`process`]: the `memgate` binary as a process (its path, one-shot
//!   runs, spawning it and waiting for its listeners, signals, RSS);
//! - [`memcached`]: the one memcached launcher;
//! - [`normalise`]: the one reply normaliser of the differential tests;
//! - [`fixtures`]: the caches files.
//!
//! Each test binary compiles this folder on its own and uses only part of
//! it, hence the allow: what one binary leaves unused another uses.
#![allow(dead_code)]

pub mod fixtures;
pub mod memcached;
pub mod normalise;
pub mod process;

// Re-exported where the tests have always found them; a test binary that
// uses none of one would see an unused import.
#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use memcached::*;
#[allow(unused_imports)]
pub use process::{kill, run_ok};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memgate::node::{Node, NodeConfig, NodeShared};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TestNode {
    pub plain: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<NodeShared>,
    pub caches_path: Option<PathBuf>,
    pub ca_pem: Option<String>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn base_config() -> NodeConfig {
    let mut config = NodeConfig::new(None);
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// Start a node with `caches` (TOML) and optional TLS; `tweak` adjusts the config.
pub async fn start_node(
    caches: Option<&str>,
    tls: bool,
    tweak: impl FnOnce(&mut NodeConfig),
) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    let mut caches_path = None;
    match caches {
        Some(text) => {
            let path = write_caches(dir.path(), "caches.toml", text);
            config.caches_path = Some(path.clone());
            caches_path = Some(path);
        }
        None => config.no_auth = true,
    }
    let mut ca_pem = None;
    if tls {
        let (server_config, ca) = test_tls("localhost");
        config.tls_listen = Some(("127.0.0.1:0".parse().unwrap(), server_config));
        ca_pem = Some(ca);
    }
    tweak(&mut config);
    let node = Node::bind(config).await.expect("node binds");
    let (stop, rx) = watch::channel(false);
    let t = TestNode {
        plain: node.plain_addr(),
        tls: node.tls_addr(),
        metrics: node.metrics_addr(),
        admin: node.admin_addr(),
        shared: node.shared(),
        caches_path,
        ca_pem,
        stop,
        _dir: dir,
    };
    tokio::spawn(node.run(rx));
    t
}

/// A node certificate for `name` (and 127.0.0.1) signed by a fresh CA: the
/// server config and the CA's PEM.
pub fn test_tls(name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let ca = memgate::pki::CertificateAuthority::generate("memgate test CA").unwrap();
    let issued = ca.issue_node(name, &[name, "127.0.0.1"]).unwrap();
    let chain = memgate::tls::certs_from_pem(issued.cert_pem.as_bytes()).unwrap();
    let key = memgate::tls::key_from_pem(issued.key_pem.as_bytes()).unwrap();
    let config = memgate::tls::server_config(chain, key, None).unwrap();
    (config, ca.cert_pem().to_string())
}

/// A raw client that writes bytes and reads exactly what is expected.
pub struct Client<S> {
    pub stream: S,
    buf: Vec<u8>,
}

pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    Client::new(TcpStream::connect(addr).await.unwrap())
}

pub async fn connect_tls(
    addr: SocketAddr,
    ca_pem: &str,
    name: &str,
) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = memgate::tls::client_config(ca_pem.as_bytes(), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = memgate::tls::server_name(name).unwrap();
    Client::new(connector.connect(name, tcp).await.unwrap())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Read until exactly `n` bytes are available and return them.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 65536];
            let got = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("reply within 10s")
                .unwrap();
            assert!(
                got > 0,
                "connection closed while waiting for {n} bytes, have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..got]);
        }
        self.buf.drain(..n).collect()
    }

    /// Read one reply line, without its CRLF.
    pub async fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            line.extend(self.read_exact(1).await);
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap()
    }

    /// Send `request` and expect exactly `reply` back.
    pub async fn expect(&mut self, request: &[u8], reply: &[u8]) {
        self.send(request).await;
        let got = self.read_exact(reply.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Read until the peer closes; returns what arrived.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest))
            .await
            .expect("close within 10s")
            .ok();
        rest
    }

    /// True if nothing arrives within `wait`.
    pub async fn is_silent(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n == 0,
            _ => true,
        }
    }
}

/// Build a binary request packet.
pub fn bin_request(
    opcode: u8,
    key: &[u8],
    extras: &[u8],
    value: &[u8],
    opaque: u32,
    cas: u64,
) -> Vec<u8> {
    let mut p = vec![0x80, opcode];
    p.extend_from_slice(&(key.len() as u16).to_be_bytes());
    p.push(extras.len() as u8);
    p.push(0);
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    p.extend_from_slice(&opaque.to_be_bytes());
    p.extend_from_slice(&cas.to_be_bytes());
    p.extend_from_slice(extras);
    p.extend_from_slice(key);
    p.extend_from_slice(value);
    p
}

/// A parsed binary response.
#[derive(Debug)]
pub struct BinReply {
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn read_bin(&mut self) -> BinReply {
        let h = self.read_exact(24).await;
        assert_eq!(h[0], 0x81, "response magic");
        let keylen = u16::from_be_bytes([h[2], h[3]]) as usize;
        let extlen = h[4] as usize;
        let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let b = self.read_exact(body).await;
        BinReply {
            opcode: h[1],
            status: u16::from_be_bytes([h[6], h[7]]),
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes(h[16..24].try_into().unwrap()),
            extras: b[..extlen].to_vec(),
            key: b[extlen..extlen + keylen].to_vec(),
            value: b[extlen + keylen..].to_vec(),
        }
    }

    /// SASL PLAIN login over binary; returns the status.
    pub async fn sasl_login(&mut self, user: &str, pass: &str) -> u16 {
        let data = format!("\0{user}\0{pass}");
        self.send(&bin_request(0x21, b"PLAIN", &[], data.as_bytes(), 7, 0))
            .await;
        self.read_bin().await.status
    }
}

/// A private CA for a test, and node server configs signed by it.
pub struct TestPki {
    pub ca: memgate::pki::CertificateAuthority,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki {
            ca: memgate::pki::CertificateAuthority::generate("memgate test CA").unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_string()
    }

    /// A server config whose certificate names `localhost` and 127.0.0.1.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let issued = self
            .ca
            .issue_node("localhost", &["localhost", "127.0.0.1"])
            .unwrap();
        let chain = memgate::tls::certs_from_pem(issued.cert_pem.as_bytes()).unwrap();
        let key = memgate::tls::key_from_pem(issued.key_pem.as_bytes()).unwrap();
        memgate::tls::server_config(chain, key, None).unwrap()
    }
}

/// `n` TLS nodes with [`proxy_cache`], all signed by `pki`, plain listener off.
pub async fn start_tls_nodes(pki: &TestPki, n: usize) -> Vec<TestNode> {
    start_tls_nodes_with(pki, n, &proxy_cache()).await
}

/// [`start_tls_nodes`] with another caches file (a larger cache 42, say).
pub async fn start_tls_nodes_with(pki: &TestPki, n: usize, caches: &str) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let server = pki.server_config();
        nodes.push(
            start_node(Some(caches), false, |c| {
                c.listen = None;
                c.tls_listen = Some(("127.0.0.1:0".parse().unwrap(), server));
            })
            .await,
        );
    }
    nodes
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub shared: Arc<memgate::proxy::ProxyShared>,
    stop: watch::Sender<bool>,
    pub reload: watch::Sender<u64>,
    pub done: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    /// Ask the proxy to drain and stop.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A proxy config for `servers` ("name=host:port" entries) trusting `ca_pem`.
pub fn proxy_config(servers: &[String], ca_pem: &str) -> memgate::proxy::ProxyConfig {
    let mut config = memgate::proxy::ProxyConfig::new(
        servers
            .iter()
            .map(|s| memgate::proxy::ring::parse_server_entry(s).unwrap())
            .collect(),
        memgate::tls::client_config(ca_pem.as_bytes(), None).unwrap(),
        PROXY_USER.into(),
        PROXY_PASS.into(),
    );
    // Ephemeral ports; a slower machine's timeouts; a dead node probed
    // rarely, so that tests see its failures rather than its recovery.
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.timeout = Duration::from_secs(2);
    config.down_retry_delay = Duration::from_secs(30);
    config.drain_timeout = Duration::from_secs(2);
    config
}

pub async fn start_proxy(config: memgate::proxy::ProxyConfig) -> TestProxy {
    let proxy = memgate::proxy::Proxy::bind(config)
        .await
        .expect("proxy binds");
    let (stop, rx) = watch::channel(false);
    let (reload, reload_rx) = watch::channel(0u64);
    let addr = proxy.addr().unwrap();
    let metrics = proxy.metrics_addr();
    let shared = proxy.shared();
    let done = tokio::spawn(proxy.run(rx, reload_rx));
    TestProxy {
        addr,
        metrics,
        shared,
        stop,
        reload,
        done,
    }
}

/// A request through `proxy` gets SERVER_ERROR at once and the proxy counts
/// the `failures` metric for node n0; returns its metrics text.
pub async fn refused_and_counted(proxy: &TestProxy, failures: &str) -> String {
    let mut c = connect(proxy.addr).await;
    c.send(b"get a\r\n").await;
    let reply = String::from_utf8(c.read_exact(12).await).unwrap();
    assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
    let (_, metrics) = http_get(proxy.metrics.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(&format!("{failures}{{node=\"n0\"}}")),
        "{metrics}"
    );
    metrics
}

/// Server entries naming each node by index: "n0=127.0.0.1:port".
pub fn server_entries(nodes: &[TestNode]) -> Vec<String> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("n{i}={}", n.tls.unwrap()))
        .collect()
}

/// One HTTP/1.1 request through the project's own client
/// ([`memgate::analytics::http`]), with `headers` and an optional body.
pub async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<memgate::analytics::http::Response> {
    memgate::analytics::http::request(
        &addr.to_string(),
        None,
        method,
        path,
        headers,
        body.map(str::as_bytes),
        Duration::from_secs(30),
    )
    .await
}

/// (status, body) of a reply; status 0 when the answer was not HTTP at all
/// (a TLS listener's alert, say). Any other failure panics.
fn status_and_body(
    reply: std::io::Result<memgate::analytics::http::Response>,
    what: &str,
) -> (u16, String) {
    match reply {
        Ok(reply) => (reply.status, reply.text()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => (0, e.to_string()),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// GET a path from an HTTP listener; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = http_call(addr, "GET", path, &[], None).await;
    status_and_body(reply, &format!("GET {path} on {addr}"))
}

/// One HTTP/1.1 request with an optional `Authorization` header value and
/// JSON/form body; returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut headers = Vec::new();
    if let Some(auth) = authorization {
        headers.push(("Authorization", auth));
    }
    // The client types a body as JSON; anything else here is a form.
    if body.is_some_and(|b| !b.is_empty() && !b.starts_with('{')) {
        headers.push(("Content-Type", FORM));
    }
    let reply = http_call(addr, method, path, &headers, body).await;
    status_and_body(reply, &format!("{method} {path} on {addr}"))
}

/// The `Content-Type` of a form body.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// An analytics config for `nodes` (`label=admin-addr,...`) on 127.0.0.1:0,
/// with an in-memory database and a short sampling interval.
pub fn analytics_config(nodes: &str, token: Option<&str>) -> memgate::analytics::AnalyticsConfig {
    memgate::analytics::AnalyticsConfig {
        nodes: memgate::analytics::parse_nodes(nodes).unwrap(),
        admin_token: token.map(str::to_owned),
        tls: None,
        disable_after: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        db: None,
        sample_interval: Duration::from_millis(300),
        retention: Duration::from_secs(86_400),
        metrics_listen: None,
    }
}

/// Bind and run `memgate analytics` in-process: its address, and the
/// sender that stops it (dropping it stops it too).
pub async fn start_analytics(
    config: memgate::analytics::AnalyticsConfig,
) -> (SocketAddr, watch::Sender<bool>) {
    let analytics = memgate::analytics::Analytics::bind(config).await.unwrap();
    let addr = analytics.addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(analytics.run(rx));
    (addr, stop)
}

/// Wait until `check` holds (15 s at most).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP basic `Authorization` header value.
pub fn basic_auth(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Run `tests/clients/SCRIPT` with `interpreter` and `args`; its output.
pub async fn client_script(interpreter: &str, script: &str, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(interpreter);
    cmd.arg(format!(
        "{}/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args(args);
    run_ok(cmd).await
}

/// libmemcached's `memccapable` against `addr` in `mode` (`-a` text, `-b`
/// binary): every one of its tests must pass.
pub async fn memccapable(addr: SocketAddr, mode: &str) {
    let mut cmd = std::process::Command::new("memccapable");
    cmd.args([
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
        "-t",
        "5",
        mode,
    ]);
    let out = run_ok(cmd).await;
    assert!(out.contains("All tests passed"), "{out}");
}

/// A set of `value` under `key` and a get of it in one burst: the reply is
/// the whole value back, byte for byte (memcached -Z stalls on exactly
/// this with a 40 KB value).
pub async fn set_and_get_in_one_burst<S>(c: &mut Client<S>, key: &str, flags: u32, value: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = value.len();
    let mut burst = format!("set {key} {flags} 0 {len}\r\n").into_bytes();
    burst.extend(value);
    burst.extend(format!("\r\nget {key}\r\n").bytes());
    let mut reply = format!("STORED\r\nVALUE {key} {flags} {len}\r\n").into_bytes();
    reply.extend(value);
    reply.extend(b"\r\nEND\r\n");
    c.expect(&burst, &reply).await;
}

/// At least 100 clients each pipeline bursts of random-size sets and gets on
/// their own keys through `addr`; every reply is checked byte for byte, so a
/// reply that reached the wrong client (or arrived out of order) fails.
pub async fn pipelining_clients_get_their_own_bytes(addr: SocketAddr, clients: u32) {
    let mut tasks = Vec::new();
    for client in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let mut seed = client.wrapping_mul(2_654_435_761).max(1);
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed
            };
            for round in 0..5 {
                let mut burst = Vec::new();
                let mut expect = Vec::new();
                for j in 0..10 {
                    let len = (next() % 3000) as usize;
                    let value: Vec<u8> = (0..len).map(|_| b'a' + (next() % 26) as u8).collect();
                    let key = format!("c{client}-r{round}-k{j}");
                    burst.extend(format!("set {key} {client} 0 {len}\r\n").bytes());
                    burst.extend(&value);
                    burst.extend(b"\r\n");
                    burst.extend(format!("get {key}\r\n").bytes());
                    expect.extend(b"STORED\r\n");
                    expect.extend(format!("VALUE {key} {client} {len}\r\n").bytes());
                    expect.extend(&value);
                    expect.extend(b"\r\nEND\r\n");
                }
                c.expect(&burst, &expect).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A byte relay in front of a real node that the test can stall (bytes are
/// held, as with a stopped process or a partition), slow down (each chunk
/// waits `delay_us` microseconds, a slow link), make drop what it is sent
/// while `dropping` is set (a partition whose packets are lost), or that forgets
/// connections idle for longer than `forget_idle`, as a NAT or load balancer
/// does: from then on it silently drops whatever either side sends.
#[derive(Clone)]
pub struct Relay {
    pub addr: SocketAddr,
    pub stalled: Arc<AtomicBool>,
    pub delay_us: Arc<std::sync::atomic::AtomicU64>,
    pub dropping: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

pub async fn relay(target: SocketAddr, forget_idle: Option<Duration>) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay {
        addr: listener.local_addr().unwrap(),
        stalled: Arc::new(AtomicBool::new(false)),
        delay_us: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        dropping: Arc::new(AtomicBool::new(false)),
        accepted: Arc::new(AtomicUsize::new(0)),
    };
    let state = relay.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            state.accepted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let last = Arc::new(Mutex::new(Instant::now()));
            let forgotten = Arc::new(AtomicBool::new(false));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (rd, wr) in [(cr, sw), (sr, cw)] {
                let link = Link {
                    stalled: Arc::clone(&state.stalled),
                    delay_us: Arc::clone(&state.delay_us),
                    dropping: Arc::clone(&state.dropping),
                    last: Arc::clone(&last),
                    forgotten: Arc::clone(&forgotten),
                    forget_idle,
                };
                tokio::spawn(pump(rd, wr, link));
            }
        }
    });
    relay
}

/// What one direction of a relayed connection obeys.
struct Link {
    stalled: Arc<AtomicBool>,
    delay_us: Arc<std::sync::atomic::AtomicU64>,
    dropping: Arc<AtomicBool>,
    last: Arc<Mutex<Instant>>,
    forgotten: Arc<AtomicBool>,
    forget_idle: Option<Duration>,
}

async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while link.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delay = link.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if let Some(idle) = link.forget_idle {
            let mut last = link.last.lock().unwrap();
            if last.elapsed() > idle {
                link.forgotten.store(true, Ordering::SeqCst);
            }
            *last = Instant::now();
        }
        if link.forgotten.load(Ordering::SeqCst) || link.dropping.load(Ordering::SeqCst) {
            continue;
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The value of one sample line that contains every one of `parts`.
pub fn sample(metrics: &str, name: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
