//! Forwarding and header hygiene: what goes to the backend and what comes back.
//!
//! This module owns the upstream client (pooled, with connect and response-head
//! timeouts) and every header rule of SPEC §5 step 2 and the forwarding paragraph:
//! client copies of injected headers are removed in every spelling, hop-by-hop headers
//! (RFC 9110 §7.6.1) and those named in `Connection` are dropped both ways, and
//! `X-Forwarded-*` are ours unless the peer is a trusted proxy. Deciding *whether* to
//! forward is [`crate::gate`]'s job.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::config::{ForwardConfig, UpstreamConfig};

/// `X-Request-Id`: kept from the client when sane, else generated; echoed back.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`): they describe one connection and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client headers that would let a request name a different path or method than the
/// one tokengate judged (IIS `X-Original-URL`, Symfony `X-Rewrite-URL`, method
/// overrides): always removed.
const OVERRIDE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Forwarding headers a client may not set unless it is a trusted proxy.
const FORWARDING_HEADERS: &[&str] = &["forwarded", "x-real-ip"];

/// The most of a client `X-Request-Id` kept; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// Lower-cases a header name and spells `_` as `-`, the form in which two names that
/// some server would treat as one compare equal.
pub fn normalize_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

/// The header rules that follow from `[forward]`, computed once at start.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// Normalized names of every header tokengate injects.
    injected: HashSet<String>,
    forward: ForwardConfig,
}

impl HeaderPolicy {
    /// Builds the policy from `[forward]`.
    pub fn new(forward: &ForwardConfig) -> HeaderPolicy {
        let mut injected = HashSet::new();
        injected.insert(normalize_header_name(forward.user_header.as_str()));
        for (_, header) in &forward.claim_headers {
            injected.insert(normalize_header_name(header.as_str()));
        }
        HeaderPolicy {
            injected,
            forward: forward.clone(),
        }
    }

