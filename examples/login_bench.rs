//! Login load for `benches/login.sh`: clients that connect per request, as a
//! PHP app does. Each round connects (from `--source` if given, any 127.x
//! address on Linux), logs in, sends one command, checks both replies and
//! closes.
//!
//! ```text
//! login_bench ADDR USER PASSWORD [--source IP] [--connections N] [--seconds S]
//!             [--form sasl|ascii] [--tls CA_PEM | --tls-full CA_PEM] [--node-pid PID]
//!             [--persistent 1] [--interval MS] [--guess 1]
//! ```
//!
//! - `--form sasl`: binary SASL PLAIN, then a binary GET; `ascii`: the text
//!   `set USER 0 0 N` login, then a text `get`. Before the run one round
//!   stores the key the command reads, so a round counts as `ok` only when
//!   the login was accepted *and* the command answered with that value.
//! - `--tls CA_PEM`: every round does a TLS handshake first (server name
//!   `localhost`, trusting only that CA), resuming the first round's
//!   session; `--tls-full CA_PEM`: a full handshake every round.
//! - `--node-pid PID`: the node's CPU (utime + stime of every thread, from
//!   `/proc/PID/stat`) over the run, per round and as a share of one core.
//! - `--persistent 1` (plain listener only): each connection stays open and
//!   logs in again and again, reconnecting only when the node closes it: a
//!   flood over a few connections, as fast as the node answers.
//! - `--interval MS`: each connection starts a round every MS milliseconds
//!   (a paced client) instead of back to back.
//! - `--guess 1`: every round sends a password never sent before
//!   (`PASSWORD-<n>`): a guesser, where the default repeats one password
//!   (an app with an old one), which the node refuses unhashed after once.
//!
//! Each round's time (connect to the command's reply, or to the refusal)
//! is kept: the line ends with its p50, p99 and max in milliseconds.
//!
//! All rounds run as tasks of one current-thread runtime: pinned to a core
//! with `taskset`, the generator is one thread, and its rounds share that
//! thread's epoll waits. Prints one line of `name=value` fields; a refused
//! login is still a round (the wrong-password flood is this with a wrong
//! password), `bad` counts accepted logins whose command failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// The key each round reads, and the value the set-up round stores.
const KEY: &[u8] = b"login_bench";
const VALUE: &[u8] = b"logged-in-and-served";

/// How a round logs in and what it sends after.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Sasl,
    Ascii,
}

/// One binary request: 24-byte header, extras, key and value.
fn binary(opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, opcode];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// The bytes of one round, built once.
struct Script {
    form: Form,
    login: Vec<u8>,
    command: Vec<u8>,
    /// The set-up round's command: store `VALUE` under `KEY`.
    store: Vec<u8>,
}

impl Script {
    fn new(form: Form, user: &str, password: &str) -> Script {
        match form {
            Form::Sasl => Script {
                form,
                login: binary(
                    0x21,
                    &[],
                    b"PLAIN",
                    format!("\0{user}\0{password}").as_bytes(),
                ),
                command: binary(0x00, &[], KEY, &[]),
                store: binary(0x01, &[0; 8], KEY, VALUE),
            },
            Form::Ascii => {
                let mut store = format!("set login_bench 0 0 {}\r\n", VALUE.len()).into_bytes();
                store.extend_from_slice(VALUE);
                store.extend_from_slice(b"\r\n");
                Script {
                    form,
                    login: format!("set {user} 0 0 {}\r\n{password}\r\n", password.len())
                        .into_bytes(),
                    command: b"get login_bench\r\n".to_vec(),
                    store,
                }
            }
        }
    }
}

/// Read one binary response into `buf`: (status, value).
async fn read_binary<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.resize(24, 0);
    s.read_exact(&mut buf[..24]).await?;
    let body = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let status = u16::from_be_bytes([buf[6], buf[7]]);
    let skip = usize::from(buf[4]) + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    buf.resize(24 + body, 0);
    s.read_exact(&mut buf[24..]).await?;
    buf.drain(..24 + skip.min(body));
    Ok(status)
}

/// Read text into `buf` until it ends with one of `ends` (each a whole
/// reply's last line), or with any error line.
async fn read_text<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    ends: &[&[u8]],
) -> std::io::Result<()> {
    buf.clear();
    loop {
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let error = buf.ends_with(b"\r\n") && buf.windows(5).any(|w| w == b"ERROR");
        if error || ends.iter().any(|e| buf.ends_with(e)) {
            return Ok(());
        }
    }
}

