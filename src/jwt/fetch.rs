//! Fetching a JWK set or an OpenID discovery document: one GET over HTTPS (rustls,
//! webpki roots or `jwt.jwks_ca_file`) or, on a loopback address only, plain HTTP.
//!
//! Deliberately small and strict: the whole exchange (connect, handshake, answer, body)
//! is bounded by one timeout, the body by [`MAX_DOCUMENT_BYTES`], only a `200` is a
//! document (a redirect is an error: the configured URL is the one trusted), and the
//! `Cache-Control: max-age` of the answer is reported for the refresh schedule. One
//! connection per fetch: fetches are minutes apart.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Largest document accepted (SPEC §11: a JWK set over 1 MiB is refused).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A fetched document.
#[derive(Debug)]
pub struct Fetched {
    /// The body, at most [`MAX_DOCUMENT_BYTES`].
    pub body: Bytes,
    /// `Cache-Control: max-age`, when the answer carries one.
    pub max_age: Option<Duration>,
}

/// Fetches documents with one TLS configuration and one timeout.
#[derive(Clone)]
pub struct Fetcher {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Fetcher {
    /// A fetcher trusting `ca_file`'s certificates (PEM), or the webpki roots when none.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Fetcher, String> {
        Ok(Fetcher {
            tls: crate::transport::client(ca_file, b"http/1.1")?,
            timeout,
        })
    }

    /// GETs `url`; every failure is one line naming the cause.
    pub async fn get(&self, url: &Uri) -> Result<Fetched, String> {
        match tokio::time::timeout(self.timeout, self.exchange(url)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no complete answer within {} s",
                self.timeout.as_secs_f64()
            )),
        }
    }

    async fn exchange(&self, url: &Uri) -> Result<Fetched, String> {
        let host = url.host().ok_or("the URL has no host")?;
        let https = url.scheme_str() == Some("https");
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        // An IPv6 literal comes bracketed in the URI.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
        let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tokengate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request: {e}"))?;
        let response = if https {
            let name = ServerName::try_from(bare.to_string())
                .map_err(|e| format!("{host} is not a TLS server name ({e})"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
            send(TokioIo::new(tls), request).await?
        } else {
            send(TokioIo::new(tcp), request).await?
        };
        let status = response.status();
        if status != StatusCode::OK {
            let hint = if status.is_redirection() {
                " (redirects are not followed: configure the final URL)"
            } else {
                ""
            };
            return Err(format!("answered {status}{hint}"));
        }
        let max_age = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the document is larger than {MAX_DOCUMENT_BYTES} bytes")
                } else {
                    format!("reading the answer: {e}")
                }
            })?
            .to_bytes();
        Ok(Fetched { body, max_age })
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))
}

/// `max-age` of a `Cache-Control` value; `no-store` and `no-cache` count as none.
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            age = n.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("max-age=600, no-cache"), None);
        assert_eq!(max_age("private"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