    /// Whether `ip` is a trusted proxy whose forwarding headers are kept.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.forward
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// Step 2 of the pipeline: removes from a client request every header that could
    /// carry a forged identity, a hop-by-hop meaning, or a path/method override.
    ///
    /// Headers named in `Connection` go first, so that `Connection: X-User-Id` cannot
    /// later remove the header we inject. Runs on every route, public ones included.
    /// `Authorization` stays until [`HeaderPolicy::finish_for_backend`]: it is needed to
    /// authenticate.
    pub fn strip_client_headers(&self, headers: &mut HeaderMap, peer_trusted: bool) {
        strip_connection_headers(headers);
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            // Compared in the normalized spelling: CGI-style servers read `X_Real_IP`
            // as `X-Real-IP`, so every rule holds for both.
            let n = normalize_header_name(name.as_str());
            let forged_identity = self.injected.contains(&n);
            let forwarding = !peer_trusted
                && (FORWARDING_HEADERS.contains(&n.as_str()) || n.starts_with("x-forwarded-"));
            if forged_identity || forwarding || OVERRIDE_HEADERS.contains(&n.as_str()) {
                if forged_identity {
                    tracing::debug!(
                        header = name.as_str(),
                        "removed a client copy of an identity header"
                    );
                }
                doomed.push(name.clone());
            }
        }
        for name in doomed {
            headers.remove(&name);
        }
    }

    /// The last touch before a request leaves for the backend: drops `Authorization`
    /// unless `forward.pass_authorization` keeps it (after authentication has read it).
    pub fn finish_for_backend(&self, headers: &mut HeaderMap) {
        if !self.forward.pass_authorization {
            headers.remove(AUTHORIZATION);
        }
    }

    /// Sets `X-Forwarded-For/Proto/Host` for the backend: ours, or appended to when the
    /// peer is a trusted proxy.
    pub fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        peer: SocketAddr,
        peer_trusted: bool,
        authority: Option<&Authority>,
    ) {
        let ip = peer.ip().to_canonical().to_string();
        let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) if peer_trusted && !prior.is_empty() => format!("{prior}, {ip}"),
            _ => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if !(peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !(peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
            let host = headers
                .get(HOST)
                .cloned()
                .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
            match host {
                Some(h) => {
                    headers.insert(X_FORWARDED_HOST, h);
                }
                None => {
                    headers.remove(X_FORWARDED_HOST);
                }
            }
        }
    }

    /// The identity headers of a verified token (the user header and the configured
    /// claim headers), computed once per verdict and set on every request it admits.
    pub fn identity_headers(
        &self,
        user: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(1 + self.forward.claim_headers.len());
        // The user claim was checked to be a valid header value by the verifier.
        if let Ok(v) = HeaderValue::from_str(user) {
            out.push((self.forward.user_header.clone(), v));
        }
        for (claim, header) in &self.forward.claim_headers {
            let text = match claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                Some(v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => {
                    v.to_string()
                }
                Some(serde_json::Value::Null) | None => continue,
            };
            match HeaderValue::from_str(&text) {
                Ok(v) if !text.chars().any(char::is_control) => {
                    out.push((header.clone(), v));
                }
                _ => tracing::debug!(
                    claim = claim.as_str(),
                    "claim is not a valid header value; not forwarded"
                ),
            }
        }
        out
    }

    /// Sets identity headers computed by [`HeaderPolicy::identity_headers`]. The client's
    /// copies were removed in step 2, so each is the only one of its name.
    pub fn inject_identity(&self, headers: &mut HeaderMap, identity: &[(HeaderName, HeaderValue)]) {
        for (name, value) in identity {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Removes the `Connection` header, every header it names, and every hop-by-hop header
/// (RFC 9110 §7.6.1). Used on requests and responses alike.
pub fn strip_connection_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
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
    let id = hex::encode(rand::random::<[u8; 16]>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

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

/// The backend: a pooled HTTP/1.1 client aimed at `upstream.url`.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
}

impl Upstream {
    /// Builds the client; no connection is made until the first request.
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstream {
            client,
            scheme: config.url.scheme().cloned().unwrap_or(Scheme::HTTP),
            // `Config` guarantees an authority.
            authority: config
                .url
                .authority()
                .cloned()
                .unwrap_or_else(|| Authority::from_static("127.0.0.1")),
            timeout: config.timeout,
        }
    }

    /// Sends a prepared request to the backend: only its path and query are kept from
    /// the client's URI, so an absolute-form URI cannot redirect it elsewhere.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| UpstreamError::Protocol)?;
        *request.version_mut() = Version::HTTP_11;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) if e.is_connect() => return Err(UpstreamError::Connect),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream request failed");
                return Err(UpstreamError::Protocol);
            }
            Ok(Ok(response)) => response,
        };
        let mut response = response.map(body::boxed);
        strip_connection_headers(response.headers_mut());
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy(trusted: &[&str]) -> HeaderPolicy {
        let raw = crate::config::raw::Forward {
            claim_headers: BTreeMap::from([("email".to_string(), "X-User-Email".to_string())]),
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[forward]\nclaim_headers = {{ email = \"X-User-Email\" }}\ntrusted_proxies = {:?}",
            raw.trusted_proxies
        );
        let config = crate::config::Config::from_toml(&text, std::path::Path::new(".")).unwrap();
        HeaderPolicy::new(&config.forward)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn identity_headers_are_stripped_in_every_spelling() {
        let mut h = headers(&[
            ("x-user-id", "admin"),
            ("X_User_Id", "admin"),
            ("x-user-email", "a@b"),
            ("x_user_email", "a@b"),
            ("x-other", "kept"),
        ]);
        policy(&[]).strip_client_headers(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn connection_named_headers_go_first() {
        let mut h = headers(&[
            ("connection", "close, X-Keep, authorization"),
            ("x-keep", "1"),
            ("authorization", "Bearer x"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
        ]);
        policy(&[]).strip_client_headers(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
        let p = policy(&["10.0.0.0/8"]);
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("host", "app.example"),
        ]);
        p.strip_client_headers(&mut h, false);
        p.set_forwarded(&mut h, peer, false, None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));

        let proxy: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert!(p.is_trusted(proxy.ip()));
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        p.strip_client_headers(&mut h, true);
        p.set_forwarded(&mut h, proxy, true, None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

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
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn claims_become_headers_when_they_are_clean() {
        let p = policy(&[]);
        let mut h = HeaderMap::new();
        let claims = serde_json::json!({"email": "a@example.com"});
        p.inject_identity(
            &mut h,
            &p.identity_headers("alice", claims.as_object().unwrap()),
        );
        assert_eq!(h["x-user-id"], "alice");
        assert_eq!(h["x-user-email"], "a@example.com");
        let mut h = HeaderMap::new();
        let claims = serde_json::json!({"email": "a\r\nb"});
        p.inject_identity(
            &mut h,
            &p.identity_headers("alice", claims.as_object().unwrap()),
        );
        assert!(!h.contains_key("x-user-email"));
    }
}
