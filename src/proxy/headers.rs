//! Header hygiene: every header rule of SPEC §5 step 2 and the forwarding paragraph, as
//! two calls.
//!
//! [`HeaderPolicy::sanitize`] runs on every inbound request before anything reads it:
//! client copies of injected headers go in every spelling, hop-by-hop headers (RFC 9110
//! §7.6.1) and those named in `Connection` go, path and method overrides go, and
//! forwarding headers go unless the peer is a trusted proxy.
//! [`HeaderPolicy::prepare_upstream`] runs as the request leaves for the backend: it sets
//! `X-Request-Id`, `X-Forwarded-*`, `Host` and the verified identity, and drops
//! `Authorization` unless configured to keep it. Responses lose their hop-by-hop headers
//! in [`strip_hop_by_hop`].
//!
//! Names are compared in their normalized spelling (lower case, `_` as `-`) without
//! building a string per header: the rules are normalized once, at start.

use bytes::{BufMut, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, COOKIE, HOST, UPGRADE,
};
use http::Request;

use crate::config::ForwardConfig;
use crate::context::RequestContext;

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

/// Forwarding headers a client may not set unless it is a trusted proxy; with every
/// `X-Forwarded-*` name.
const FORWARDING_HEADERS: &[&str] = &["forwarded", "x-real-ip"];
const FORWARDED_PREFIX: &[u8] = b"x-forwarded-";

/// Lower-cases a header name and spells `_` as `-`, the form in which two names that
/// some server would treat as one compare equal.
pub fn normalize_header_name(name: &str) -> String {
    name.bytes().map(|b| char::from(normalized(b))).collect()
}

fn normalized(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Whether `name`, normalized, starts with the already normalized `rule`.
fn normalized_starts_with(name: &[u8], rule: &[u8]) -> bool {
    name.len() >= rule.len() && name.iter().zip(rule).all(|(&a, &b)| normalized(a) == b)
}

/// Framing headers hyper reads itself: kept as sent, but refused in an `_` spelling
/// (SPEC §10), as hop-by-hop names are.
const FRAMING_HEADERS: &[&str] = &["content-length", "host"];

/// A request header that spells a framing or hop-by-hop name with `_`
/// (`Transfer_Encoding`, `Content_Length`, ...): a backend that reads `_` as `-` would
/// frame the request differently than we did, so no cleaning of it is safe and the
/// request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisguisedFraming(pub HeaderName);

/// Why sanitizing removes a client header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strip {
    /// A header tokengate injects: a client copy would be a forged identity.
    Identity,
    /// Hop-by-hop.
    HopByHop,
    /// A path or method override.
    Override,
    /// A forwarding header from a peer that is not a trusted proxy.
    Forwarding,
    /// Not removed: a framing header, judged only for its spelling.
    Framing,
}

