//! The backend client: HTTP/1.1 connections to `upstream.url`, with connect and
//! response-head timeouts.
//!
//! A backend connection stays with the client connection that used it last (its
//! [`UpstreamLink`]), so a kept-alive client reuses one backend connection with no
//! shared lock on the way. A client connection without a usable one takes one from a
//! bounded stack of idle connections (filled when client connections end, or when an
//! HTTP/2 client runs requests side by side), or opens a new one. A request that a
//! reused connection could not send (the backend had closed it) is sent again on
//! another; one that may have reached the backend is not. An upgrade request gets a
//! connection of its own ([`Upstream::upgrade`]), which a 101 turns into a tunnel.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST, UPGRADE};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::headers::strip_hop_by_hop;
use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::transport::TlsError;

/// Idle backend connections kept beyond those held by client connections.
const MAX_IDLE: usize = 256;
/// An idle connection unused this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How forwarding to the backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The connection was refused or could not be made (502).
    #[error("the backend could not be reached")]
    Connect,
    /// The response head did not arrive in time (504).
    #[error("the backend did not answer in time")]
    Timeout,
    /// The backend broke the exchange (502).
    #[error("the backend failed")]
    Protocol,
}

impl UpstreamError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
        }
    }
}

/// The backend, shared by every client connection.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

