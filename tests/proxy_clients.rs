//! Real clients and memccapable through the sidecar in front of three TLS
//! nodes; and the sidecar in front of three real `memcached -S -Z`.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

async fn run_ok(mut cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("cannot run {shown}: {e} (run .ci/run to install test dependencies)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown} failed:\n{text}");
    text
}

fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn memgate_cluster() -> (TestPki, Vec<TestNode>, TestProxy) {
    let pki = TestPki::new();
    let nodes = start_tls_nodes(&pki, 3).await;
    let proxy = start_proxy(proxy_config(&server_entries(&nodes), &pki.ca_pem())).await;
    (pki, nodes, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_php_and_dalli_clients_through_the_proxy() {
    let (_pki, _nodes, proxy) = memgate_cluster().await;
    let addr = proxy.addr.to_string();
    let mut py = Command::new("python3");
    py.args([&script("proxy_clients.py"), &addr, PROXY_USER, PROXY_PASS]);
    assert!(run_ok(py)
        .await
        .contains("all python clients through the proxy: ok"));
    let mut php = Command::new("php");
    php.args([
        &script("proxy_php.php"),
        "127.0.0.1",
        &proxy.addr.port().to_string(),
    ]);
    assert!(run_ok(php)
        .await
        .contains("all php clients through the proxy: ok"));
    let mut rb = Command::new("ruby");
    rb.args([&script("proxy_dalli.rb"), &addr]);
    assert!(run_ok(rb)
        .await
        .contains("all dalli clients through the proxy: ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memccapable_through_the_proxy() {
    let (_pki, _nodes, proxy) = memgate_cluster().await;
    for mode in ["-a", "-b"] {
        let mut cmd = Command::new("memccapable");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.addr.port().to_string(),
            "-t",
            "5",
            mode,
        ]);
        let out = run_ok(cmd).await;
        assert!(out.contains("All tests passed"), "{mode}: {out}");
    }
}

/// A real `memcached -S -Z` with a sasldb holding the proxy's credentials.
struct Memcached {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_memcached(dir: &std::path::Path, pki: &TestPki) -> Memcached {
    let issued = pki
        .ca
        .issue_node("localhost", &["localhost", "127.0.0.1"])
        .unwrap();
    std::fs::write(dir.join("node.crt"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("node.key"), &issued.key_pem).unwrap();
    let sasldb = dir.join("sasldb");
    if !sasldb.exists() {
        let mut set = Command::new("saslpasswd2")
            .args(["-p", "-a", "memcached", "-c", "-f"])
            .arg(&sasldb)
            .arg(PROXY_USER)
            .stdin(Stdio::piped())
            .spawn()
            .expect("saslpasswd2 (sasl2-bin)");
        use std::io::Write;
        set.stdin
            .take()
            .unwrap()
            .write_all(PROXY_PASS.as_bytes())
            .unwrap();
        assert!(set.wait().unwrap().success());
        std::fs::write(
            dir.join("memcached.conf"),
            format!("mech_list: plain\nsasldb_path: {}\n", sasldb.display()),
        )
        .unwrap();
    }
    for _ in 0..5 {
        // memcached cannot listen on port 0 with TLS: pick a free port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("memcached")
            .args([
                "-S",
                "-Z",
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-u",
                "root",
                "-p",
                &port.to_string(),
                "-o",
            ])
            .arg(format!(
                "ssl_chain_cert={},ssl_key={}",
                dir.join("node.crt").display(),
                dir.join("node.key").display()
            ))
            .env("SASL_CONF_PATH", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Memcached { child, addr };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("memcached -S -Z did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_in_front_of_real_memcached_with_sasl_and_tls() {
    let pki = TestPki::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<Memcached> = dirs
        .iter()
        .map(|d| start_memcached(d.path(), &pki))
        .collect();
    let entries: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, m)| format!("n{i}={}", m.addr))
        .collect();
    let proxy = start_proxy(proxy_config(&entries, &pki.ca_pem())).await;
    let mut c = connect(proxy.addr).await;
    // Text, across the three servers, and a multi-get merged in order.
    let mut line = b"get".to_vec();
    let mut expected = Vec::new();
    for i in 0..30 {
        c.expect(
            format!("set k{i} {i} 0 3\r\nv{i:02}\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
        line.extend(format!(" k{i}").bytes());
        expected.extend(format!("VALUE k{i} {i} 3\r\nv{i:02}\r\n").bytes());
    }
    line.extend(b"\r\n");
    expected.extend(b"END\r\n");
    c.expect(&line, &expected).await;
    // memcached -Z stalls on a value larger than a TLS record followed by more
    // pipelined input; the proxy must hold the rest back until it answers.
    let value = vec![b'z'; 40_000];
    let mut burst = b"set big 0 0 40000\r\n".to_vec();
    burst.extend(&value);
    burst.extend(b"\r\nget big\r\nincr k1 1\r\n");
    let mut reply = b"STORED\r\nVALUE big 0 40000\r\n".to_vec();
    reply.extend(&value);
    reply.extend(b"\r\nEND\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    c.expect(&burst, &reply).await;
    // Binary: three 15 KB SETQs, GETKQs and a NOOP in one burst.
    let mut b = connect(proxy.addr).await;
    let mut burst = Vec::new();
    for i in 0..3u32 {
        burst.extend(bin_request(
            0x11,
            format!("q{i}").as_bytes(),
            &[0; 8],
            &vec![b'a' + i as u8; 15_000],
            i,
            0,
        ));
    }
    for i in 0..3u32 {
        burst.extend(bin_request(
            0x0d,
            format!("q{i}").as_bytes(),
            &[],
            &[],
            10 + i,
            0,
        ));
    }
    burst.extend(bin_request(0x0a, b"", &[], &[], 99, 0));
    b.send(&burst).await;
    for i in 0..3u32 {
        let r = b.read_bin().await;
        assert_eq!(
            (r.opaque, r.value.len(), r.value[0]),
            (10 + i, 15_000, b'a' + i as u8)
        );
    }
    assert_eq!(b.read_bin().await.opaque, 99);
    // Many clients pipelining at once: every reply byte-exact.
    let mut tasks = Vec::new();
    for client in 0..40u32 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            for round in 0..5 {
                let mut burst = Vec::new();
                let mut expect = Vec::new();
                for j in 0..8 {
                    let key = format!("c{client}r{round}j{j}");
                    let value = format!("{key}-").repeat((client as usize * 7 + j) % 50 + 1);
                    burst.extend(
                        format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len())
                            .bytes(),
                    );
                    expect.extend(
                        format!(
                            "STORED\r\nVALUE {key} 0 {}\r\n{value}\r\nEND\r\n",
                            value.len()
                        )
                        .bytes(),
                    );
                }
                c.expect(&burst, &expect).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A wrong password marks the node down with reason auth.
    let mut bad = proxy_config(&entries[..1], &pki.ca_pem());
    bad.password = "wrong".into();
    let bad = start_proxy(bad).await;
    let mut c = connect(bad.addr).await;
    c.send(b"get a\r\n").await;
    assert!(String::from_utf8(c.read_exact(12).await)
        .unwrap()
        .starts_with("SERVER_ERROR"));
    let (_, metrics) = http_get(bad.metrics.unwrap(), "/metrics").await;
    assert!(
        metrics.contains("memgate_proxy_sasl_failures_total{node=\"n0\"}"),
        "{metrics}"
    );
    drop(servers);
}