/// The header rules that follow from `[forward]`, computed once at start.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// Every exact-name rule, normalized.
    rules: Vec<(Box<[u8]>, Strip)>,
    /// The identity headers a verified token sets.
    user_header: HeaderName,
    claim_headers: Vec<(String, HeaderName)>,
    pass_authorization: bool,
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl HeaderPolicy {
    /// Builds the policy from `[forward]`.
    pub fn new(forward: &ForwardConfig) -> HeaderPolicy {
        let mut rules: Vec<(Box<[u8]>, Strip)> = Vec::new();
        let mut add = |name: &str, why: Strip| {
            let name = normalize_header_name(name).into_bytes().into_boxed_slice();
            if !rules.iter().any(|(n, _)| *n == name) {
                rules.push((name, why));
            }
        };
        add(forward.user_header.as_str(), Strip::Identity);
        for (_, header) in &forward.claim_headers {
            add(header.as_str(), Strip::Identity);
        }
        HOP_BY_HOP.iter().for_each(|n| add(n, Strip::HopByHop));
        OVERRIDE_HEADERS
            .iter()
            .for_each(|n| add(n, Strip::Override));
        FORWARDING_HEADERS
            .iter()
            .for_each(|n| add(n, Strip::Forwarding));
        FRAMING_HEADERS.iter().for_each(|n| add(n, Strip::Framing));
        HeaderPolicy {
            rules,
            user_header: forward.user_header.clone(),
            claim_headers: forward.claim_headers.clone(),
            pass_authorization: forward.pass_authorization,
            trusted_proxies: forward.trusted_proxies.clone(),
        }
    }

    /// Whether `ip` is a trusted proxy whose forwarding headers are kept.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Why a client header must go, if it must.
    fn strip_reason(&self, name: &HeaderName, peer_trusted: bool) -> Option<Strip> {
        let n = name.as_str().as_bytes();
        let exact = self.rules.iter().find(|(rule, why)| {
            rule.len() == n.len()
                && (*why != Strip::Forwarding || !peer_trusted)
                && normalized_starts_with(n, rule)
        });
        match exact {
            Some((_, why)) => Some(*why),
            None if !peer_trusted && normalized_starts_with(n, FORWARDED_PREFIX) => {
                Some(Strip::Forwarding)
            }
            None => None,
        }
    }

    /// Step 2 of the pipeline: removes from a client request every header that could
    /// carry a forged identity, a hop-by-hop meaning, a path or method override, or (from
    /// a peer that is not a trusted proxy) a forwarding claim; refuses the request when a
    /// framing or hop-by-hop name is spelled with `_`.
    ///
    /// Headers named in `Connection` are judged with the rest, so that `Connection:
    /// X-User-Id` cannot later remove the header we inject. Runs on every route, public
    /// ones included. `Authorization` stays until [`HeaderPolicy::prepare_upstream`]: it
    /// is needed to authenticate.
    pub fn sanitize(
        &self,
        headers: &mut HeaderMap,
        ctx: &RequestContext<'_>,
    ) -> Result<(), DisguisedFraming> {
        let mut doomed = connection_named(headers);
        for name in headers.keys() {
            // Compared in the normalized spelling: CGI-style servers read `X_Real_IP`
            // as `X-Real-IP`, so every rule holds for both.
            let Some(why) = self.strip_reason(name, ctx.conn.trusted) else {
                continue;
            };
            match why {
                Strip::HopByHop | Strip::Framing if name.as_str().contains('_') => {
                    return Err(DisguisedFraming(name.clone()));
                }
                Strip::Framing => continue,
                Strip::Identity => tracing::debug!(
                    header = name.as_str(),
                    "removed a client copy of an identity header"
                ),
                Strip::HopByHop | Strip::Override | Strip::Forwarding => {}
            }
            doomed.push(name.clone());
        }
        for name in doomed {
            headers.remove(&name);
        }
        Ok(())
    }

    /// The last touch before a request leaves for the backend (step 5): `X-Request-Id`,
    /// `X-Forwarded-For/Proto/Host` (ours, or extended when the peer is a trusted
    /// proxy), `Host` for an HTTP/2 request, the verified identity (`identity` is empty
    /// on public and capture routes), and `Authorization` dropped unless
    /// `forward.pass_authorization` keeps it.
    pub fn prepare_upstream<B>(
        &self,
        request: &mut Request<B>,
        ctx: &RequestContext<'_>,
        identity: &[(HeaderName, HeaderValue)],
    ) {
        // HTTP/2 carries the host in `:authority`; an HTTP/1.1 backend needs `Host`.
        let authority = match request.headers().contains_key(HOST) {
            true => None,
            false => request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let headers = request.headers_mut();
        let conn = ctx.conn;
        headers.insert(X_REQUEST_ID, ctx.id.clone());
        let xff = match headers.get(X_FORWARDED_FOR) {
            Some(prior) if conn.trusted && !prior.is_empty() => {
                let mut v = BytesMut::with_capacity(prior.len() + 2 + conn.peer_ip.len());
                v.put_slice(prior.as_bytes());
                v.put_slice(b", ");
                v.put_slice(conn.peer_ip.as_bytes());
                HeaderValue::from_maybe_shared(v.freeze()).ok()
            }
            _ => None,
        };
        headers.insert(X_FORWARDED_FOR, xff.unwrap_or_else(|| conn.peer_ip.clone()));
        if !(conn.trusted && headers.contains_key(X_FORWARDED_PROTO)) {
            headers.insert(X_FORWARDED_PROTO, conn.proto.clone());
        }
        if let Some(host) = authority {
            headers.insert(HOST, host);
        }
        if !(conn.trusted && headers.contains_key(X_FORWARDED_HOST)) {
            match headers.get(HOST).cloned() {
                Some(host) => headers.insert(X_FORWARDED_HOST, host),
                None => headers.remove(X_FORWARDED_HOST),
            };
        }
        join_cookies(headers);
        // The client's copies were removed by `sanitize`: each is the only one of its name.
        for (name, value) in identity {
            headers.insert(name.clone(), value.clone());
        }
        if !self.pass_authorization {
            headers.remove(AUTHORIZATION);
        }
    }

    /// The identity headers of a verified token (the user header and the configured
    /// claim headers), computed once per verdict and set on every request it admits.
    pub fn identity_headers(
        &self,
        user: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(1 + self.claim_headers.len());
        // The user claim was checked to be a valid header value by the verifier.
        if let Ok(v) = HeaderValue::from_str(user) {
            out.push((self.user_header.clone(), v));
        }
        for (claim, header) in &self.claim_headers {
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
}

/// Joins several `Cookie` fields into one, separated by `; ` (RFC 9113 §8.2.3): an
/// HTTP/2 client may split its cookies into fields, and an HTTP/1.1 backend may read
/// only the first `Cookie` line.
fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (fields.next(), fields.next()) else {
        return;
    };
    let mut joined = BytesMut::from(first.as_bytes());
    for field in headers.get_all(COOKIE).iter().skip(1) {
        joined.put_slice(b"; ");
        joined.put_slice(field.as_bytes());
    }
    // Made of valid header values and "; ".
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(COOKIE, value);
    }
}

/// The headers a `Connection` header names (RFC 9110 §7.6.1), to be removed with it.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Removes the `Connection` header, every header it names, and every hop-by-hop header
/// (RFC 9110 §7.6.1) from a backend response.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed = connection_named(headers);
    doomed.extend(
        headers
            .keys()
            .filter(|name| HOP_BY_HOP.contains(&name.as_str()))
            .cloned(),
    );
    for name in doomed {
        headers.remove(&name);
    }
}

