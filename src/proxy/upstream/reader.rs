//! The reader task: parses the node's replies and completes each request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

use super::codec::Codec;
use super::error::lost_error;
use super::inflight::{fail_all, InFlight};
use super::UpstreamError;

pub(super) async fn reader<R>(
    mut rd: R,
    inflight: Arc<Mutex<VecDeque<InFlight>>>,
    alive: Arc<AtomicBool>,
    failed: Arc<Notify>,
    node: String,
    codec: Codec,
) where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let error = loop {
        if !alive.load(Ordering::Relaxed) {
            break lost_error();
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                break UpstreamError::Io {
                    node: node.clone(),
                    reason: "closed by node".into(),
                }
            }
            Ok(_) => {}
            Err(e) => {
                break UpstreamError::Io {
                    node: node.clone(),
                    reason: e.to_string(),
                }
            }
        }
        if let Err(e) = codec.drain(&mut buf, &inflight, &node) {
            break e;
        }
        if buf.is_empty() && buf.capacity() > 256 * 1024 {
            buf = BytesMut::with_capacity(16 * 1024);
        }
    };
    alive.store(false, Ordering::Relaxed);
    failed.notify_one();
    fail_all(&inflight, error);
}
