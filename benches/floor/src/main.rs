//! The CPU floor for `benches/store_cpu.sh --floor`.
//!
//! `memgate-floor epoll|uring ADDR` answers the two commands memcaslap sends
//! (`get` of one key and `set`) and `stats` (`get_hits`, which the script
//! checks), from a plain `HashMap`, on one thread. It checks nothing, keeps
//! no statistics but hits, has no expiry, limits or eviction: it is the
//! least work a server can do per request, so what it spends is almost all
//! the kernel's. It tells whether a CPU goal is within any server's reach on
//! this machine, not a server to use.
//!
//! - `epoll`: level-triggered, one read per readiness and one blocking
//!   write per batch of replies, the same system calls per request as
//!   memcached and the node (benches/STORE.md).
//! - `uring`: io_uring with deferred task work, one `io_uring_enter` per
//!   turn for every connection's receive and send.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

mod store;
mod uring;

use store::Store;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: memgate-floor epoll|uring ADDR");
        std::process::exit(64);
    };
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("memgate-floor: bind {addr}: {e}");
        std::process::exit(1);
    });
    let result = match mode.as_str() {
        "epoll" => run_epoll(listener),
        "uring" => uring::run(listener),
        _ => {
            eprintln!("usage: memgate-floor epoll|uring ADDR");
            std::process::exit(64);
        }
    };
    if let Err(e) = result {
        eprintln!("memgate-floor: {e}");
        std::process::exit(1);
    }
}

/// One connection's input and the replies not yet written.
struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            input: Vec::with_capacity(16 * 1024),
            output: Vec::with_capacity(16 * 1024),
        })
    }
}

fn epoll_add(epoll: RawFd, fd: RawFd) -> std::io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: both descriptors are open, and `event` outlives the call.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sockets stay blocking: epoll says a read will not block, and a write
/// blocks only while a client does not read, which memcaslap always does.
fn run_epoll(listener: TcpListener) -> std::io::Result<()> {
    // SAFETY: epoll_create1 takes no pointers; the result is checked.
    let epoll = unsafe { libc::epoll_create1(0) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error());
    }
    epoll_add(epoll, listener.as_raw_fd())?;
    let mut store = Store::default();
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: `events` has room for the 64 events asked for.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 64, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events[..n as usize] {
            let fd = event.u64 as RawFd;
            if fd == listener.as_raw_fd() {
                // A failed accept, or a client gone before it was set up,
                // costs that client only.
                if let Ok(conn) = listener.accept().and_then(|(s, _)| Conn::new(s)) {
                    epoll_add(epoll, conn.stream.as_raw_fd())?;
                    conns.insert(conn.stream.as_raw_fd(), conn);
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&fd) else {
                continue;
            };
            let open = match conn.stream.read(&mut chunk) {
                Ok(0) | Err(_) => false,
                Ok(read) => {
                    conn.input.extend_from_slice(&chunk[..read]);
                    let open = store.answer(&mut conn.input, &mut conn.output);
                    let written = conn.stream.write_all(&conn.output).is_ok();
                    conn.output.clear();
                    open && written
                }
            };
            if !open {
                // Closing the descriptor takes it out of the epoll set.
                conns.remove(&fd);
            }
        }
    }
}
