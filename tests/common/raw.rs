//! Raw-socket clients, for what an HTTP client library would normalise or refuse:
//! hand-written HTTP/1.1 (or HTTP/2) bytes on a TCP connection.

//!
//! - [`Conn`] reads whole responses ([`Answer`]) one at a time off one connection
//!   (keep-alive, pipelining); [`ask`] is one request on a fresh connection.
//! - [`raw`] and [`read_until_close`] take whatever the server sends until it closes.
//! - [`wait_for_close`] measures how long the server keeps a stalled client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gate::Gate;

/// Writes raw bytes to the proxy and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (out, _) = read_until_close(&mut stream, wait).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the server closes the connection (or a read fails), at most `wait`:
/// the bytes, and whether it closed.
pub async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// How long a raw exchange may take before the test gives up on it.
pub const WAIT: Duration = Duration::from_secs(5);

/// One HTTP/1.1 response read off a socket: status, headers (names lower-cased, in
/// order, duplicates kept) and body (de-chunked).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }

    /// Asserts the JSON refusal shape of SPEC §5.
    pub fn assert_refusal(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        let body: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("refusal body is not JSON: {self:?}"));
        assert!(
            body["error"].is_string() && body["error_description"].is_string(),
            "{body}"
        );
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a chunked body at the start of `buf`: the payload and the bytes it took, or
/// `None` while incomplete.
pub fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // No trailers in anything this suite reads.
            return (buf.len() >= at + 2).then_some((out, at + 2));
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        out.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// A raw client connection that can read several responses off one socket.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// A connection to the public listener of `gate`.
    pub async fn open(gate: &Gate) -> Conn {
        Conn::connect(gate.addr).await
    }

    /// A connection to any address.
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads exactly one response (framed by `Content-Length`, chunked, bodiless by
    /// status, or delimited by the close), leaving whatever follows in the buffer.
    pub async fn response(&mut self) -> Answer {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut closed = false;
        loop {
            if let Some(head_end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default().to_string();
                let status: u16 = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v);
                let start = head_end + 4;
                let rest = &self.buf[start..];
                let framed: Option<(Vec<u8>, usize)> = if let Some(len) = get("content-length") {
                    let len: usize = len.parse().unwrap();
                    (rest.len() >= len).then(|| (rest[..len].to_vec(), len))
                } else if get("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
                {
                    dechunk(rest)
                } else if status < 200 || status == 204 || status == 304 {
                    Some((Vec::new(), 0))
                } else if closed {
                    Some((rest.to_vec(), rest.len()))
                } else {
                    None
                };
                if let Some((body, used)) = framed {
                    self.buf.drain(..start + used);
                    return Answer {
                        status,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                }
            }
            assert!(
                !closed,
                "the connection closed before a whole response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no whole response in time: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                })
                .unwrap_or(0);
            if n == 0 {
                closed = true;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sends one raw request on a fresh connection and reads its response.
pub async fn ask(gate: &Gate, request: &str) -> Answer {
    let mut conn = Conn::open(gate).await;
    conn.send(request.as_bytes()).await;
    conn.response().await
}

/// Reads until the gate closes the connection, at most `limit`; `Some(elapsed)` when
/// it closed. `drip` sends one more header line every second meanwhile.
pub async fn wait_for_close(
    stream: &mut TcpStream,
    limit: Duration,
    drip: bool,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut i = 0;
    while started.elapsed() < limit {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) if drip => {
                i += 1;
                if stream
                    .write_all(format!("X-Drip-{i}: v\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return Some(started.elapsed());
                }
            }
            Err(_) => {}
        }
    }
    None
}

/// A closed port on loopback: bound, then released (nothing listens on it).
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
