//! The one memcached launcher: a real `memcached` process on a free port of
//! 127.0.0.1, for the differential tests and for the sidecar in front of
//! memcached (`-S -Z`, `-Y -Z`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::TestPki;

/// One memcached process; killed on drop.
pub struct Memcached {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Memcached {
    /// Its process id, to signal it (SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `memcached` on 127.0.0.1 with `args` (plus 64 MiB, 2 threads, no
/// UDP), logging into `dir`. memcached cannot listen on port 0 with TLS:
/// take a free port, release it, start memcached on it, and try another port
/// if it fails to come up.
pub fn start_memcached(
    dir: &std::path::Path,
    args: &[String],
    env: &[(&str, &std::path::Path)],
) -> Memcached {
    use std::process::{Command, Stdio};
    for _attempt in 0..10 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(dir.join(format!("memcached-{port}.log"))).unwrap();
        let mut child = Command::new("memcached")
            .args(["-U", "0", "-l", "127.0.0.1", "-u", "root"])
            .args(["-m", "64", "-t", "2", "-c", "1024"])
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("memcached (run .ci/run)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: the port was taken, say; try another
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Memcached { addr, child };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let logs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("memcached-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    panic!("memcached did not start: {logs:?}");
}

/// A node certificate from `pki` written into `dir`, and the `-o` option
/// that gives it to memcached `-Z`.
pub fn memcached_tls_args(pki: &TestPki, dir: &std::path::Path) -> Vec<String> {
    let issued = pki
        .ca
        .issue_node("localhost", &["localhost", "127.0.0.1"])
        .unwrap();
    let cert = dir.join("node.pem");
    let key = dir.join("node-key.pem");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    vec![
        "-o".into(),
        format!(
            "ssl_chain_cert={},ssl_key={}",
            cert.display(),
            key.display()
        ),
    ]
}

/// A sasldb in `dir` holding `user` with `pass` (made by `saslpasswd2`), and
/// the `memcached.conf` beside it that points memcached `-S` at it: start
/// memcached with `SASL_CONF_PATH` set to `dir`.
pub fn sasl_conf(dir: &std::path::Path, user: &str, pass: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let sasldb = dir.join("sasldb");
    let mut saslpasswd = Command::new("saslpasswd2")
        .args(["-p", "-a", "memcached", "-c", "-f"])
        .arg(&sasldb)
        .arg(user)
        .stdin(Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (sasl2-bin; run .ci/run)");
    saslpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(pass.as_bytes())
        .unwrap();
    assert!(saslpasswd.wait().unwrap().success(), "saslpasswd2 failed");
    std::fs::write(
        dir.join("memcached.conf"),
        format!("mech_list: plain\nsasldb_path: {}\n", sasldb.display()),
    )
    .unwrap();
}