struct Shared {
    /// Host and port to connect to (an IPv6 literal without brackets).
    host: String,
    port: u16,
    /// For an https backend: the TLS client and the name its certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `Host` for a request that carries none (an HTTP/1.0 client's).
    host_header: HeaderValue,
    connect_timeout: Duration,
    timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The backend connection a client connection keeps between its requests. When the
/// client connection ends, it goes to the idle stack.
pub struct UpstreamLink {
    shared: Arc<Shared>,
    kept: Mutex<Option<SendRequest<Body>>>,
}

impl std::fmt::Debug for UpstreamLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLink").finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Upstream {
    /// Builds the client (for https, reading `upstream.ca_file`); no connection is made
    /// until the first request.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, TlsError> {
        // `Config` guarantees an authority.
        let authority = config.url.authority();
        let host = authority.map_or("127.0.0.1", |a| a.host());
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = config.url.scheme_str() == Some("https");
        let port = config
            .url
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = config
                .tls_server_name
                .as_deref()
                .unwrap_or(&host)
                .to_string();
            let key = if config.tls_server_name.is_some() {
                "upstream.tls_server_name"
            } else {
                "upstream.url"
            };
            let name = ServerName::try_from(name.clone()).map_err(|e| TlsError {
                key,
                problem: format!("{name:?} is not a TLS server name ({e})"),
            })?;
            let connector = crate::transport::client(config.ca_file.as_deref(), b"http/1.1")
                .map_err(|problem| TlsError {
                    key: "upstream.ca_file",
                    problem,
                })?;
            Some((connector, name))
        } else {
            None
        };
        let host_header = authority
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        Ok(Upstream {
            shared: Arc::new(Shared {
                host,
                port,
                tls,
                host_header,
                connect_timeout: config.connect_timeout,
                timeout: config.timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A link for a new client connection.
    pub fn link(&self) -> UpstreamLink {
        UpstreamLink {
            shared: self.shared.clone(),
            kept: Mutex::new(None),
        }
    }

    /// Sends a prepared request to the backend on `link`'s connection, or another: only
    /// its path and query are kept from the client's URI, so an absolute-form URI
    /// cannot redirect it elsewhere. Hop-by-hop headers of the response are dropped.
    pub async fn send(
        &self,
        link: &UpstreamLink,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        self.shared.target(&mut request);
        let response = tokio::time::timeout(self.shared.timeout, self.exchange(link, request))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let mut response = response.map(body::boxed);
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }

    /// Sends an upgrade request (it carries `Connection: upgrade` and `Upgrade`) on a
    /// backend connection of its own, never a kept or idle one: after a 101 that
    /// connection becomes the tunnel's. Returns the response, hop-by-hop headers
    /// dropped, and on a 101 the protocol the backend switched to, with the backend's
    /// side of the tunnel.
    pub async fn upgrade(
        &self,
        mut request: Request<Body>,
    ) -> Result<(Response<Body>, Option<(HeaderValue, OnUpgrade)>), UpstreamError> {
        self.shared.target(&mut request);
        let exchange = async {
            let mut sender = self.shared.connect(true).await?;
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(request).await,
                Err(e) => Err(e),
            };
            sent.map_err(|e| {
                tracing::debug!(error = %e, "upstream upgrade request failed");
                UpstreamError::Protocol
            })
        };
        let mut response = tokio::time::timeout(self.shared.timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let switched = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let protocol = response.headers().get(UPGRADE).cloned().ok_or_else(|| {
                tracing::warn!("the backend answered 101 without an Upgrade header");
                UpstreamError::Protocol
            })?;
            Some((protocol, hyper::upgrade::on(&mut response)))
        } else {
            None
        };
        let mut response = response.map(body::boxed);
        strip_hop_by_hop(response.headers_mut());
        Ok((response, switched))
    }

    /// One request, one response head, on a kept, idle or new connection.
    async fn exchange(
        &self,
        link: &UpstreamLink,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        loop {
            let (mut sender, reused) = match link.take().or_else(|| self.shared.take_idle()) {
                Some(sender) => (sender, true),
                // Boxed: a new connection (TCP, maybe TLS) is rare and its future large.
                None => (Box::pin(self.shared.connect(false)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    link.keep(sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the backend had closed this connection. Each retry
                    // spends one reused connection; a new one is not retried.
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        tracing::debug!(error = %e.into_error(), "upstream request failed");
                        return Err(UpstreamError::Protocol);
                    }
                },
            }
        }
    }
}

impl Shared {
    /// Makes a request fit for the backend: only its path and query are kept from the
    /// client's URI, it goes as HTTP/1.1, and with a `Host` (an HTTP/1.0 client's
    /// request may have none).
    fn target(&self, request: &mut Request<Body>) {
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path_and_query);
        *request.version_mut() = Version::HTTP_11;
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.host_header.clone());
        }
    }

    /// Opens a backend connection (TCP, and TLS for an https backend, both within the
    /// connect timeout) and starts its task; one that may be `upgraded` hands its
    /// stream over after a 101.
    async fn connect(&self, upgraded: bool) -> Result<SendRequest<Body>, UpstreamError> {
        match tokio::time::timeout(self.connect_timeout, self.open(upgraded)).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!("connecting to the backend timed out");
                Err(UpstreamError::Connect)
            }
        }
    }

    async fn open(&self, upgraded: bool) -> Result<SendRequest<Body>, UpstreamError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "cannot connect to the backend");
                UpstreamError::Connect
            })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => start(stream, upgraded).await,
            Some((connector, name)) => {
                // Never a fall-back to clear text: a certificate that does not verify is a
                // 502, and the cause is logged (SPEC §12).
                let stream = connector.connect(name.clone(), stream).await.map_err(|e| {
                    tracing::warn!(error = %e, "backend TLS handshake failed");
                    UpstreamError::Connect
                })?;
                start(stream, upgraded).await
            }
        }
    }

    /// The most recently idled connection that can take a request; closed and expired
    /// ones are dropped on the way.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT);
        let ready = idle.iter().rposition(|i| i.sender.is_ready())?;
        Some(idle.swap_remove(ready).sender)
    }

    /// Keeps a connection for later, if there is room.
    fn put_idle(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl UpstreamLink {
    /// The kept connection, if it can take a request now; one still busy (with a
    /// request running beside this one) stays kept.
    fn take(&self) -> Option<SendRequest<Body>> {
        let mut kept = lock(&self.kept);
        match kept.take() {
            Some(sender) if sender.is_ready() => Some(sender),
            Some(sender) if !sender.is_closed() => {
                *kept = Some(sender);
                None
            }
            _ => None,
        }
    }

    /// Keeps the connection just used; if another is kept already, this one idles.
    fn keep(&self, sender: SendRequest<Body>) {
        let mut kept = lock(&self.kept);
        if kept.is_none() {
            *kept = Some(sender);
        } else {
            drop(kept);
            self.shared.put_idle(sender);
        }
    }
}

impl Drop for UpstreamLink {
    fn drop(&mut self) {
        if let Some(sender) = lock(&self.kept).take() {
            self.shared.put_idle(sender);
        }
    }
}

/// The HTTP/1.1 handshake on an open backend stream, and the connection's task; with
/// `upgrades`, the task hands the stream to the tunnel after a 101.
async fn start<T>(stream: T, upgrades: bool) -> Result<SendRequest<Body>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "backend handshake failed");
            UpstreamError::Connect
        })?;
    tokio::spawn(async move {
        let ended = if upgrades {
            connection.with_upgrades().await
        } else {
            connection.await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}
