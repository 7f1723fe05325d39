//! The `memgate` binary as a process: its path, one-shot runs, spawning it
//! and waiting for the listeners it logs, signals, and what /proc says about
//! a process (RSS, CPU time).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `memgate` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_memgate");

/// Configuration a test's own environment could pass on to `memgate` without
/// the test asking for it; every run starts without them.
const AMBIENT: &[&str] = &[
    "MEMCACHIER_SERVERS",
    "MEMCACHE_SERVERS",
    "MEMGATE_NODE_ADMIN_TOKEN",
    "MEMGATE_ANALYTICS_ADMIN_TOKEN",
];

/// `memgate ARGS` with `env` set, behind `prefix` (`ip netns exec NS`, say),
/// without the ambient configuration and without colours.
fn command(prefix: &[&str], args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    for name in AMBIENT {
        cmd.env_remove(name);
    }
    // After the removals, so that a test can still set one of them.
    cmd.args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1");
    cmd
}

/// How a one-shot run of `memgate` ended.
pub struct Exit {
    /// The exit code; -1 when a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `memgate ARGS` with `env` to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Exit {
    let out = command(&[], args, env).output().expect("memgate runs");
    Exit {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `memgate` process, killed on drop, with the listener addresses it
/// logged and its log (stderr), which is read all along.
pub struct Process {
    child: Child,
    listeners: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of `listener` (`plain`, `tls`, `client`, `metrics`, ...).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    /// Its log so far, one line a line.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Kill it now (SIGKILL ends a stopped process too).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until it exits; by then its whole log has been read.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start `memgate ARGS` with `env`, behind `prefix` (`ip netns exec NS`,
/// say), logging at info, and wait until it has logged the address of every
/// listener in `wanted`.
pub fn spawn(prefix: &[&str], args: &[&str], env: &[(&str, &str)], wanted: &[&str]) -> Process {
    let mut cmd = command(prefix, args, &[&[("MEMGATE_LOG", "info")], env].concat());
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("memgate starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (found, listening) = std::sync::mpsc::channel();
    let lines = Arc::clone(&log);
    // Keeps draining stderr, so that the process never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(listener) = listener_line(&line) {
                let _ = found.send(listener);
            }
            lines.lock().unwrap().push(line);
        }
    });
    let mut process = Process {
        child,
        listeners: HashMap::new(),
        log,
        reader: Some(reader),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wanted.iter().all(|w| process.listeners.contains_key(*w)) {
        match listening.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((name, addr)) => {
                process.listeners.insert(name, addr);
            }
            Err(_) => panic!(
                "memgate {args:?} did not report {wanted:?}:\n{}",
                process.log()
            ),
        }
    }
    process
}

/// `listening listener="tls" addr=127.0.0.1:40123` → ("tls", address).
fn listener_line(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let name = line.split("listener=").nth(1)?.split_whitespace().next()?;
    let addr = line.rsplit("addr=").next()?.trim().parse().ok()?;
    Some((name.trim_matches('"').to_string(), addr))
}

/// Run a command to completion off the async runtime; panic with its output on failure.
pub async fn run_ok(mut cmd: Command) -> String {
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

/// Send `signal` (HUP, TERM, STOP, CONT) to `pid` through the `kill` command
/// (the crate forbids unsafe code, so no libc::kill).
pub fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The resident set size of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The resident set size of this test process, in KiB.
pub fn own_rss_kib() -> u64 {
    rss_kib(std::process::id())
}

/// The CPU time process `pid` has used, in clock ticks (utime + stime, all
/// threads), as benches/compare.sh reads it.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
