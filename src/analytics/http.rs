//! The HTTP/1.1 client for the nodes' admin APIs, on hyper: one request per
//! connection (`Connection: close`), optionally over TLS (the nodes'
//! `--admin-ca` mutual TLS). Enough for JSON over loopback or a private
//! network; no redirects, no pooling.

use std::error::Error as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderMap, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Replies larger than this are refused.
const MAX_RESPONSE: usize = 16 << 20;

/// A reply: status code, headers and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A socket error keeps its kind; anything else hyper refuses is a
/// malformed reply.
fn from_hyper(e: hyper::Error) -> io::Error {
    let kind = e
        .source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map_or(io::ErrorKind::InvalidData, io::Error::kind);
    io::Error::new(kind, e)
}

fn from_body(e: Box<dyn std::error::Error + Send + Sync>) -> io::Error {
    if e.is::<LengthLimitError>() {
        return bad("reply too large");
    }
    match e.downcast::<hyper::Error>() {
        Ok(e) => from_hyper(*e),
        Err(e) => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

/// Send one request to `addr` (`host:port`), over TLS with `tls` (the
/// certificate must name the host), and read the whole reply, all within
/// `timeout`. A JSON `Content-Type` is sent with a body unless `headers`
/// name one.
pub async fn request(
    addr: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Response> {
    let request = build(addr, method, path, headers, body.unwrap_or_default())?;
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let Some(config) = tls else {
            return exchange(tcp, request).await;
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let name = crate::tls::server_name(host)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await?;
        exchange(stream, request).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))?
}

fn build(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr)
        .header(CONNECTION, "close");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    // An empty POST says its length too: some servers answer 411 without one.
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        builder = builder.header(CONTENT_LENGTH, body.len());
    }
    let typed = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE.as_str()));
    if !body.is_empty() && !typed {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Send `request` on `stream` and read the reply to its end.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> io::Result<Response> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(from_hyper)?;
    let reply = async {
        let (head, body) = sender
            .send_request(request)
            .await
            .map_err(from_hyper)?
            .into_parts();
        let body = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(from_body)?
            .to_bytes();
        Ok(Response {
            status: head.status.as_u16(),
            headers: head.headers,
            body: body.into(),
        })
    };
    // `conn` does the socket I/O that `reply` waits on, so both are polled
    // here rather than spawned: a timeout then drops the socket with them.
    tokio::pin!(conn, reply);
    let mut open = true;
    loop {
        tokio::select! {
            done = &mut reply => return done,
            closed = &mut conn, if open => {
                open = false;
                closed.map_err(from_hyper)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answer one request on loopback with `raw` (None: never answer) and
    /// fetch it with [`request`].
    async fn fetch(raw: Option<Vec<u8>>, timeout: Duration) -> io::Result<Response> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Read the whole request so closing does not reset the reply.
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            let Some(raw) = raw else {
                return std::future::pending().await;
            };
            let _ = s.write_all(&raw).await;
            let _ = s.shutdown().await;
        });
        request(&addr, None, "GET", "/", &[], None, timeout).await
    }

    async fn parse(raw: &[u8]) -> io::Result<Response> {
        fetch(Some(raw.to_vec()), Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn parses_length_and_chunked_replies() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}")
            .await
            .is_err());
        assert!(parse(b"garbage").await.is_err());
    }

    #[tokio::test]
    async fn refuses_large_replies_and_times_out() {
        let mut big = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_RESPONSE + 1
        )
        .into_bytes();
        big.resize(big.len() + MAX_RESPONSE + 1, b'x');
        let e = parse(&big).await.unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (io::ErrorKind::InvalidData, "reply too large")
        );
        let e = fetch(None, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
