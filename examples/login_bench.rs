//! Login load for `benches/login.sh`: clients that connect per request, as a
//! PHP app does. Each round connects (from `--source`, any 127.x address on
//! Linux), logs in with SASL PLAIN, gets one key, and closes.
//!
//! ```text
//! login_bench ADDR USER PASSWORD [--source IP] [--connections N] [--seconds S]
//! ```
//! Prints `rounds=… ok=… refused=… per_second=…`. A refused login is still a
//! round: the wrong-password flood is this with a wrong password.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// One binary request: 24-byte header, then key and value (no extras).
fn request(opcode: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, opcode];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&((key.len() + value.len()) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// Read one binary response; its status.
async fn status(stream: &mut tokio::net::TcpStream) -> std::io::Result<u16> {
    let mut header = [0u8; 24];
    stream.read_exact(&mut header).await?;
    let body = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
    let mut rest = vec![0u8; body];
    stream.read_exact(&mut rest).await?;
    Ok(u16::from_be_bytes([header[6], header[7]]))
}

/// One round; whether the login succeeded.
async fn round(addr: SocketAddr, source: SocketAddr, auth: &[u8]) -> std::io::Result<bool> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source)?;
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(auth).await?;
    if status(&mut stream).await? != 0 {
        return Ok(false);
    }
    stream.write_all(&request(0x00, b"k", b"")).await?;
    status(&mut stream).await?;
    Ok(true)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "login_bench ADDR USER PASSWORD [--source IP] [--connections N] [--seconds S]";
    let [addr, user, password, flags @ ..] = args.as_slice() else {
        eprintln!("usage: {usage}");
        std::process::exit(64);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is host:port");
    let (mut source, mut connections, mut seconds) = ("127.0.0.1".to_owned(), 4usize, 10u64);
    for pair in flags.chunks(2) {
        match pair {
            [flag, value] if flag == "--source" => source = value.clone(),
            [flag, value] if flag == "--connections" => connections = value.parse().expect("N"),
            [flag, value] if flag == "--seconds" => seconds = value.parse().expect("S"),
            _ => {
                eprintln!("usage: {usage}");
                std::process::exit(64);
            }
        }
    }
    let source: SocketAddr = format!("{source}:0").parse().expect("--source is an IPv4");
    let auth = Arc::new(request(
        0x21,
        b"PLAIN",
        format!("\0{user}\0{password}").as_bytes(),
    ));
    let (ok, refused, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (auth, ok, refused, errors) = (
            Arc::clone(&auth),
            Arc::clone(&ok),
            Arc::clone(&refused),
            Arc::clone(&errors),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let counter = match round(addr, source, &auth).await {
                    Ok(true) => &ok,
                    Ok(false) => &refused,
                    Err(_) => &errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (ok, refused, errors) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    println!(
        "rounds={} ok={ok} refused={refused} errors={errors} per_second={:.0}",
        ok + refused,
        (ok + refused) as f64 / elapsed
    );
}
