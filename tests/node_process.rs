//! The `memgate node` binary as an operator runs it: flags, exit codes,
//! hash-password, and the memory cost of many idle connections.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{rss_kib, run, spawn, BIN};

#[test]
fn bad_configuration_exits_64_with_one_line() {
    for args in [
        &["node", "--memory-limit", "lots"][..],
        &["node", "--listen", "nowhere"][..],
        &["node", "--caches", "/nonexistent/caches.toml"][..],
        &["node", "--insecure-no-auth", "--listen", "0.0.0.0:0"][..],
        &["node", "--auth-timeout", "-3"][..],
        &["node", "--insecure-no-auth", "--max-item-size", "32MiB"][..],
        &[
            "node",
            "--cert",
            "/nonexistent.pem",
            "--key",
            "/nonexistent-key.pem",
            "--insecure-no-auth",
        ][..],
    ] {
        let exit = run(args, &[]);
        let stderr = exit.stderr;
        assert_eq!(exit.code, 64, "{args:?}: {stderr}");
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

#[test]
fn ten_thousand_idle_connections_cost_bounded_memory() {
    let node = spawn(
        &[],
        &[
            "node",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "20000",
        ],
        &[],
        &["plain"],
    );
    let (pid, addr) = (node.pid(), node.addr("plain"));
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
}