/// The protocols a client asks to switch to (RFC 9110 §7.8), read before
/// [`HeaderPolicy::sanitize`] removes `Upgrade` and `Connection`: an HTTP/1.1 request
/// with one `Upgrade` field whose `Connection` names `upgrade`. `None`, and the request
/// is forwarded as a plain one, for:
/// - `h2c` among the protocols: HTTP/2 is spoken with prior knowledge only, never
///   switched to (SPEC §12);
/// - a `websocket` offer that is not an RFC 6455 §4.1 handshake (`GET`, one
///   `Sec-WebSocket-Key`, a `Sec-WebSocket-Version`);
/// - an `Upgrade` field that does not parse as a list of protocol tokens.
pub fn requested_upgrade<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != http::Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let mut fields = headers.get_all(UPGRADE).iter();
    let (Some(upgrade), None) = (fields.next(), fields.next()) else {
        return None;
    };
    let asked = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asked {
        return None;
    }
    let mut websocket = false;
    for protocol in protocols(upgrade)? {
        let name = protocol.split('/').next().unwrap_or(protocol);
        if name.eq_ignore_ascii_case("h2c") {
            return None;
        }
        websocket |= name.eq_ignore_ascii_case("websocket");
    }
    if websocket {
        let mut keys = headers.get_all("sec-websocket-key").iter();
        let handshake = request.method() == http::Method::GET
            && matches!((keys.next(), keys.next()), (Some(_), None))
            && headers.contains_key("sec-websocket-version");
        if !handshake {
            return None;
        }
    }
    Some(upgrade.clone())
}

/// The protocol tokens of an `Upgrade` value (`name` or `name/version`), `None` when it
/// is not such a list.
fn protocols(value: &HeaderValue) -> Option<Vec<&str>> {
    let text = value.to_str().ok()?;
    let list: Vec<&str> = text.split(',').map(str::trim).collect();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let sound = list.iter().all(|p| match p.split_once('/') {
        Some((name, version)) => token(name) && token(version),
        None => token(p),
    });
    sound.then_some(list)
}

/// Whether the protocol a backend switched to is one the client offered (compared
/// without regard to case): a backend may not switch a client to something it did not
/// ask for.
pub fn upgrade_offered(offered: &HeaderValue, chosen: &HeaderValue) -> bool {
    match (protocols(offered), protocols(chosen)) {
        (Some(offered), Some(chosen)) if chosen.len() == 1 => {
            offered.iter().any(|p| p.eq_ignore_ascii_case(chosen[0]))
        }
        _ => false,
    }
}

