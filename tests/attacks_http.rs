//! The attack catalogue of the public listener, end to end (SPEC §5): each test is one
//! attack, named as a sentence, sent the way an attacker would send it (a raw TCP
//! socket wherever an HTTP client library would normalise or refuse it), and each
//! asserts both the answer and what the backend saw — nothing at all for a refusal,
//! exactly one identity header with the right value for a forwarded request.
//!
//! - forged identity headers (case, duplicates, `_` spellings, comma lists) on
//!   protected, public and capture routes, and `Connection` tricks;
//! - hop-by-hop headers in both directions;
//! - client forwarding and path/method override headers;
//! - `forward.pass_authorization = false`;
//! - framing: request smuggling (CL+TE, bad `Transfer-Encoding`, differing
//!   `Content-Length`), pipelining, pooled backend connections shared by users,
//!   absolute-form targets, hostile `Host`, `CONNECT`, `Expect: 100-continue`, header
//!   count and target length limits, slowloris;
//! - paths: dot-segments and encoded separators used to climb out of a public prefix,
//!   and look-alikes of the logout routes.

mod common;
use common::*;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A raw request: `METHOD target HTTP/1.1`, `Host: app.example`, then `lines`.
fn request(method: &str, target: &str, lines: &[&str]) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: app.example\r\n");
    for line in lines {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// `Authorization: Bearer <token>` as a header line.
fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// A backend and a gate (allowlist), with alice logged in.
async fn setup() -> (Backend, Gate, String) {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    (backend, gate, token)
}

/// Asserts that exactly one more request reached the backend, and returns it.
fn one_forwarded(backend: &Backend, before: usize) -> Seen {
    let seen = backend.seen();
    assert_eq!(
        seen.len(),
        before + 1,
        "{:?}",
        &seen[before.min(seen.len())..]
    );
    seen[before].clone()
}

/// Every header the backend saw that a server could read as `X-User-Id` or
/// `X-User-Email` (any case, `_` for `-`).
fn identity_headers(seen: &Seen) -> Vec<(String, String)> {
    seen.headers
        .iter()
        .filter(|(k, _)| {
            let n = k.as_str().replace('_', "-");
            n == "x-user-id" || n == "x-user-email"
        })
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or("<binary>").to_string(),
            )
        })
        .collect()
}

/// Whether the backend ever saw a request whose target mentions `smuggled`.
fn saw_smuggled(backend: &Backend) -> bool {
    backend.seen().iter().any(|s| s.uri.contains("smuggled"))
}

/// Asserts that a protected request by alice carrying forged identity `lines`
/// reaches the backend with exactly one identity header, `X-User-Id: alice`.
async fn assert_forgery_replaced(lines: &[&str]) {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    let mut all = vec![auth.as_str()];
    all.extend_from_slice(lines);
    let before = backend.count();
    let r = ask(&gate, &request("GET", "/api/x", &all)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.all("x-user-id"), vec!["alice"], "{lines:?}");
    assert!(seen.all("x_user_id").is_empty(), "{:?}", seen.headers);
    assert_eq!(
        identity_headers(&seen),
        vec![("x-user-id".to_string(), "alice".to_string())],
        "{lines:?}"
    );
}

/// Every forged spelling of the identity headers, each a set of header lines.
const FORGERIES: &[&[&str]] = &[
    &["x-user-id: admin"],
    &["X-USER-ID: admin"],
    &["X-User-Id: admin"],
    &["X-User-Id: admin", "x-user-id: root"],
    &["X_User_Id: admin"],
    &["x_user_id: admin"],
    &["X-User-Id: admin, alice"],
    &["X-User-Id: admin", "X_User_Id: root"],
    &[
        "X-User-Email: admin@evil.example",
        "X_USER_EMAIL: root@evil.example",
    ],
];

/// Asserts that no forged spelling reaches the backend on an unauthenticated route.
async fn assert_no_identity_on(method: &str, path: &str, body: &str) {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    let length = format!("Content-Length: {}", body.len());
    for forged in FORGERIES {
        for with_token in [false, true] {
            let mut lines = vec!["Content-Type: application/json", length.as_str()];
            if with_token {
                lines.push(&auth);
            }
            lines.extend_from_slice(forged);
            let before = backend.count();
            let mut text = request(method, path, &lines);
            text.push_str(body);
            let r = ask(&gate, &text).await;
            assert_eq!(r.status, 200, "{path} {forged:?}: {r:?}");
            let seen = one_forwarded(&backend, before);
            assert_eq!(seen.uri, path);
            assert!(
                identity_headers(&seen).is_empty(),
                "{path} (token: {with_token}) {forged:?}: {:?}",
                seen.headers
            );
        }
    }
}

/// Asserts that a hop-by-hop request header (and every header named with it) never
/// reaches the backend, on a protected and on a public route.
async fn assert_hop_dropped(lines: &[&str], names: &[&str]) {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    for path in ["/api/hop", "/public/hop"] {
        let mut all = vec![auth.as_str(), "X-End-To-End: kept"];
        all.extend_from_slice(lines);
        let before = backend.count();
        let r = ask(&gate, &request("GET", path, &all)).await;
        assert_eq!(r.status, 200, "{path} {lines:?}: {r:?}");
        let seen = one_forwarded(&backend, before);
        for name in names {
            assert!(
                seen.all(name).is_empty(),
                "{path}: {name} reached the backend: {:?}",
                seen.headers
            );
        }
        // The gate's own connection to the backend may carry `Connection`, never one
        // naming what the client named.
        for v in seen.all("connection") {
            let v = v.to_ascii_lowercase();
            for name in names {
                assert!(!v.contains(name), "{path}: connection: {v}");
            }
        }
        assert_eq!(seen.all("x-end-to-end"), vec!["kept"], "{path}");
    }
}

