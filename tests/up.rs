//! `memgate up` and `memgate certs` as a newcomer runs them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{kill, run, BIN};

#[test]
fn up_serves_real_clients_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "no banner");
        let line = lines.next().expect("banner").unwrap();
        if let Some(rest) = line.trim().strip_prefix("point your app at") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        r#"
from pymemcache.client.base import Client
c = Client(("{host}", {port}))
for i in range(200):
    assert c.set(f"k{{i}}", f"value-{{i}}".encode(), noreply=False)
got = c.get_many([f"k{{i}}" for i in range(200)])
assert got == {{f"k{{i}}": f"value-{{i}}".encode() for i in range(200)}}, got
assert c.incr("n", 1) is None
c.set("n", "41", noreply=False)
assert c.incr("n", 1) == 42
print("pymemcache through memgate up: ok")
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    // The credentials were generated and are only readable by their owner.
    use std::os::unix::fs::PermissionsExt;
    for file in [
        "password",
        "caches.toml",
        "ca.key",
        "node.key",
        "memgate.env",
    ] {
        let mode = std::fs::metadata(dir.path().join("state").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others");
    }

    kill(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn up_reports_a_port_in_use_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display().to_string();
    let exit = run(
        &[
            "up",
            "--metrics-listen",
            "none",
            "--listen",
            &addr,
            "--dir",
            &state,
        ],
        &[],
    );
    assert_ne!(exit.code, 0);
    let stderr = exit.stderr;
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn certs_reuses_the_ca_and_keeps_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let run = |args: &[&str]| {
        let exit = run(&[&["certs", "--out", &out][..], args].concat(), &[]);
        assert_eq!(exit.code, 0, "{}", exit.stderr);
    };
    run(&[
        "--node",
        "mc1.example.com",
        "--node",
        "localhost",
        "--client",
        "app",
    ]);
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    run(&["--node", "mc2.example.com"]);
    assert_eq!(
        std::fs::read(dir.path().join("ca.crt")).unwrap(),
        ca,
        "CA reused"
    );
    for key in [
        "ca.key",
        "mc1.example.com.key",
        "mc2.example.com.key",
        "localhost.key",
        "client-app.key",
    ] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // A certificate issued by the second run verifies under the first CA.
    let ca_pem = String::from_utf8(ca).unwrap();
    let server = memgate::tls::server_config_from_files(
        dir.path().join("mc2.example.com.crt"),
        dir.path().join("mc2.example.com.key"),
    )
    .unwrap();
    let client = memgate::tls::client_config(ca_pem.as_bytes(), None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move {
            tokio_rustls::TlsAcceptor::from(server)
                .accept(b)
                .await
                .map(|_| ())
        });
        let name = memgate::tls::server_name("mc2.example.com").unwrap();
        let stream = tokio_rustls::TlsConnector::from(client)
            .connect(name, a)
            .await;
        stream.expect("the new node certificate verifies under the original CA");
        let _ = accept.await;
    });
    run(&["--force"]);
    assert_ne!(
        std::fs::read(dir.path().join("ca.crt")).unwrap(),
        ca_pem.as_bytes(),
        "--force replaces the CA"
    );
}