/// Marks a message as an upgrade to `protocol`: `Connection: upgrade` and `Upgrade`, the
/// two hop-by-hop headers an upgrade needs on each hop (set after sanitizing, on the
/// request to the backend and on the 101 to the client).
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// A header map of `pairs`, in order, duplicates kept: the unit tests' request heads.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ConnInfo;
    use std::net::SocketAddr;
    use test_headers as headers;

    fn policy(trusted: &[&str]) -> HeaderPolicy {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[forward]\nclaim_headers = {{ email = \"X-User-Email\" }}\ntrusted_proxies = {trusted:?}"
        );
        let config = crate::config::Config::from_toml(&text, std::path::Path::new(".")).unwrap();
        HeaderPolicy::new(&config.forward)
    }

    /// Runs both calls on a request with `pairs` from `peer`.
    fn through(p: &HeaderPolicy, peer: &str, pairs: &[(&str, &str)]) -> HeaderMap {
        let peer: SocketAddr = peer.parse().unwrap();
        let conn = ConnInfo::new(peer, p.is_trusted(peer.ip()), false);
        let mut request = Request::new(());
        *request.headers_mut() = headers(pairs);
        let ctx = RequestContext::new(&conn, request.headers());
        p.sanitize(request.headers_mut(), &ctx).unwrap();
        p.prepare_upstream(&mut request, &ctx, &[]);
        request.headers().clone()
    }

    fn upgrade_request(method: &str, pairs: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder()
            .method(method)
            .uri("/ws")
            .body(())
            .unwrap();
        *request.headers_mut() = headers(pairs);
        request
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade_and_never_names_h2c() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ];
        let r = upgrade_request("GET", &ws);
        assert_eq!(requested_upgrade(&r).unwrap(), "websocket");
        // Not GET, no key, two keys, no Connection: upgrade: not a WebSocket handshake.
        assert!(requested_upgrade(&upgrade_request("POST", &ws)).is_none());
        assert!(requested_upgrade(&upgrade_request("GET", &ws[..3])).is_none());
        let mut two_keys = ws.to_vec();
        two_keys.push(("sec-websocket-key", "b3RoZXI="));
        assert!(requested_upgrade(&upgrade_request("GET", &two_keys)).is_none());
        assert!(requested_upgrade(&upgrade_request("GET", &ws[1..])).is_none());
        for h2c in ["h2c", "foo, H2C", "h2c/1"] {
            let r = upgrade_request("GET", &[("connection", "upgrade"), ("upgrade", h2c)]);
            assert!(requested_upgrade(&r).is_none(), "{h2c}");
        }
        let r = upgrade_request("GET", &[("connection", "upgrade"), ("upgrade", "a b")]);
        assert!(requested_upgrade(&r).is_none());
        let r = upgrade_request("GET", &[("connection", "upgrade"), ("upgrade", "foo/2")]);
        assert_eq!(requested_upgrade(&r).unwrap(), "foo/2");
        let mut http2 = upgrade_request("GET", &ws);
        *http2.version_mut() = http::Version::HTTP_2;
        assert!(requested_upgrade(&http2).is_none());
    }

    #[test]
    fn a_backend_switches_only_to_an_offered_protocol() {
        let offered = HeaderValue::from_static("websocket, foo/2");
        assert!(upgrade_offered(
            &offered,
            &HeaderValue::from_static("WebSocket")
        ));
        assert!(upgrade_offered(
            &offered,
            &HeaderValue::from_static("foo/2")
        ));
        assert!(!upgrade_offered(&offered, &HeaderValue::from_static("foo")));
        assert!(!upgrade_offered(&offered, &HeaderValue::from_static("h2c")));
        assert!(!upgrade_offered(
            &offered,
            &HeaderValue::from_static("websocket, foo/2")
        ));
    }

    #[test]
    fn identity_headers_are_stripped_in_every_spelling() {
        let h = through(
            &policy(&[]),
            "192.0.2.7:1",
            &[
                ("x-user-id", "admin"),
                ("X_User_Id", "admin"),
                ("x-user-email", "a@b"),
                ("x_user_email", "a@b"),
                ("x-other", "kept"),
            ],
        );
        assert!(!h.contains_key("x-user-id") && !h.contains_key("x_user_id"));
        assert!(!h.contains_key("x-user-email") && !h.contains_key("x_user_email"));
        assert_eq!(h["x-other"], "kept");
    }

    #[test]
    fn connection_named_and_hop_by_hop_headers_go() {
        let mut h = headers(&[
            ("connection", "close, X-Keep, authorization"),
            ("x-keep", "1"),
            ("authorization", "Bearer x"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("transfer-encoding", "chunked"),
        ]);
        let conn = ConnInfo::new("192.0.2.7:1".parse().unwrap(), false, false);
        let ctx = RequestContext::new(&conn, &h);
        policy(&[]).sanitize(&mut h, &ctx).unwrap();
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn forwarding_headers_are_replaced_unless_the_peer_is_trusted() {
        let p = policy(&["10.0.0.0/8"]);
        let h = through(
            &p,
            "192.0.2.7:5000",
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x_forwarded_port", "1"),
                ("forwarded", "for=1.2.3.4"),
                ("x-real-ip", "1.2.3.4"),
                ("x-forwarded-proto", "https"),
                ("host", "app.example"),
            ],
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert!(!h.contains_key("forwarded") && !h.contains_key("x-real-ip"));
        assert!(!h.contains_key("x_forwarded_port"));

        let h = through(
            &p,
            "10.1.2.3:5000",
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "https"),
                ("x-real-ip", "1.2.3.4"),
            ],
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-real-ip"], "1.2.3.4");
        assert!(
            !h.contains_key("x-forwarded-host"),
            "no Host, none invented"
        );
    }

    #[test]
    fn the_upstream_request_carries_the_id_and_authorization_as_configured() {
        let pairs = [("x-request-id", "abc"), ("authorization", "Bearer x")];
        let mut p = policy(&[]);
        let h = through(&p, "192.0.2.7:1", &pairs);
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(
            h[AUTHORIZATION], "Bearer x",
            "pass_authorization defaults to true"
        );
        p.pass_authorization = false;
        assert!(!through(&p, "192.0.2.7:1", &pairs).contains_key(AUTHORIZATION));
    }

    #[test]
    fn an_http2_request_gets_a_host_from_its_authority() {
        let p = policy(&[]);
        let conn = ConnInfo::new("192.0.2.7:1".parse().unwrap(), false, false);
        let mut request = Request::builder()
            .uri("http://app.example:8080/x")
            .body(())
            .unwrap();
        let ctx = RequestContext::new(&conn, request.headers());
        p.prepare_upstream(&mut request, &ctx, &[]);
        assert_eq!(request.headers()[HOST], "app.example:8080");
        assert_eq!(request.headers()[X_FORWARDED_HOST], "app.example:8080");
    }

    #[test]
    fn framing_names_spelled_with_an_underscore_are_refused_and_kept_otherwise() {
        let p = policy(&["10.0.0.0/8"]);
        let conn = ConnInfo::new("10.1.2.3:1".parse().unwrap(), true, false);
        for bad in [
            "transfer_encoding",
            "Content_Length",
            "keep_alive",
            "PROXY_CONNECTION",
        ] {
            let mut h = headers(&[(bad, "x"), ("x_other", "1")]);
            let ctx = RequestContext::new(&conn, &h);
            let refused = p.sanitize(&mut h, &ctx).unwrap_err();
            assert_eq!(refused.0.as_str(), bad.to_ascii_lowercase());
        }
        let mut h = headers(&[("content-length", "0"), ("host", "a"), ("host_", "b")]);
        let ctx = RequestContext::new(&conn, &h);
        p.sanitize(&mut h, &ctx).unwrap();
        assert_eq!(h.len(), 3, "framing headers are kept: {h:?}");
    }

    #[test]
    fn cookie_fields_are_joined_for_the_backend() {
        let h = through(
            &policy(&[]),
            "192.0.2.7:1",
            &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
        );
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2; c=3");
        let h = through(&policy(&[]), "192.0.2.7:1", &[("cookie", "a=1")]);
        assert_eq!(h[COOKIE], "a=1");
    }

    #[test]
    fn response_hop_by_hop_headers_go() {
        let mut h = headers(&[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn claims_become_headers_when_they_are_clean() {
        let p = policy(&[]);
        let claims = serde_json::json!({"email": "a@example.com"});
        let id = p.identity_headers("alice", claims.as_object().unwrap());
        assert_eq!(id.len(), 2);
        assert_eq!(
            (id[0].0.as_str(), id[0].1.to_str().unwrap()),
            ("x-user-id", "alice")
        );
        assert_eq!(id[1].1, "a@example.com");
        let claims = serde_json::json!({"email": "a\r\nb"});
        assert_eq!(
            p.identity_headers("alice", claims.as_object().unwrap())
                .len(),
            1
        );
    }
}
