//! The write side of an upstream connection: requests encoded and waiting to
//! be handed to TLS, and the progress of handing them over.
//!
//! It is written by whoever gets there first (docs/ARCHITECTURE.md, "flat
//! combining"): a client's session that finds the outbox idle writes its own
//! request at once, without waking any task; only a write that cannot finish
//! at once (the socket is full) or a request too large for one TLS record is
//! left to the connection's writer task, which polls with a real waker.
//!
//! The memcached `-Z` record rules (module docs of `proxy::upstream`) are
//! kept here: requests go to TLS in pieces of whole requests of at most one
//! record each, and a larger request is a piece of its own after which
//! nothing is written until its reply has come back.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

/// The most plaintext one TLS record carries (rustls's default fragment size,
/// and memcached's read buffer). A request larger than this is written alone,
/// last, and nothing follows it until its reply has come back.
pub(super) const RECORD: usize = 16 * 1024;

/// The stream's write half, type-erased so that one connection type serves
/// TLS and test streams alike.
pub(super) type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// One encoded request in the outbox.
struct Queued {
    len: usize,
    /// Set for a request larger than a record: its reply, once read, wakes
    /// the writer, which sends nothing behind it until then.
    hold: Option<Arc<Notify>>,
}

/// The piece being handed to TLS: whole requests at the front of `bytes`.
struct Piece {
    len: usize,
    written: usize,
    hold: Option<Arc<Notify>>,
}

/// What [`Outbox::drive`] got done.
pub(super) enum Driven {
    /// Everything queued is written and flushed.
    Empty,
    /// A request larger than a record is written and `held` is set: nothing
    /// more goes out until its reply fires it and `held` is cleared.
    Hold,
}

pub(super) struct Outbox {
    wr: Writer,
    /// Encoded requests not yet accepted by the writer, oldest first; the
    /// piece in progress (if any) is at the front.
    bytes: BytesMut,
    queued: VecDeque<Queued>,
    piece: Option<Piece>,
    /// The last opaque handed out: requests are numbered in the order they
    /// enter the outbox, which is the order they are written in.
    pub(super) opaque: u32,
    /// The writer task owns progress (a write could not finish at once, or a
    /// large request is held). While it does, sessions only append. When it
    /// is false, the outbox is empty.
    pub(super) busy: bool,
    /// A large request written and not yet answered: the writer task waits
    /// on it, then clears it.
    pub(super) held: Option<Arc<Notify>>,
}

impl Outbox {
    pub(super) fn new(wr: Writer) -> Outbox {
        Outbox {
            wr,
            bytes: BytesMut::new(),
            queued: VecDeque::new(),
            piece: None,
            opaque: 0,
            busy: false,
            held: None,
        }
    }