/// How a round ended.
enum Outcome {
    /// Logged in, and the command was answered with the stored value.
    Ok,
    /// The login was refused.
    Refused,
    /// Logged in, but the command's reply was wrong.
    Bad,
}

/// Log in on `s`, then send `command` and check its reply.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    script: &Script,
    command: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    s.write_all(&script.login).await?;
    match script.form {
        Form::Sasl => {
            if read_binary(s, buf).await? != 0 || buf != b"Authenticated" {
                return Ok(Outcome::Refused);
            }
            s.write_all(command).await?;
            let status = read_binary(s, buf).await?;
            let served = status == 0 && (command[1] != 0x00 || buf == VALUE);
            Ok(if served { Outcome::Ok } else { Outcome::Bad })
        }
        Form::Ascii => {
            read_text(s, buf, &[b"STORED\r\n"]).await?;
            if buf != b"STORED\r\n" {
                return Ok(Outcome::Refused);
            }
            s.write_all(command).await?;
            read_text(s, buf, &[b"END\r\n", b"STORED\r\n"]).await?;
            let mut hit = format!("VALUE login_bench 0 {}\r\n", VALUE.len()).into_bytes();
            hit.extend_from_slice(VALUE);
            hit.extend_from_slice(b"\r\nEND\r\n");
            let served = buf == &hit || (command == script.store && buf == b"STORED\r\n");
            Ok(if served { Outcome::Ok } else { Outcome::Bad })
        }
    }
}

/// Where and how rounds connect.
struct Target {
    addr: SocketAddr,
    source: Option<SocketAddr>,
    tls: Option<TlsConnector>,
}

/// A new plain connection to the target.
async fn connect(target: &Target) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Without a source, connect() picks the port as a client's does, and
    // may reuse one whose last connection is in TIME_WAIT (loopback's
    // net.ipv4.tcp_tw_reuse). A bind picks it alone, and after some
    // 28,000 rounds from one address every port is waiting: fine for the
    // slow flood, not for thousands of logins a second.
    if let Some(source) = target.source {
        socket.bind(source)?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One round: connect, log in, one command, close.
async fn round(
    target: &Target,
    script: &Script,
    command: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    let stream = connect(target).await?;
    match &target.tls {
        None => {
            let mut stream = stream;
            session(&mut stream, script, command, buf).await
        }
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("a DNS name");
            let mut stream = connector.connect(name, stream).await?;
            let outcome = session(&mut stream, script, command, buf).await;
            // A TLS client says goodbye before it closes.
            let _ = stream.shutdown().await;
            outcome
        }
    }
}

/// CPU seconds (utime + stime, all threads) of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the node's stat");
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // /proc counts in USER_HZ, which Linux fixes at 100 on every platform.
    ticks as f64 / 100.0
}

