//! The `memgate node` binary as an operator runs it: flags, exit codes,
//! hash-password, and the memory cost of many idle connections.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_memgate");

/// Start `memgate node` with `args`; return the child and its plain address.
#[allow(clippy::zombie_processes)] // the caller kills and waits for it
fn spawn_node(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .arg("node")
        .args(args)
        .env("MEMGATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "node did not report its address");
        let line = lines.next().expect("node exited early").unwrap();
        if line.contains("listening") && line.contains("listener=\"plain\"")
            || line.contains("listener=plain")
        {
            let addr = line.rsplit("addr=").next().unwrap().trim().to_string();
            // Keep draining stderr so the node never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr.parse().unwrap());
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    for args in [
        &["node", "--memory-limit", "lots"][..],
        &["node", "--listen", "nowhere"][..],
        &["node", "--caches", "/nonexistent/caches.toml"][..],
        &["node", "--insecure-no-auth", "--listen", "0.0.0.0:0"][..],
        &["node", "--auth-timeout", "-3"][..],
        &[
            "node",
            "--cert",
            "/nonexistent.pem",
            "--key",
            "/nonexistent-key.pem",
            "--insecure-no-auth",
        ][..],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn hash_password_prints_a_phc_string() {
    let mut child = Command::new(BIN)
        .args(["node", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ten_thousand_idle_connections_cost_bounded_memory() {
    let (mut child, addr) = spawn_node(&[
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "20000",
    ]);
    let pid = child.id();
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        conns.push(std::net::TcpStream::connect(addr).unwrap());
    }
    // Every connection says something once, so each has a live session.
    for c in conns.iter_mut() {
        c.write_all(b"mn\r\n").unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before)) * 1024 / 10_000;
    eprintln!("10k idle connections: {before} KiB -> {after} KiB, {per_conn} B each");
    assert!(per_conn < 16 * 1024, "{per_conn} bytes per idle connection");
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}