/// Asserts that a framing attack neither smuggles a request to the backend nor gets
/// a second response on its connection: it ends in a 4xx or a closed connection.
async fn assert_not_smuggled(gate: &Gate, backend: &Backend, attack: &str) {
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream.write_all(attack.as_bytes()).await.unwrap();
    let (out, closed) = read_until_close(&mut stream, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses: Vec<u16> = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    assert!(
        !saw_smuggled(backend),
        "a smuggled request reached the backend: {:?}",
        backend.seen()
    );
    assert!(
        statuses.len() <= 1,
        "the smuggled request got an answer of its own: {text:?}"
    );
    let refused = statuses.first().is_some_and(|s| (400..500).contains(s));
    assert!(
        refused || closed,
        "neither a 4xx nor a closed connection: {text:?}"
    );
}

/// The smuggled request: authenticated, so that only framing can keep it out.
fn smuggled(token: &str) -> String {
    format!(
        "GET /smuggled HTTP/1.1\r\nHost: app.example\r\n{}\r\n\r\n",
        bearer(token)
    )
}

/// Asserts a logout look-alike: without a token it is a protected route (401, backend
/// untouched); with one it revokes nothing (every token still works afterwards).
async fn assert_logout_look_alike(target: &str) {
    let (backend, gate, token) = setup().await;
    let other = login(&gate, "alice").await;
    let before = backend.count();
    let r = ask(
        &gate,
        &request("POST", target, &["Content-Length: 0", "Connection: close"]),
    )
    .await;
    r.assert_refusal(401);
    backend.assert_untouched(before);

    let auth = bearer(&token);
    let r = ask(
        &gate,
        &request(
            "POST",
            target,
            &[&auth, "Content-Length: 0", "Connection: close"],
        ),
    )
    .await;
    assert_ne!(r.status, 204, "{target} acted as a logout: {r:?}");
    if r.status == 200 {
        // Forwarded as an ordinary protected request, with alice's identity.
        let seen = backend.last();
        assert_eq!(seen.uri, target);
        assert_eq!(seen.all("x-user-id"), vec!["alice"]);
    }
    for t in [&token, &other] {
        let r = get_with(&gate.url("/api/still-live"), t).await;
        assert_eq!(r.status, 200, "{target} revoked a token: {:?}", r.body);
    }
}

/// Asserts that a path climbing out of or around a route gets 400 with or without a
/// token and never reaches the backend.
async fn assert_bad_path(target: &str) {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    let before = backend.count();
    for lines in [
        vec!["Connection: close"],
        vec![auth.as_str(), "Connection: close"],
    ] {
        let r = ask(&gate, &request("GET", target, &lines)).await;
        assert_eq!(r.status, 400, "{target}: {r:?}");
    }
    // Also as the method of a logout, where an effect would be a revocation.
    let r = ask(
        &gate,
        &request(
            "POST",
            target,
            &[&auth, "Content-Length: 0", "Connection: close"],
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{target}: {r:?}");
    backend.assert_untouched(before);
    assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 1. Forged identity headers
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_lower_case_x_user_id_admin_is_replaced_by_the_token_user() {
    assert_forgery_replaced(&["x-user-id: admin"]).await;
}

#[tokio::test]
async fn an_upper_case_x_user_id_admin_is_replaced_by_the_token_user() {
    assert_forgery_replaced(&["X-USER-ID: admin"]).await;
}

#[tokio::test]
async fn a_mixed_case_x_user_id_admin_is_replaced_by_the_token_user() {
    assert_forgery_replaced(&["X-User-Id: admin"]).await;
}

#[tokio::test]
async fn an_x_user_id_sent_twice_is_replaced_by_one_token_user() {
    assert_forgery_replaced(&["X-User-Id: admin", "x-user-id: root"]).await;
}

#[tokio::test]
async fn an_x_user_id_spelled_with_underscores_never_reaches_the_backend() {
    assert_forgery_replaced(&["X_User_Id: admin"]).await;
    assert_forgery_replaced(&["x_user_id: admin", "X-User-Id: root"]).await;
}

#[tokio::test]
async fn an_x_user_id_comma_list_is_replaced_by_the_token_user() {
    assert_forgery_replaced(&["X-User-Id: admin, alice"]).await;
    assert_forgery_replaced(&["X-User-Id: alice, admin"]).await;
}

#[tokio::test]
async fn a_forged_claim_header_in_any_spelling_never_reaches_the_backend() {
    assert_forgery_replaced(&[
        "X-User-Email: admin@evil.example",
        "x_user_email: admin@evil.example",
        "X-USER-EMAIL: root@evil.example",
    ])
    .await;
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend_on_a_public_prefix_route() {
    assert_no_identity_on("GET", "/public/x", "").await;
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend_on_an_exact_public_route() {
    assert_no_identity_on("GET", "/healthz", "").await;
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend_on_the_capture_route() {
    assert_no_identity_on("POST", "/login", r#"{"user":"alice"}"#).await;
}

#[tokio::test]
async fn connection_close_naming_x_user_id_cannot_remove_the_injected_identity() {
    assert_forgery_replaced(&["Connection: close, X-User-Id", "X-User-Id: admin"]).await;
    assert_forgery_replaced(&["Connection: x_user_id", "X-User-Id: admin"]).await;
}

#[tokio::test]
async fn connection_naming_authorization_drops_the_token_and_forwards_nothing() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let r = ask(
        &gate,
        &request(
            "GET",
            "/api/x",
            &[&bearer(&token), "Connection: authorization"],
        ),
    )
    .await;
    r.assert_refusal(401);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn connection_naming_x_forwarded_for_cannot_remove_the_gate_forwarding_headers() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let r = ask(
        &gate,
        &request(
            "GET",
            "/api/x",
            &[
                &bearer(&token),
                "Connection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host",
                "X-Forwarded-For: 6.6.6.6",
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["app.example"]);
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn one_hundred_and_one_forged_x_user_id_headers_get_431_and_reach_nothing() {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    let mut lines = vec![auth.as_str()];
    lines.extend(std::iter::repeat_n("X-User-Id: admin", 101));
    let before = backend.count();
    let text = raw(gate.addr, request("GET", "/api/x", &lines).as_bytes(), WAIT).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    backend.assert_untouched(before);
}

// ---------------------------------------------------------------------------------
// 2. Hop-by-hop headers, both ways
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_connection_header_never_reaches_the_backend() {
    assert_hop_dropped(&["Connection: keep-alive"], &["connection"]).await;
}

#[tokio::test]
async fn a_client_keep_alive_header_never_reaches_the_backend() {
    assert_hop_dropped(&["Keep-Alive: timeout=600, max=100000"], &["keep-alive"]).await;
}

#[tokio::test]
async fn a_client_proxy_connection_header_never_reaches_the_backend() {
    assert_hop_dropped(&["Proxy-Connection: keep-alive"], &["proxy-connection"]).await;
}

#[tokio::test]
async fn a_client_proxy_authorization_header_never_reaches_the_backend() {
    assert_hop_dropped(
        &["Proxy-Authorization: Basic YWRtaW46YWRtaW4="],
        &["proxy-authorization"],
    )
    .await;
}

#[tokio::test]
async fn a_client_te_header_never_reaches_the_backend() {
    assert_hop_dropped(&["TE: trailers, deflate"], &["te"]).await;
}

#[tokio::test]
async fn a_client_trailer_header_never_reaches_the_backend() {
    assert_hop_dropped(&["Trailer: X-User-Id"], &["trailer"]).await;
}

#[tokio::test]
async fn a_client_upgrade_header_never_reaches_the_backend() {
    assert_hop_dropped(
        &["Connection: Upgrade", "Upgrade: websocket"],
        &["upgrade", "connection"],
    )
    .await;
    assert_hop_dropped(&["Upgrade: h2c"], &["upgrade"]).await;
}

#[tokio::test]
async fn a_custom_header_named_in_connection_never_reaches_the_backend() {
    assert_hop_dropped(
        &[
            "Connection: keep-alive, X-Hop-Secret",
            "X-Hop-Secret: s3cret",
        ],
        &["x-hop-secret", "connection"],
    )
    .await;
}

#[tokio::test]
async fn backend_hop_by_hop_headers_never_reach_the_client_on_a_protected_route() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    // A kept-alive exchange: the gate has no reason to send a `Connection` of its own.
    let r = ask(&gate, &request("GET", "/api/x", &[&bearer(&token)])).await;
    assert_eq!(r.status, 200, "{r:?}");
    one_forwarded(&backend, before);
    for name in [
        "keep-alive",
        "proxy-connection",
        "connection",
        "x-backend-private",
    ] {
        assert!(r.all(name).is_empty(), "{name} reached the client: {r:?}");
    }
    assert_eq!(r.all("content-type"), vec!["application/json"]);
}

#[tokio::test]
async fn backend_hop_by_hop_headers_never_reach_the_client_on_a_public_route() {
    let (backend, gate, _) = setup().await;
    let before = backend.count();
    let r = ask(&gate, &request("GET", "/public/x", &["Connection: close"])).await;
    assert_eq!(r.status, 200, "{r:?}");
    one_forwarded(&backend, before);
    for name in ["keep-alive", "proxy-connection", "x-backend-private"] {
        assert!(r.all(name).is_empty(), "{name} reached the client: {r:?}");
    }
    for v in r.all("connection") {
        assert!(v.eq_ignore_ascii_case("close"), "connection: {v}");
    }
}

// ---------------------------------------------------------------------------------
// 3. Forwarding and override headers
// ---------------------------------------------------------------------------------

const FORGED_FORWARDING: &[&str] = &[
    "X-Forwarded-For: 6.6.6.6",
    "x-forwarded-for: 10.0.0.1",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Prefix: /admin",
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
    "X-Real-IP: 6.6.6.6",
];

async fn assert_forwarding_replaced(path: &str) {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    let mut lines = vec![auth.as_str()];
    lines.extend_from_slice(FORGED_FORWARDING);
    let before = backend.count();
    let r = ask(&gate, &request("GET", path, &lines)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"], "{path}");
    assert_eq!(seen.all("x-forwarded-proto"), vec!["http"], "{path}");
    assert_eq!(seen.all("x-forwarded-host"), vec!["app.example"], "{path}");
    for name in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert!(
            seen.all(name).is_empty(),
            "{path}: {name} reached the backend: {:?}",
            seen.headers
        );
    }
}

#[tokio::test]
async fn forged_forwarding_headers_are_replaced_on_a_protected_route() {
    assert_forwarding_replaced("/api/x").await;
}

#[tokio::test]
async fn forged_forwarding_headers_are_replaced_on_a_public_route() {
    assert_forwarding_replaced("/public/x").await;
}

#[tokio::test]
async fn forged_forwarding_headers_spelled_with_underscores_never_reach_the_backend() {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    for path in ["/api/x", "/public/x"] {
        let before = backend.count();
        let r = ask(
            &gate,
            &request(
                "GET",
                path,
                &[
                    &auth,
                    "X_Forwarded_For: 6.6.6.6",
                    "X_Forwarded_Host: evil.example",
                    "X_Real_IP: 6.6.6.6",
                ],
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = one_forwarded(&backend, before);
        assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"], "{path}");
        for name in ["x_forwarded_for", "x_forwarded_host", "x_real_ip"] {
            assert!(
                seen.all(name).is_empty(),
                "{path}: {name} reached the backend: {:?}",
                seen.headers
            );
        }
    }
}

const OVERRIDES: &[&str] = &[
    "X-Original-URL: /admin",
    "X-Rewrite-URL: /admin",
    "X-HTTP-Method-Override: DELETE",
];

async fn assert_overrides_removed(path: &str, lines: &[&str], names: &[&str]) {
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    let mut all = vec![auth.as_str()];
    all.extend_from_slice(lines);
    let before = backend.count();
    let r = ask(&gate, &request("GET", path, &all)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, path);
    for name in names {
        assert!(
            seen.all(name).is_empty(),
            "{path}: {name} reached the backend: {:?}",
            seen.headers
        );
    }
}

#[tokio::test]
async fn path_and_method_override_headers_never_reach_the_backend_on_a_protected_route() {
    assert_overrides_removed(
        "/api/x",
        OVERRIDES,
        &["x-original-url", "x-rewrite-url", "x-http-method-override"],
    )
    .await;
}

#[tokio::test]
async fn path_and_method_override_headers_never_reach_the_backend_on_a_public_route() {
    assert_overrides_removed(
        "/public/x",
        OVERRIDES,
        &["x-original-url", "x-rewrite-url", "x-http-method-override"],
    )
    .await;
}

#[tokio::test]
async fn override_headers_spelled_with_underscores_never_reach_the_backend() {
    assert_overrides_removed(
        "/public/x",
        &[
            "X_Original_URL: /admin",
            "X_Rewrite_URL: /admin",
            "X_HTTP_Method_Override: DELETE",
        ],
        &["x_original_url", "x_rewrite_url", "x_http_method_override"],
    )
    .await;
}

#[tokio::test]
async fn without_pass_authorization_a_valid_token_authenticates_but_never_reaches_the_backend() {
    let backend = Backend::start().await;
    let config = config_with("forward", "pass_authorization = false");
    let gate = Gate::start_config(&backend, &config).await;
    let token = login(&gate, "alice").await;
    for path in ["/api/x", "/public/x"] {
        let before = backend.count();
        let r = ask(&gate, &request("GET", path, &[&bearer(&token)])).await;
        assert_eq!(r.status, 200, "{r:?}");
        let seen = one_forwarded(&backend, before);
        assert!(
            seen.all("authorization").is_empty(),
            "{path}: the token reached the backend: {:?}",
            seen.headers
        );
        if path == "/api/x" {
            assert_eq!(seen.all("x-user-id"), vec!["alice"]);
        }
    }
    // Still checked: no token is still 401.
    let before = backend.count();
    let r = ask(&gate, &request("GET", "/api/x", &[])).await;
    r.assert_refusal(401);
    backend.assert_untouched(before);
}

// ---------------------------------------------------------------------------------
// 4. Framing
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    // Read by Transfer-Encoding, the body is empty and the smuggled request follows;
    // read by Content-Length, it is all body.
    let tail = format!("0\r\n\r\n{}", smuggled(&token));
    let attack = format!(
        "{}{tail}",
        request(
            "POST",
            "/api/cl-te",
            &[
                &bearer(&token),
                &format!("Content-Length: {}", tail.len()),
                "Transfer-Encoding: chunked",
            ],
        )
    );
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_with_a_short_content_length_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    // Read by Content-Length (4), the smuggled request follows the body; read by
    // Transfer-Encoding, it is inside the one chunk.
    let inner = smuggled(&token);
    let body = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let attack = format!(
        "{}{body}",
        request(
            "POST",
            "/api/te-cl",
            &[
                &bearer(&token),
                "Transfer-Encoding: chunked",
                "Content-Length: 4",
            ],
        )
    );
    assert_not_smuggled(&gate, &backend, &attack).await;
}

/// A request whose `Transfer-Encoding` line is `te_lines`, with a `Content-Length`
/// that covers a smuggled request in its body.
fn bad_te_attack(token: &str, te_lines: &[&str]) -> String {
    let tail = format!("0\r\n\r\n{}", smuggled(token));
    let auth = bearer(token);
    let length = format!("Content-Length: {}", tail.len());
    let mut lines = vec![auth.as_str(), length.as_str()];
    lines.extend_from_slice(te_lines);
    format!("{}{tail}", request("POST", "/api/bad-te", &lines))
}

#[tokio::test]
async fn transfer_encoding_chunked_then_identity_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack = bad_te_attack(&token, &["Transfer-Encoding: chunked, identity"]);
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_xchunked_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack = bad_te_attack(&token, &["Transfer-Encoding: xchunked"]);
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_with_a_space_before_the_colon_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack = bad_te_attack(&token, &["Transfer-Encoding : chunked"]);
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_with_odd_whitespace_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack = bad_te_attack(&token, &["Transfer-Encoding:\tchunked\t "]);
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_as_an_obs_fold_continuation_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack = bad_te_attack(&token, &["Transfer-Encoding:", " chunked"]);
    assert_not_smuggled(&gate, &backend, &attack).await;
    let attack = bad_te_attack(&token, &["X-Padding: x", " Transfer-Encoding: chunked"]);
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_chunked_then_a_second_identity_line_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack = bad_te_attack(
        &token,
        &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
    );
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn transfer_encoding_on_http_1_0_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let attack =
        bad_te_attack(&token, &["Transfer-Encoding: chunked"]).replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn two_differing_content_lengths_smuggle_nothing() {
    let (backend, gate, token) = setup().await;
    let inner = smuggled(&token);
    let body = format!("hello{inner}");
    for lines in [
        vec![
            "Content-Length: 5".to_string(),
            format!("Content-Length: {}", body.len()),
        ],
        vec![
            format!("Content-Length: {}", body.len()),
            "Content-Length: 5".to_string(),
        ],
        vec![format!("Content-Length: 5, {}", body.len())],
    ] {
        let auth = bearer(&token);
        let mut all = vec![auth.as_str()];
        all.extend(lines.iter().map(String::as_str));
        let attack = format!("{}{body}", request("POST", "/api/two-cl", &all));
        assert_not_smuggled(&gate, &backend, &attack).await;
    }
}

#[tokio::test]
async fn a_signed_content_length_smuggles_nothing() {
    let (backend, gate, token) = setup().await;
    let body = format!("hello{}", smuggled(&token));
    let attack = format!(
        "{}{body}",
        request(
            "POST",
            "/api/plus-cl",
            &[&bearer(&token), "Content-Length: +5"]
        )
    );
    assert_not_smuggled(&gate, &backend, &attack).await;
}

#[tokio::test]
async fn a_tokenless_request_pipelined_behind_an_authenticated_one_gets_401() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let first = request("GET", "/api/first", &[&bearer(&token)]);
    let second = request("GET", "/api/second", &["X-User-Id: alice"]);
    let mut conn = Conn::open(&gate).await;
    // Both in one write: the second must not ride on the first one's authentication.
    conn.send(format!("{first}{second}").as_bytes()).await;
    let a = conn.response().await;
    assert_eq!(a.status, 200, "{a:?}");
    let b = conn.response().await;
    b.assert_refusal(401);
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.uri, "/api/first");
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn a_valid_request_then_a_tokenless_one_on_a_kept_alive_connection_gets_200_then_401() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let mut conn = Conn::open(&gate).await;
    conn.send(request("GET", "/api/first", &[&bearer(&token)]).as_bytes())
        .await;
    let a = conn.response().await;
    assert_eq!(a.status, 200, "{a:?}");
    conn.send(request("GET", "/api/second", &[]).as_bytes())
        .await;
    let b = conn.response().await;
    b.assert_refusal(401);
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.uri, "/api/first");
}

#[tokio::test(flavor = "multi_thread")]
async fn interleaved_users_on_shared_connections_never_inherit_each_other_identity() {
    let (backend, gate, alice) = setup().await;
    let bob = login(&gate, "bob").await;
    let before = backend.count();
    // One client for all: its pooled connections to the gate carry both users in turn,
    // as do the gate's pooled connections to the backend.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (user, token, forged) = if i % 2 == 0 {
            ("alice", alice.clone(), "bob")
        } else {
            ("bob", bob.clone(), "alice")
        };
        let url = gate.url(&format!("/api/x?u={user}&n={i}"));
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("authorization", format!("Bearer {token}"))
                .header("x-user-id", forged)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = client.request(req).await.unwrap();
            let status = r.status();
            r.into_body().collect().await.unwrap();
            status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), before + 20);
    let mut numbers: Vec<u32> = Vec::new();
    for s in &seen[before..] {
        let query = s.uri.split_once('?').unwrap().1;
        let mut user = "";
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("u", u)) => user = u,
                Some(("n", n)) => numbers.push(n.parse().unwrap()),
                _ => {}
            }
        }
        assert_eq!(s.all("x-user-id"), vec![user], "{}", s.uri);
        assert_eq!(identity_headers(s).len(), 1, "{:?}", s.headers);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_absolute_form_target_naming_another_host_goes_only_to_the_backend() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let r = ask(
        &gate,
        &format!(
            "GET http://evil.example/api/abs?x=1 HTTP/1.1\r\nHost: evil.example\r\n{}\r\n\r\n",
            bearer(&token)
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.uri, "/api/abs?x=1");
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
    // Without a token the absolute form is no way around authentication.
    let r = ask(
        &gate,
        "GET http://evil.example/api/abs HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    r.assert_refusal(401);
    backend.assert_untouched(before + 1);
}

#[tokio::test]
async fn an_absolute_form_target_with_a_dot_segment_gets_400() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let r = ask(
        &gate,
        &format!(
            "GET http://evil.example/public/../api/x HTTP/1.1\r\nHost: evil.example\r\n{}\r\n\r\n",
            bearer(&token)
        ),
    )
    .await;
    r.assert_refusal(400);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_hostile_host_header_goes_only_to_the_configured_backend() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let r = ask(
        &gate,
        &format!(
            "GET /api/host HTTP/1.1\r\nHost: evil.example\r\n{}\r\n\r\n",
            bearer(&token)
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = one_forwarded(&backend, before);
    assert_eq!(seen.uri, "/api/host");
    assert_eq!(seen.all("x-forwarded-host"), vec!["evil.example"]);
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn connect_to_another_host_is_refused_and_reaches_nothing() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let auth = bearer(&token);
    for lines in [vec![], vec![auth.as_str()]] {
        let mut text =
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n".to_string();
        for l in &lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        let out = raw(gate.addr, text.as_bytes(), Duration::from_secs(2)).await;
        let status: u16 = out
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {out:?}"));
        assert!((400..500).contains(&status), "{out:?}");
    }
    backend.assert_untouched(before);
}

#[tokio::test]
async fn expect_100_continue_without_a_token_gets_401_and_never_a_100_continue() {
    let (backend, gate, _) = setup().await;
    let before = backend.count();
    for path in ["/api/upload", "/logout"] {
        let head = request(
            "POST",
            path,
            &["Content-Length: 10", "Expect: 100-continue"],
        );
        // The body is never sent: a gate that asks for it has already lost.
        let out = raw(gate.addr, head.as_bytes(), Duration::from_secs(1)).await;
        assert!(out.starts_with("HTTP/1.1 401"), "{path}: {out:?}");
        assert!(
            !out.contains("100 Continue") && !out.contains("HTTP/1.1 100"),
            "{path}: {out:?}"
        );
    }
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_9_kib_request_target_gets_414_and_reaches_nothing() {
    let (backend, gate, token) = setup().await;
    let before = backend.count();
    let long = "a".repeat(9 * 1024);
    for target in [
        format!("/api/{long}"),
        format!("/public/{long}"),
        format!("/api/x?q={long}"),
    ] {
        let r = ask(&gate, &request("GET", &target, &[&bearer(&token)])).await;
        r.assert_refusal(414);
    }
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_client_that_stalls_after_one_header_is_disconnected() {
    let (backend, gate, _) = setup().await;
    let before = backend.count();
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /api/x HTTP/1.1\r\nHost: app.example\r\n")
        .await
        .unwrap();
    let closed = wait_for_close(&mut stream, Duration::from_secs(15), false).await;
    assert!(closed.is_some(), "still connected after 15 s");
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_client_dripping_a_header_a_second_is_disconnected() {
    let (backend, gate, _) = setup().await;
    let before = backend.count();
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /api/x HTTP/1.1\r\nHost: app.example\r\n")
        .await
        .unwrap();
    let closed = wait_for_close(&mut stream, Duration::from_secs(15), true).await;
    assert!(
        closed.is_some(),
        "a dripping client kept its connection 15 s"
    );
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reads_nothing_of_a_large_response_is_disconnected() {
    // SPEC §10: a write stalled for upstream.timeout_seconds (1 s here) closes the
    // connection, and with it the backend connection streaming the response.
    let (_backend, gate, token) = setup().await;
    let n = 64 * 1024 * 1024;
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(request("GET", &format!("/stream/{n}"), &[&bearer(&token)]).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => total += k,
            Err(_) => panic!("still streaming after 20 s ({total} bytes)"),
        }
    }
    assert!(
        total < n,
        "all {total} bytes arrived: the stalled write was never cut off"
    );
    let after = ask(&gate, &request("GET", "/api/after", &[&bearer(&token)])).await;
    assert_eq!(after.status, 200, "{after:?}");
}

/// A gate whose first-request deadline is 1 s, with `extra` server settings.
async fn quick_deadline_gate(backend: &Backend, extra: &str) -> Gate {
    let config = config_with(
        "server",
        &format!("header_read_timeout_seconds = 1\n{extra}"),
    );
    Gate::start_config(backend, &config).await
}

/// Asserts that a connection which sends `bytes` and nothing more is closed by the
/// 1 s first-request deadline (well within 8 s), and forwards nothing.
async fn assert_closed_at_the_deadline(bytes: &[u8], what: &str) {
    let backend = Backend::start().await;
    let gate = quick_deadline_gate(&backend, "").await;
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let closed = wait_for_close(&mut stream, Duration::from_secs(8), false).await;
    assert!(closed.is_some(), "{what} was still open after 8 s");
    backend.assert_untouched(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_deadline() {
    // The HTTP/1.1-or-HTTP/2 sniff used to wait for bytes with no deadline at all.
    assert_closed_at_the_deadline(b"", "a silent connection").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_sends_23_of_the_24_preface_bytes_is_closed() {
    assert_closed_at_the_deadline(&PREFACE[..23], "a half preface").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_that_never_sends_a_request_is_closed() {
    // The whole preface and an empty SETTINGS frame: a valid, idle HTTP/2 connection.
    let idle = [PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
    assert_closed_at_the_deadline(&idle, "an idle HTTP/2 connection").await;
}

/// A request over `sender`'s HTTP/2 connection for `path`, with `token` if any.
async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    path: &str,
    token: Option<&str>,
) -> u16 {
    let mut request = Request::get(format!("http://app.example{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// An HTTP/2 connection to `addr` (prior knowledge) and a flag that turns true when
/// the proxy has closed it.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Instant>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    (sender, ended)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    // SPEC §10: keep-alive pings alone used to hold an HTTP/2 connection for ever.
    let backend = Backend::start().await;
    let config = config_with("server", "idle_timeout_seconds = 1");
    let gate = Gate::start_config(&backend, &config).await;
    let (mut sender, ended) = h2_connection(gate.addr).await;
    assert_eq!(h2_get(&mut sender, "/public/a", None).await, 200);
    let last = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(8), ended)
        .await
        .expect("an idle HTTP/2 connection was still open after 8 s")
        .unwrap();
    let idle = closed - last;
    assert!(
        idle >= Duration::from_millis(900),
        "closed after {idle:?} only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_idle_timeout_counts_from_the_latest_request_and_lets_a_slow_one_finish() {
    let backend = Backend::start().await;
    // The backend may take 5 s to answer (the default config says 1).
    let config = GateConfig::default()
        .set("server", "idle_timeout_seconds = 1")
        .set("upstream", "timeout_seconds = 5");
    let gate = Gate::start_config(&backend, &config).await;
    let token = login(&gate, "alice").await;
    let (mut sender, ended) = h2_connection(gate.addr).await;
    // Requests every 400 ms for 2.4 s: never idle for 1 s, so never closed.
    for i in 0..6 {
        assert_eq!(
            h2_get(&mut sender, &format!("/public/{i}"), None).await,
            200
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(!ended.is_finished(), "closed while requests kept coming");
    // A response that takes 2.5 s, longer than the idle timeout, still arrives whole.
    assert_eq!(h2_get(&mut sender, "/sleep/2500", Some(&token)).await, 200);
    tokio::time::timeout(Duration::from_secs(8), ended)
        .await
        .expect("closed in the end")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let backend = Backend::start().await;
    let config = config_with("server", "idle_timeout_seconds = 1");
    let gate = Gate::start_config(&backend, &config).await;
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /public/a HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Well before the 10 s header deadline.
    let closed = wait_for_close(&mut stream, Duration::from_secs(6), false).await;
    assert!(
        closed.is_some(),
        "an idle keep-alive connection was open after 6 s"
    );
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn past_max_connections_new_ones_are_closed_and_the_admin_listener_still_answers() {
    let backend = Backend::start().await;
    let gate = quick_deadline_gate(&backend, "max_connections = 3\n").await;
    // Three silent sockets fill the public listener (until their deadline).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(gate.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = backend.count();
    let mut extra = TcpStream::connect(gate.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("a connection past the limit was left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "a connection past the limit was served");
    backend.assert_untouched(before);
    // The admin listener has its own budget.
    let health = get(&format!("http://{}/healthz", gate.admin), &[]).await;
    assert_eq!(health.status, 200);
    // Once the silent ones are closed at their deadline, the listener serves again.
    drop(held);
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !served {
        let mut stream = TcpStream::connect(gate.addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /public/x HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
            .await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut reply)).await;
        served = reply.starts_with(b"HTTP/1.1 200");
        if !served {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(served, "the public listener did not serve again");
}

/// The framing and hop-by-hop names of SPEC §10 that have a `-` to spell as `_`.
const DISGUISED_FRAMING: &[&str] = &[
    "Transfer_Encoding: chunked",
    "transfer_encoding: chunked",
    "TRANSFER_ENCODING: chunked",
    "Content_Length: 0",
    "Keep_Alive: timeout=5",
    "Proxy_Connection: keep-alive",
];

#[tokio::test]
async fn a_framing_header_spelled_with_an_underscore_is_refused_on_every_route() {
    // A backend that reads `_` as `-` would frame the body below as chunked and find a
    // second request in it; refused before any route is chosen (SPEC §10).
    let (backend, gate, token) = setup().await;
    let auth = bearer(&token);
    for line in DISGUISED_FRAMING {
        for (path, extra) in [
            ("/api/x", Some(auth.as_str())),
            ("/public/x", None),
            ("/login", None),
        ] {
            let before = backend.count();
            let mut head: Vec<&str> = extra.into_iter().collect();
            head.push(line);
            let r = ask(&gate, &request("POST", path, &head)).await;
            r.assert_refusal(400);
            backend.assert_untouched(before);
        }
    }
    // `Transfer_Encoding` with a body that hides a request.
    let inner = smuggled(&token);
    let body = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let length = format!("Content-Length: {}", body.len());
    let attack = format!(
        "{}{body}",
        request(
            "POST",
            "/public/x",
            &[&length, "Transfer_Encoding: chunked"]
        )
    );
    let before = backend.count();
    ask(&gate, &attack).await.assert_refusal(400);
    backend.assert_untouched(before);
}

// ---------------------------------------------------------------------------------
// 5. Paths
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_raw_dot_dot_out_of_a_public_prefix_gets_400() {
    assert_bad_path("/public/../api/admin").await;
    assert_bad_path("/public/../logout").await;
}

#[tokio::test]
async fn a_percent_encoded_dot_dot_out_of_a_public_prefix_gets_400() {
    assert_bad_path("/public/%2e%2e/api/admin").await;
}

#[tokio::test]
async fn a_mixed_case_percent_encoded_dot_dot_gets_400() {
    assert_bad_path("/public/%2E%2e/api/admin").await;
    assert_bad_path("/public/%2E%2E/logout").await;
}

#[tokio::test]
async fn a_half_encoded_dot_dot_gets_400() {
    assert_bad_path("/public/.%2e/api/admin").await;
    assert_bad_path("/public/%2e./api/admin").await;
}

#[tokio::test]
async fn a_single_dot_segment_gets_400() {
    assert_bad_path("/public/./x").await;
    assert_bad_path("/%2e/logout").await;
}

#[tokio::test]
async fn an_encoded_slash_gets_400() {
    assert_bad_path("/public%2f..%2fapi/admin").await;
    assert_bad_path("/public/..%2Fapi/admin").await;
}

#[tokio::test]
async fn an_encoded_backslash_gets_400() {
    assert_bad_path("/public/..%5capi/admin").await;
    assert_bad_path("/public/..%5Capi/admin").await;
}

#[tokio::test]
async fn a_raw_backslash_gets_400() {
    assert_bad_path("/public/..\\api/admin").await;
    assert_bad_path("/public\\..\\api").await;
}

#[tokio::test]
async fn a_servlet_dot_dot_semicolon_out_of_a_public_prefix_gets_400() {
    assert_bad_path("/public/..;/api/admin").await;
    assert_bad_path("/public/..;jsessionid=x/api/admin").await;
    assert_bad_path("/public/%2e%2e;x/api/admin").await;
}

#[tokio::test]
async fn an_encoded_nul_gets_400() {
    assert_bad_path("/public/x%00/../api").await;
    assert_bad_path("/logout%00").await;
}

#[tokio::test]
async fn logout_with_a_semicolon_parameter_is_no_logout() {
    assert_logout_look_alike("/logout;x").await;
}

#[tokio::test]
async fn logout_all_with_a_semicolon_parameter_is_no_logout() {
    assert_logout_look_alike("/logout-all;x").await;
}

#[tokio::test]
async fn logout_behind_a_double_slash_is_no_logout() {
    assert_logout_look_alike("//logout").await;
}

#[tokio::test]
async fn logout_all_behind_a_double_slash_is_no_logout() {
    assert_logout_look_alike("//logout-all").await;
}

#[tokio::test]
async fn an_upper_case_logout_is_no_logout() {
    assert_logout_look_alike("/LOGOUT").await;
}

#[tokio::test]
async fn logout_with_a_trailing_slash_is_no_logout() {
    assert_logout_look_alike("/logout/").await;
}

#[tokio::test]
async fn a_percent_encoded_logout_is_no_logout() {
    assert_logout_look_alike("/%6cogout").await;
    assert_logout_look_alike("/%6Cogout-all").await;
}

#[tokio::test]
async fn a_capitalised_logout_all_is_no_logout() {
    assert_logout_look_alike("/Logout-All").await;
}

#[tokio::test]
async fn a_semicolon_parameter_on_the_capture_route_is_not_captured_without_authentication() {
    // `/login;x` is not the capture route: it is protected, so no unauthenticated
    // request reaches the backend's login through it.
    let (backend, gate, _) = setup().await;
    let before = backend.count();
    let body = r#"{"user":"mallory"}"#;
    let text = format!(
        "{}{body}",
        request(
            "POST",
            "/login;x",
            &[
                "Content-Type: application/json",
                &format!("Content-Length: {}", body.len()),
            ],
        )
    );
    let r = ask(&gate, &text).await;
    r.assert_refusal(401);
    backend.assert_untouched(before);
}

// ---------------------------------------------------------------------------------
// 6. Cross-site state changes (SPEC §10)
// ---------------------------------------------------------------------------------

/// A gate that also reads the token from the `access_token` cookie, with alice logged
/// in; returns her token.
async fn cookie_setup() -> (Backend, Gate, String) {
    let backend = Backend::start().await;
    let config = config_with(
        "token",
        "sources = [\"header:Authorization\", \"cookie:access_token\"]",
    );
    let gate = Gate::start_config(&backend, &config).await;
    let token = login(&gate, "alice").await;
    (backend, gate, token)
}

/// Asserts that `token` still gets through to the backend.
async fn assert_still_live(gate: &Gate, token: &str) {
    let r = ask(gate, &request("GET", "/api/still", &[&bearer(token)])).await;
    assert_eq!(r.status, 200, "the token was revoked: {r:?}");
}

#[tokio::test]
async fn a_cross_site_logout_with_a_cookie_token_is_refused_and_revokes_nothing() {
    let (backend, gate, token) = cookie_setup().await;
    let cookie = format!("Cookie: access_token={token}");
    for (route, method) in [("/logout-all", "POST"), ("/logout", "POST")] {
        for marks in [
            &["Origin: https://evil.example", "Sec-Fetch-Site: cross-site"][..],
            &["Origin: https://evil.example"][..],
            &["Sec-Fetch-Site: cross-site"][..],
            &["Origin: null"][..],
        ] {
            let mut lines = vec![cookie.as_str(), "Content-Type: text/plain"];
            lines.extend_from_slice(marks);
            let before = backend.count();
            let r = ask(&gate, &request(method, route, &lines)).await;
            r.assert_refusal(403);
            backend.assert_untouched(before);
            assert_still_live(&gate, &token).await;
        }
    }
    // Revoking one session by id, cross-site, is refused the same way.
    let sessions = ask(&gate, &request("GET", "/sessions", &[&bearer(&token)])).await;
    let list: serde_json::Value = serde_json::from_str(&sessions.body).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let r = ask(
        &gate,
        &request(
            "DELETE",
            &format!("/sessions/{id}"),
            &[&cookie, "Origin: https://evil.example"],
        ),
    )
    .await;
    r.assert_refusal(403);
    assert_still_live(&gate, &token).await;
}

#[tokio::test]
async fn a_same_site_cookie_logout_and_a_cross_site_header_logout_still_work() {
    let (_backend, gate, token) = cookie_setup().await;
    // The page's own origin (Host is app.example in `request`).
    let cookie = format!("Cookie: access_token={token}");
    let same = [
        cookie.as_str(),
        "Origin: https://app.example",
        "Sec-Fetch-Site: same-origin",
    ];
    assert_eq!(
        ask(&gate, &request("POST", "/logout", &same)).await.status,
        204
    );
    let r = ask(&gate, &request("GET", "/api/x", &[&bearer(&token)])).await;
    assert_eq!(r.status, 401, "{r:?}");

    // A token in Authorization is not held to the rule: a browser does not send it
    // cross-site on its own.
    let other = login(&gate, "alice").await;
    let auth = bearer(&other);
    let lines = [
        auth.as_str(),
        "Origin: https://evil.example",
        "Sec-Fetch-Site: cross-site",
    ];
    assert_eq!(
        ask(&gate, &request("POST", "/logout", &lines)).await.status,
        204
    );
}