/// A TLS client trusting only the CA in file `ca_pem`; `resume` keeps
/// rustls's default session cache, so later rounds resume the first one's
/// session (as a client with a session cache does), otherwise each round
/// is a full handshake (as a process per request is).
fn tls_connector(ca_pem: &str, resume: bool) -> TlsConnector {
    let pem = std::fs::read(ca_pem).expect("the CA's PEM");
    let config = memgate::tls::client_config(&pem, None).expect("a client config for that CA");
    let mut config = Arc::unwrap_or_clone(config);
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    TlsConnector::from(Arc::new(config))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "login_bench ADDR USER PASSWORD [--source IP] [--connections N] [--seconds S] \
                 [--form sasl|ascii] [--tls CA_PEM | --tls-full CA_PEM] [--node-pid PID] \
                 [--persistent 1] [--interval MS] [--guess 1]";
    let [addr, user, password, flags @ ..] = args.as_slice() else {
        eprintln!("usage: {usage}");
        std::process::exit(64);
    };
    let (mut source, mut connections, mut seconds) = (None, 64usize, 10u64);
    let (mut form, mut tls, mut node_pid) = (Form::Sasl, None, None);
    let (mut persistent, mut interval, mut guess) = (false, None, false);
    for pair in flags.chunks(2) {
        match pair {
            [flag, value] if flag == "--source" => {
                source = Some(format!("{value}:0").parse().expect("--source is an IPv4"))
            }
            [flag, value] if flag == "--connections" => connections = value.parse().expect("N"),
            [flag, value] if flag == "--seconds" => seconds = value.parse().expect("S"),
            [flag, value] if flag == "--form" && value == "sasl" => form = Form::Sasl,
            [flag, value] if flag == "--form" && value == "ascii" => form = Form::Ascii,
            [flag, value] if flag == "--tls" => tls = Some(tls_connector(value, true)),
            [flag, value] if flag == "--tls-full" => tls = Some(tls_connector(value, false)),
            [flag, value] if flag == "--node-pid" => node_pid = Some(value.parse().expect("PID")),
            [flag, value] if flag == "--persistent" => persistent = value == "1",
            [flag, value] if flag == "--guess" => guess = value == "1",
            [flag, value] if flag == "--interval" => {
                interval = Some(Duration::from_millis(value.parse().expect("MS")))
            }
            _ => {
                eprintln!("usage: {usage}");
                std::process::exit(64);
            }
        }
    }
    if persistent && tls.is_some() {
        eprintln!("--persistent takes the plain listener only");
        std::process::exit(64);
    }
    let target = Arc::new(Target {
        addr: addr.parse().expect("ADDR is host:port"),
        source,
        tls,
    });
    let script = Arc::new(Script::new(form, user, password));
    // The set-up round: a wrong password (the flood) fails here, harmlessly.
    let mut buf = Vec::new();
    let stored = matches!(
        round(&target, &script, &script.store, &mut buf).await,
        Ok(Outcome::Ok)
    );

    let cpu0 = node_pid.map(cpu_seconds);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let guesses = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..connections {
        let (target, mut script) = (Arc::clone(&target), Arc::clone(&script));
        let (guesses, user, password) = (Arc::clone(&guesses), user.clone(), password.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts = [0u64; 4];
            let mut times = Vec::new();
            let mut buf = Vec::with_capacity(256);
            let mut open: Option<TcpStream> = None;
            let mut next = Instant::now();
            while Instant::now() < end {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                if guess {
                    let n = guesses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    script = Arc::new(Script::new(form, &user, &format!("{password}-{n}")));
                }
                let began = Instant::now();
                let outcome = if persistent {
                    persistent_round(&target, &script, &mut open, &mut buf).await
                } else {
                    round(&target, &script, &script.command, &mut buf).await
                };
                let i = match outcome {
                    Ok(Outcome::Ok) => 0,
                    Ok(Outcome::Refused) => 1,
                    Ok(Outcome::Bad) => 2,
                    Err(_) => 3,
                };
                counts[i] += 1;
                if i < 3 {
                    times.push(began.elapsed());
                }
            }
            (counts, times)
        }));
    }
    let mut counts = [0u64; 4];
    let mut times = Vec::new();
    for task in tasks {
        let (task, task_times) = task.await.expect("a round task");
        for (total, n) in counts.iter_mut().zip(task) {
            *total += n;
        }
        times.extend(task_times);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let [ok, refused, bad, errors] = counts;
    let rounds = ok + refused + bad;
    let mut line = format!(
        "rounds={rounds} ok={ok} refused={refused} bad={bad} errors={errors} \
         per_second={:.0} ok_per_second={:.0} stored={stored}",
        rounds as f64 / elapsed,
        ok as f64 / elapsed,
    );
    if let (Some(pid), Some(cpu0)) = (node_pid, cpu0) {
        let cpu = cpu_seconds(pid) - cpu0;
        line += &format!(" node_cpu={:.1}%", 100.0 * cpu / elapsed);
        if rounds > 0 {
            line += &format!(" node_us_per_round={:.1}", 1e6 * cpu / rounds as f64);
        }
    }
    if !times.is_empty() {
        times.sort_unstable();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        line += &format!(
            " p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0))
        );
    }
    println!("{line}");
}

/// One login (and, if accepted, the command) on the connection kept in
/// `open`, made first if there is none; a connection the node closed, or
/// that failed, is dropped, and the next round makes another.
async fn persistent_round(
    target: &Target,
    script: &Script,
    open: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Outcome> {
    let mut stream = match open.take() {
        Some(stream) => stream,
        None => connect(target).await?,
    };
    let outcome = session(&mut stream, script, &script.command, buf).await?;
    *open = Some(stream);
    Ok(outcome)
}
