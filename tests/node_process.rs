//! The `memgate node` binary as an operator runs it: flags, exit codes,
//! hash-password, and the memory cost of many idle connections.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{rss_kib, run, spawn, Process, BIN};

#[test]
fn bad_configuration_exits_64_with_one_line() {
    for args in [
        &["node", "--memory-limit", "lots"][..],
        &["node", "--listen", "nowhere"][..],
        &["node", "--caches", "/nonexistent/caches.toml"][..],
        &["node", "--insecure-no-auth", "--listen", "0.0.0.0:0"][..],
        &["node", "--auth-timeout", "-3"][..],
        &["node", "--insecure-no-auth", "--max-item-size", "32MiB"][..],
        &["node", "--insecure-no-auth", "--threads", "0"][..],
        &["node", "--insecure-no-auth", "--threads", "1025"][..],
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

/// A node without login on a loopback port of its own, with one more flag.
fn plain_node(flag: &str, value: &str) -> Process {
    let args = [
        "node",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        flag,
        value,
    ];
    spawn(&[], &args, &[], &["plain"])
}

#[test]
fn threads_start_that_many_session_threads_and_stats_says_so() {
    let node = plain_node("--threads", "3");
    let (pid, addr) = (node.pid(), node.addr("plain"));
    // A thread names itself once it runs, which may be just after the node
    // is listening.
    let sessions = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter(|task| {
                let comm = task.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm)
                    .unwrap()
                    .starts_with("memgate-session")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sessions() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sessions(), 3);
    // Connections are dealt out in turn: six of them land on every thread
    // twice, and each is served.
    let mut conns: Vec<std::net::TcpStream> = (0..6)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "set k{i} 0 0 1\r\n{i}\r\nget k{i}\r\n").unwrap();
        let want = format!("STORED\r\nVALUE k{i} 0 1\r\n{i}\r\nEND\r\n");
        assert_eq!(read_exactly(c, want.len()), want);
    }
    let c = &mut conns[0];
    c.write_all(b"stats\r\nstats settings\r\n").unwrap();
    let mut seen = String::new();
    while !seen.ends_with("END\r\n") || seen.matches("END\r\n").count() < 2 {
        seen.push_str(&read_exactly(c, 1));
    }
    assert!(seen.contains("STAT threads 3\r\n"), "{seen}");
    assert!(seen.contains("STAT num_threads 3\r\n"), "{seen}");
}

/// Exactly `n` bytes from `c`, as text.
fn read_exactly(c: &mut std::net::TcpStream, n: usize) -> String {
    let mut buf = vec![0; n];
    std::io::Read::read_exact(c, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn ten_thousand_idle_connections_cost_bounded_memory() {
    let node = plain_node("--max-connections", "20000");
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
