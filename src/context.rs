//! What tokengate knows about a client connection and one of its requests, worked out
//! once and read by every step that needs it (SPEC §5).
//!
//! A [`ConnInfo`] is built at accept: the peer, whether it is a trusted proxy, and the
//! values forwarding headers will carry. A [`RequestContext`] is built when a request
//! arrives, before any header is touched: its id and, behind a trusted proxy, the
//! client address the proxy reports. The header rules themselves are
//! [`crate::proxy::HeaderPolicy`]'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::header::{HeaderMap, HeaderValue};

use crate::connection::Place;
use crate::proxy::{UpstreamLink, X_FORWARDED_FOR, X_REQUEST_ID};

/// The most of a client `X-Request-Id` kept; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// One client connection, as accepted.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer, its IPv4-mapped IPv6 address spelled as IPv4.
    pub peer: SocketAddr,
    /// Whether the peer is in `forward.trusted_proxies`: its forwarding headers are kept.
    pub trusted: bool,
    /// `X-Forwarded-Proto` for requests on this connection.
    pub proto: HeaderValue,
    /// The peer's address as an `X-Forwarded-For` entry.
    pub peer_ip: HeaderValue,
    /// The subject of the client certificate the TLS handshake verified (mTLS).
    pub client_subject: Option<String>,
}

impl ConnInfo {
    /// A connection from `peer`, over TLS when `secure`.
    pub fn new(peer: SocketAddr, trusted: bool, secure: bool) -> ConnInfo {
        let ip = peer.ip().to_canonical();
        ConnInfo {
            peer: SocketAddr::new(ip, peer.port()),
            trusted,
            proto: HeaderValue::from_static(if secure { "https" } else { "http" }),
            // An IP address is always a valid header value.
            peer_ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            client_subject: None,
        }
    }

    /// The same connection, with the subject of its verified client certificate.
    pub fn with_client_subject(mut self, subject: Option<String>) -> ConnInfo {
        self.client_subject = subject;
        self
    }
}

/// A client connection of the public listener: what is known about it, and the
/// backend connection its requests reuse.
#[derive(Debug)]
pub struct ClientConn {
    /// The connection, as accepted.
    pub info: ConnInfo,
    /// The backend connection kept for this client connection.
    pub upstream: UpstreamLink,
    /// Its place in the listener's connection budget, held as long as the connection
    /// or the tunnel it became ([`crate::tunnel`]) lives.
    _place: Arc<Place>,
}

impl ClientConn {
    /// A connection accepted as `info`, holding `place` in its listener's budget.
    pub fn new(info: ConnInfo, upstream: UpstreamLink, place: Arc<Place>) -> ClientConn {
        ClientConn {
            info,
            upstream,
            _place: place,
        }
    }
}

/// One request: its id and where it comes from.
#[derive(Debug)]
pub struct RequestContext<'c> {
    /// The connection it arrived on.
    pub conn: &'c ConnInfo,
    /// `X-Request-Id`: the client's when short and printable, else a new one; sent to the
    /// backend and echoed in the response.
    pub id: HeaderValue,
    /// The `X-Forwarded-For` a trusted proxy sent, as received.
    forwarded_for: Option<HeaderValue>,
}

impl<'c> RequestContext<'c> {
    /// Reads what the context needs from the request head, before any header rule runs.
    pub fn new(conn: &'c ConnInfo, headers: &HeaderMap) -> RequestContext<'c> {
        RequestContext {
            conn,
            id: request_id(headers),
            forwarded_for: if conn.trusted {
                headers.get(X_FORWARDED_FOR).cloned()
            } else {
                None
            },
        }
    }

    /// The client's address as recorded with a session: the last hop a trusted proxy
    /// reports, else the peer.
    pub fn client_addr(&self) -> String {
        self.forwarded_for
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|last| !last.is_empty())
            .map_or_else(|| self.conn.peer.ip().to_string(), str::to_string)
    }
}

/// The request id to use: the client's when it is short and printable, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// A new request id: 32 hex digits, a random prefix drawn once per process followed by
/// a counter, so ids are unique across replicas and restarts without a random draw per
/// request. Ids name requests in logs; they are not secrets.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 32];
    hex_into(&mut digits[..16], prefix);
    hex_into(&mut digits[16..], n);
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn hex_into(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 60 - 4 * i;
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::test_headers as headers;

    #[test]
    fn request_ids_are_kept_when_sane() {
        assert_eq!(
            request_id(&headers(&[("x-request-id", "abc-123")])),
            "abc-123"
        );
        let long = "x".repeat(200);
        assert_ne!(
            request_id(&headers(&[("x-request-id", &long)])),
            long.as_str()
        );
        assert_ne!(request_id(&headers(&[("x-request-id", "a b")])), "a b");
    }

    #[test]
    fn new_request_ids_are_hex_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
        assert_eq!(
            a.as_bytes()[..16],
            b.as_bytes()[..16],
            "one prefix per process"
        );
    }

    #[test]
    fn a_mapped_ipv4_peer_is_spelled_as_ipv4() {
        let conn = ConnInfo::new("[::ffff:192.0.2.7]:5000".parse().unwrap(), false, false);
        assert_eq!(conn.peer_ip, "192.0.2.7");
        assert_eq!(conn.peer.to_string(), "192.0.2.7:5000");
    }

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_names_one() {
        let peer: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.4")]);
        let untrusted = ConnInfo::new(peer, false, false);
        assert_eq!(
            RequestContext::new(&untrusted, &h).client_addr(),
            "10.1.2.3"
        );
        let trusted = ConnInfo::new(peer, true, false);
        assert_eq!(
            RequestContext::new(&trusted, &h).client_addr(),
            "198.51.100.4"
        );
        assert_eq!(
            RequestContext::new(&trusted, &HeaderMap::new()).client_addr(),
            "10.1.2.3"
        );
    }
}