    /// The buffer to encode the next request into (appended at its end).
    pub(super) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.bytes
    }

    /// The bytes appended since `start` (a length of `buffer()` taken before
    /// encoding) are one request. A request too large for one record comes
    /// back with the notify that its reply must fire to let the writer go on.
    pub(super) fn push(&mut self, start: usize) -> Option<Arc<Notify>> {
        let len = self.bytes.len() - start;
        let hold = (len > RECORD).then(|| Arc::new(Notify::new()));
        self.queued.push_back(Queued {
            len,
            hold: hold.clone(),
        });
        hold
    }

    /// Hand queued requests to the writer, piece by piece, flushing each
    /// piece so that TLS closes its record. Stops at a held request.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Driven>> {
        loop {
            if self.held.is_some() {
                return Poll::Ready(Ok(Driven::Hold));
            }
            if let Some(piece) = &mut self.piece {
                while piece.written < piece.len {
                    let rest = &self.bytes[piece.written..piece.len];
                    match self.wr.as_mut().poll_write(cx, rest) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                        }
                        Poll::Ready(Ok(n)) => piece.written += n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                match self.wr.as_mut().poll_flush(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                let done = self.piece.take();
                if let Some(done) = done {
                    self.bytes.advance(done.len);
                    if done.hold.is_some() {
                        self.held = done.hold;
                        continue;
                    }
                }
            }
            let Some(first) = self.queued.pop_front() else {
                // Reuse the buffer from its start rather than let it creep.
                self.bytes.clear();
                return Poll::Ready(Ok(Driven::Empty));
            };
            let mut len = first.len;
            if first.hold.is_none() {
                while let Some(next) = self.queued.front() {
                    if next.hold.is_some() || len + next.len > RECORD {
                        break;
                    }
                    len += next.len;
                    self.queued.pop_front();
                }
            }
            self.piece = Some(Piece {
                len,
                written: 0,
                hold: first.hold,
            });
        }
    }

    /// Drop the bytes from `start` on: a request that failed to encode, never
    /// pushed.
    pub(super) fn truncate(&mut self, start: usize) {
        self.bytes.truncate(start);
    }

    /// Close the write side (TLS sends its close_notify).
    pub(super) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wr.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::task::Waker;

    /// A writer that records every write call and accepts `budget` bytes
    /// before it reports itself full.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        budget: Arc<Mutex<usize>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut budget = self.budget.lock().unwrap();
            if *budget == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(*budget);
            *budget -= n;
            self.writes.lock().unwrap().push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn outbox(budget: usize) -> (Outbox, Recorder) {
        let rec = Recorder::default();
        *rec.budget.lock().unwrap() = budget;
        (Outbox::new(Box::pin(rec.clone())), rec)
    }

    fn queue(outbox: &mut Outbox, len: usize) -> bool {
        let start = outbox.buffer().len();
        outbox.buffer().extend(std::iter::repeat_n(b'x', len));
        outbox.push(start).is_some()
    }

    fn drive(outbox: &mut Outbox) -> Poll<io::Result<Driven>> {
        outbox.drive(&mut Context::from_waker(Waker::noop()))
    }

    /// The pieces handed to the writer for requests of these lengths, driving
    /// on past each held one.
    fn pieces(lens: &[usize]) -> Vec<usize> {
        let (mut out, rec) = outbox(usize::MAX);
        for &len in lens {
            queue(&mut out, len);
        }
        while let Poll::Ready(Ok(Driven::Hold)) = drive(&mut out) {
            out.held = None;
        }
        let writes = rec.writes.lock().unwrap();
        writes.iter().map(Vec::len).collect()
    }

    #[test]
    fn pieces_cut_at_request_ends() {
        assert_eq!(pieces(&[]), Vec::<usize>::new());
        assert_eq!(pieces(&[10, 10]), [20]);
        assert_eq!(pieces(&[RECORD]), [RECORD]);
        assert_eq!(pieces(&[10_000, 10_000, 5_000]), [10_000, 15_000]);
        assert_eq!(pieces(&[100, 3 * RECORD]), [100, 3 * RECORD]);
    }

    #[test]
    fn small_requests_share_a_piece_up_to_one_record() {
        let (mut out, rec) = outbox(usize::MAX);
        for _ in 0..3 {
            assert!(!queue(&mut out, 6_000));
        }
        assert!(matches!(drive(&mut out), Poll::Ready(Ok(Driven::Empty))));
        let lens: Vec<usize> = rec.writes.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(lens, [12_000, 6_000], "no piece may exceed one record");
    }

    #[test]
    fn a_large_request_goes_alone_and_holds_what_follows() {
        let (mut out, rec) = outbox(usize::MAX);
        queue(&mut out, 100);
        assert!(queue(&mut out, 40_000));
        queue(&mut out, 100);
        assert!(matches!(drive(&mut out), Poll::Ready(Ok(Driven::Hold))));
        let lens: Vec<usize> = rec.writes.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(
            lens,
            [100, 40_000],
            "nothing is written behind a held request"
        );
        assert!(matches!(drive(&mut out), Poll::Ready(Ok(Driven::Hold))));
        out.held = None;
        assert!(matches!(drive(&mut out), Poll::Ready(Ok(Driven::Empty))));
        assert_eq!(rec.writes.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_full_writer_resumes_where_it_stopped() {
        let (mut out, rec) = outbox(5);
        queue(&mut out, 12);
        assert!(drive(&mut out).is_pending());
        *rec.budget.lock().unwrap() = usize::MAX;
        assert!(matches!(drive(&mut out), Poll::Ready(Ok(Driven::Empty))));
        let total: usize = rec.writes.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(total, 12, "every byte written exactly once");
        assert!(out.bytes.is_empty());
    }
}
