//! The real HTTP backend behind tokengate: it records every request it receives (so a
//! test can prove that a refusal never reached it) and issues tokens on its login
//! routes like an unmodified backend would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::tokens::{claims, mint, token_of_type};

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
}

impl Seen {
    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>").to_string())
            .collect()
    }
}

/// A function that signs a token for a user (how the backend issues tokens).
pub type Minter = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A real HTTP backend that records what reaches it.
///
/// Routes: `POST /login` (token in JSON `access_token`), `POST /login-header` (token in
/// `X-Access-Token`), `POST /login-cookie` (token in `Set-Cookie: access_token`),
/// `POST /login-fail` (401 with a token in the body), `/slow` (answers after 3 s), `/sleep/{ms}`,
/// `/stream/{n}` (n bytes), `/big-login` (2 MiB JSON with a token at the end), a
/// WebSocket echo on every path ending in `/ws`, anything else: 200 with a JSON echo of
/// the request's body length and hash.
/// The login routes read the user from a JSON body `{"user": ...}` (default `alice`).
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    /// A backend issuing HS256 tokens with [`SECRET`].
    pub async fn start() -> Backend {
        Backend::start_with(Arc::new(|user: &str| mint(&claims(user)))).await
    }

    /// A backend issuing tokens with the given minter.
    pub async fn start_with(minter: Minter) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let log = seen.clone();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let accepted_count = connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                accepted_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let log = log.clone();
                let minter = minter.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| backend_route(log.clone(), minter.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            seen,
            connections,
            _stop: stop,
        }
    }

    /// Asserts that the backend received nothing since it had seen `before` requests
    /// (how every refusal test proves that nothing was forwarded).
    pub fn assert_untouched(&self, before: usize) {
        self.assert_untouched_because(before, "a refusal");
    }

    /// [`Backend::assert_untouched`], naming what should not have reached it.
    pub fn assert_untouched_because(&self, before: usize, why: &str) {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            before,
            "{why}: the backend was reached: {:?}",
            &seen[before.min(seen.len())..]
        );
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend saw no request")
    }
}

async fn backend_route(
    log: Arc<Mutex<Vec<Seen>>>,
    minter: Minter,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path().ends_with("/ws") || req.uri().path() == "/ws-unoffered" {
        return Ok(websocket(&log, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    log.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len: bytes.len(),
        body_sha256: hex::encode(Sha256::digest(&bytes)),
    });
    let user = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("user").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "alice".into());
    let path = parts.uri.path().to_string();
    let mut response = Response::new(Full::new(Bytes::new()));
    match path.as_str() {
        "/login" => {
            let token = minter(&user);
            *response.body_mut() = Full::new(Bytes::from(
                json!({"access_token": token, "token_type": "Bearer"}).to_string(),
            ));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
                .headers_mut()
                .insert("x-backend-header", "kept".parse().unwrap());
        }
        // A simplejwt-shaped pair: login issues access + refresh; refresh rotates both.
        // Like an unmodified backend, it knows nothing of tokengate's revocations.
        // `/api/token/refresh-keep/` hands the presented refresh token back (no rotation).
        "/api/token/" | "/api/token/refresh/" | "/api/token/refresh-keep/" => {
            let user = if path == "/api/token/" {
                Some(user)
            } else {
                presented_refresh_user(&parts.headers, &bytes)
            };
            match user {
                Some(user) => {
                    let refresh = if path == "/api/token/refresh-keep/" {
                        serde_json::from_slice::<Value>(&bytes).unwrap_or_default()["refresh"]
                            .clone()
                    } else {
                        json!(mint(&token_of_type(&user, "refresh", 86_400)))
                    };
                    let body = json!({
                        "access": mint(&token_of_type(&user, "access", 300)),
                        "refresh": refresh,
                    });
                    *response.body_mut() = Full::new(Bytes::from(body.to_string()));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                }
                None => *response.status_mut() = StatusCode::UNAUTHORIZED,
            }
        }
        "/login-header" => {
            response
                .headers_mut()
                .insert("x-access-token", minter(&user).parse().unwrap());
        }
        "/login-cookie" => {
            let cookie = format!(
                "access_token={}; Path=/; HttpOnly; SameSite=Lax",
                minter(&user)
            );
            response
                .headers_mut()
                .insert("set-cookie", cookie.parse().unwrap());
        }
        "/login-fail" => {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            *response.body_mut() = Full::new(Bytes::from(
                json!({"access_token": minter(&user)}).to_string(),
            ));
        }
        "/big-login" => {
            let token = minter(&user);
            let padding = "x".repeat(2 * 1024 * 1024);
            *response.body_mut() = Full::new(Bytes::from(
                json!({"padding": padding, "access_token": token}).to_string(),
            ));
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        p if p.starts_with("/sleep/") => {
            let ms: u64 = p["/sleep/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        p if p.starts_with("/stream/") => {
            let n: usize = p["/stream/".len()..].parse().unwrap_or(0);
            *response.body_mut() = Full::new(Bytes::from(vec![b'z'; n]));
        }
        _ => {
            let echo = json!({"body_len": bytes.len(), "body_sha256": hex::encode(Sha256::digest(&bytes))});
            *response.body_mut() = Full::new(Bytes::from(echo.to_string()));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            // Hop-by-hop headers that must not reach the client.
            response
                .headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            response
                .headers_mut()
                .insert("proxy-connection", "keep-alive".parse().unwrap());
            response
                .headers_mut()
                .insert("x-backend-private", "named".parse().unwrap());
            response
                .headers_mut()
                .insert("connection", "x-backend-private".parse().unwrap());
        }
    }
    Ok(response)
}

/// A WebSocket endpoint (RFC 6455): records the handshake like any request, answers it
/// with a 101 and echoes every message until the client goes. `/ws-unoffered` switches
/// to a protocol nobody asked for, as a broken backend would. A request that is not a
/// handshake gets 426.
fn websocket(log: &Mutex<Vec<Seen>>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

    log.lock().unwrap().push(Seen {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        body_len: 0,
        body_sha256: String::new(),
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return response;
    };
    let protocol = if req.uri().path() == "/ws-unoffered" {
        "something-else"
    } else {
        "websocket"
    };
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("connection", "upgrade".parse().unwrap());
    headers.insert("upgrade", protocol.parse().unwrap());
    headers.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    response
}

/// The user of the refresh token a refresh request presents (JSON `refresh`, or the
/// form field), read without verifying: the backend trusts its own tokens.
fn presented_refresh_user(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = if form {
        String::from_utf8_lossy(body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("refresh=").map(String::from))?
    } else {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get("refresh")?
            .as_str()?
            .to_string()
    };
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
        .ok()?
        .claims;
    (claims.get("token_type")? == "refresh").then(|| claims["sub"].as_str().map(String::from))?
}
