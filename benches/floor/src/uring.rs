//! The floor over io_uring: each connection has one receive in flight, and
//! at most one send. All of a turn's submissions go in one
//! `io_uring_enter`, which also waits for the next completion; deferred task
//! work runs completions only there, on this thread.

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use crate::store::Store;
use crate::Conn;

const ACCEPT: u64 = u64::MAX;
const SEND: u64 = 1 << 32;
const RECV_SIZE: usize = 16 * 1024;

/// A connection, its receive buffer (the kernel's while a receive is in
/// flight) and its send state.
struct Slot {
    conn: Conn,
    recv: Box<[u8]>,
    /// The bytes a send in flight reads, from `sent` on; the connection's
    /// `output` gathers replies meanwhile.
    sending: Vec<u8>,
    sent: usize,
    send_in_flight: bool,
    receiving: bool,
    closing: bool,
}

pub fn run(listener: TcpListener) -> std::io::Result<()> {
    let mut ring: IoUring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)?;
    let listen_fd = types::Fd(listener.as_raw_fd());
    let accept = || {
        opcode::Accept::new(listen_fd, std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(ACCEPT)
    };
    let mut store = Store::default();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut pending: Vec<squeue::Entry> = vec![accept()];
    let mut done: Vec<(u64, i32)> = Vec::new();
    loop {
        for entry in pending.drain(..) {
            // SAFETY: every buffer an entry points into lives in `slots`
            // until its completion is reaped (a closing slot is freed only
            // when nothing of it is in flight).
            while unsafe { ring.submission().push(&entry) }.is_err() {
                ring.submit()?;
            }
        }
        ring.submit_and_wait(1)?;
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (data, result) in done.drain(..) {
            if data == ACCEPT {
                pending.push(accept());
                if result < 0 {
                    continue;
                }
                // A client gone before it was set up is just dropped.
                let Ok(conn) = Conn::new(stream_from_fd(result)) else {
                    continue;
                };
                let index = slots
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(slots.len());
                let slot = Slot {
                    conn,
                    recv: vec![0; RECV_SIZE].into_boxed_slice(),
                    sending: Vec::with_capacity(RECV_SIZE),
                    sent: 0,
                    send_in_flight: false,
                    receiving: false,
                    closing: false,
                };
                if index == slots.len() {
                    slots.push(Some(slot));
                } else {
                    slots[index] = Some(slot);
                }
                if let Some(slot) = slots[index].as_mut() {
                    pending.push(receive(slot, index));
                }
                continue;
            }
            let index = (data & !SEND) as usize;
            let Some(slot) = slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if data & SEND != 0 {
                slot.send_in_flight = false;
                if result < 0 {
                    slot.closing = true;
                    slot.sending.clear();
                    slot.conn.output.clear();
                } else {
                    slot.sent += result as usize;
                }
            } else {
                slot.receiving = false;
                let read = usize::try_from(result).unwrap_or(0);
                if read == 0 {
                    slot.closing = true;
                } else {
                    slot.conn.input.extend_from_slice(&slot.recv[..read]);
                    if store.answer(&mut slot.conn.input, &mut slot.conn.output) {
                        pending.push(receive(slot, index));
                    } else {
                        slot.closing = true;
                    }
                }
            }
            if !slot.send_in_flight {
                if slot.sent == slot.sending.len() {
                    slot.sending.clear();
                    slot.sent = 0;
                    std::mem::swap(&mut slot.sending, &mut slot.conn.output);
                }
                if !slot.sending.is_empty() {
                    pending.push(send(slot, index));
                }
            }
            if slot.closing && !slot.receiving && !slot.send_in_flight {
                slots[index] = None;
            }
        }
    }
}

fn receive(slot: &mut Slot, index: usize) -> squeue::Entry {
    slot.receiving = true;
    let fd = types::Fd(slot.conn.stream.as_raw_fd());
    opcode::Recv::new(fd, slot.recv.as_mut_ptr(), slot.recv.len() as u32)
        .build()
        .user_data(index as u64)
}

fn send(slot: &mut Slot, index: usize) -> squeue::Entry {
    slot.send_in_flight = true;
    let fd = types::Fd(slot.conn.stream.as_raw_fd());
    let rest = &slot.sending[slot.sent..];
    opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
        .build()
        .user_data(SEND | index as u64)
}

/// Wraps a descriptor that io_uring's accept returned.
fn stream_from_fd(fd: RawFd) -> TcpStream {
    // SAFETY: the kernel just created `fd` for us, and nothing else owns it.
    unsafe { TcpStream::from_raw_fd(fd) }
}
