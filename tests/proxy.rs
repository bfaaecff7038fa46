//! The public listener as an HTTP proxy, end to end (SPEC §5 and §6 probes):
//!
//! - every refusal row of the SPEC §5 table (status, JSON body, `WWW-Authenticate` /
//!   `Retry-After`), each proven never to reach the backend;
//! - forged identity headers in every spelling, on protected and public routes, and
//!   `Connection`-named headers that try to remove the injected one or the credentials;
//! - path tricks (dot-segments, encoded slashes, servlet `..;`) and logout look-alikes;
//! - faithful forwarding: method, path, query, 5 MiB bodies both ways, hop-by-hop
//!   headers dropped both ways, forwarding headers replaced, override headers removed,
//!   `X-Request-Id` kept or generated and echoed;
//! - HTTP/1.1 keep-alive, pooled backend connections shared by several users, HTTP/2
//!   with prior knowledge;
//! - header limits (431), the admin probes, and the slowloris header-read timeout.

mod common;
use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

const REALM: &str = "Bearer realm=\"tokengate\"";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 for a token that was present but is not acceptable: JSON body and
/// exactly one `WWW-Authenticate` naming `invalid_token` with a description.
fn assert_invalid_token(reply: &Reply) {
    assert_refusal(reply, 401);
    assert_eq!(reply.json()["error"], "invalid_token", "{:?}", reply.body);
    let all: Vec<_> = reply.headers.get_all(WWW_AUTHENTICATE).iter().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    let value = all[0].to_str().unwrap();
    let prefix = format!("{REALM}, error=\"invalid_token\", error_description=\"");
    assert!(
        value.starts_with(&prefix) && value.ends_with('"') && value.len() > prefix.len() + 1,
        "WWW-Authenticate: {value}"
    );
}

/// Asserts the 401 of a request without any token.
fn assert_no_token(reply: &Reply) {
    assert_refusal(reply, 401);
    let all: Vec<_> = reply.headers.get_all(WWW_AUTHENTICATE).iter().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0], REALM);
}

/// A token with an `email` claim, registered in the store as if captured.
async fn token_with_email(gate: &Gate, user: &str, email: &str) -> String {
    gate.admit_claims(user, json!({ "email": email })).await
}

/// Breaks the store under a running gate: the allowlist table disappears, so every
/// liveness lookup fails.
fn drop_valid_token_table(gate: &Gate) {
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    conn.execute_batch("DROP TABLE valid_token").unwrap();
}

/// Breaks the schema itself: `sqlite_master` gets a row that does not parse, and the
/// schema cookie moves, so every connection reloads the schema and fails, even on a
/// query of `sqlite_master` (what the readiness ping runs).
fn corrupt_schema(gate: &Gate) {
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_master SET sql = 'CREATE TABLE valid_token (' WHERE name = 'valid_token';
         PRAGMA schema_version = {};
         PRAGMA writable_schema = OFF;",
        version + 1
    ))
    .unwrap();
}

/// The default config (allowlist) with the upstream pointed at `addr`.
fn config_with_upstream(addr: &str) -> GateConfig {
    GateConfig::default().set("upstream", &format!("url = \"http://{addr}\""))
}

// ---------------------------------------------------------------------------------
// 1. The refusal table of SPEC §5
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_a_token_gets_401_with_the_bare_bearer_challenge() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get(&gate.url("/api/x"), &[]).await;
    assert_no_token(&r);
    backend.assert_untouched_because(0, "a refusal must not reach the backend");
}

#[tokio::test]
async fn a_non_bearer_authorization_counts_as_no_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get(
        &gate.url("/api/x"),
        &[("authorization", "Basic dXNlcjpwYXNz")],
    )
    .await;
    assert_no_token(&r);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_malformed_token_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    for token in [
        "abc",
        "a.b.c",
        "not-a-jwt.at-all",
        "eyJhbGciOiJIUzI1NiJ9..x",
    ] {
        let r = get_with(&gate.url("/api/x"), token).await;
        assert_invalid_token(&r);
    }
    // An empty or spaced bearer is malformed too.
    for value in ["Bearer ", "Bearer a b", "Bearer a,b"] {
        let r = get(&gate.url("/api/x"), &[("authorization", value)]).await;
        assert_invalid_token(&r);
    }
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_token_with_a_bad_signature_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let forged = mint_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-0123456789abcdef0123").unwrap(),
        &claims("alice"),
        None,
    );
    let r = get_with(&gate.url("/api/x"), &forged).await;
    assert_invalid_token(&r);
    // A captured token whose signature was tampered with.
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = get_with(&gate.url("/api/x"), &tampered).await;
    assert_invalid_token(&r);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_token_signed_with_another_algorithm_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let before = backend.count();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = mint_with(
            alg,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            &claims("alice"),
            None,
        );
        let r = get_with(&gate.url("/api/x"), &token).await;
        assert_invalid_token(&r);
    }
    // alg=none, unsigned.
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims("alice").to_string().as_bytes());
    let r = get_with(&gate.url("/api/x"), &format!("{header}.{payload}.")).await;
    assert_invalid_token(&r);
    backend.assert_untouched(before);
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn an_expired_token_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let mut c = claims("alice");
    c["iat"] = json!(now() - 7200);
    c["exp"] = json!(now() - 3600);
    let r = get_with(&gate.url("/api/x"), &mint(&c)).await;
    assert_invalid_token(&r);
    assert!(
        r.header("www-authenticate").unwrap().contains("expired"),
        "{:?}",
        r.header("www-authenticate")
    );
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_token_not_yet_valid_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let mut c = claims("alice");
    c["nbf"] = json!(now() + 3600);
    let r = get_with(&gate.url("/api/x"), &mint(&c)).await;
    assert_invalid_token(&r);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_token_issued_in_the_future_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let mut c = claims("alice");
    c["iat"] = json!(now() + 3600);
    c["exp"] = json!(now() + 7200);
    let r = get_with(&gate.url("/api/x"), &mint(&c)).await;
    assert_invalid_token(&r);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_token_without_exp_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get_with(
        &gate.url("/api/x"),
        &mint(&json!({"sub": "alice", "iat": now()})),
    )
    .await;
    assert_invalid_token(&r);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_revoked_token_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
    assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
    let before = backend.count();
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_invalid_token(&r);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_validly_signed_token_that_was_never_captured_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get_with(&gate.url("/api/x"), &mint(&claims("alice"))).await;
    assert_invalid_token(&r);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn two_authorization_headers_get_401_even_when_both_are_valid() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let alice = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let before = backend.count();
    for (a, b) in [(&alice, &bob), (&alice, &alice)] {
        let r = get(
            &gate.url("/api/x"),
            &[("authorization", &bearer(a)), ("authorization", &bearer(b))],
        )
        .await;
        assert_invalid_token(&r);
    }
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_token_longer_than_8_kib_gets_401_before_any_work() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    // Validly signed, but too long: the padding is a claim.
    let mut c = claims("alice");
    c["pad"] = json!("p".repeat(8 * 1024));
    let long = mint(&c);
    assert!(long.len() > 8 * 1024);
    let r = get_with(&gate.url("/api/x"), &long).await;
    assert_invalid_token(&r);
    assert!(
        r.header("www-authenticate").unwrap().contains("too long"),
        "{:?}",
        r.header("www-authenticate")
    );
    // Garbage of the same size.
    let r = get_with(&gate.url("/api/x"), &"x".repeat(8 * 1024 + 1)).await;
    assert_invalid_token(&r);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_bad_path_gets_400() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let r = get_with(&gate.url("/a/%2e%2e/b"), &token).await;
    assert_refusal(&r, 400);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_store_that_cannot_answer_gets_503_with_retry_after_and_never_forwards() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    // Never asked for before the breakage, so not in the verdict cache: the store must
    // answer for it. (A cached verdict may serve on while the feed is current: no
    // revocation can be acknowledged by a store that cannot write.)
    let cold = login(&gate, "alice").await;
    assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
    drop_valid_token_table(&gate);
    let before = backend.count();
    let r = get_with(&gate.url("/api/x"), &cold).await;
    assert_refusal(&r, 503);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(r.headers.contains_key(RETRY_AFTER));
    // A logout cannot pass either.
    let r = post_with(&gate.url("/logout"), &token).await;
    assert_refusal(&r, 503);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    backend.assert_untouched_because(before, "fail closed: nothing forwarded");
}

#[tokio::test]
async fn a_backend_that_refuses_the_connection_gets_502() {
    let backend = Backend::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gate = Gate::start_config(&backend, &config_with_upstream(&dead.to_string())).await;
    // A token the gate knows (the capture route cannot reach the backend).
    let token = mint(&claims("alice"));
    let verified = gate.app.policy().verifier.verify(&token).unwrap();
    gate.app
        .strategy
        .admit(&verified, Default::default())
        .await
        .unwrap();
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_refusal(&r, 502);
    let r = get(&gate.url("/public/x"), &[]).await;
    assert_refusal(&r, 502);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_backend_that_hangs_up_without_answering_gets_502() {
    let backend = Backend::start().await;
    // A backend that accepts and closes every connection at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let hangups = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let gate = Gate::start_config(&backend, &config_with_upstream(&rude.to_string())).await;
    let token = mint(&claims("alice"));
    let verified = gate.app.policy().verifier.verify(&token).unwrap();
    gate.app
        .strategy
        .admit(&verified, Default::default())
        .await
        .unwrap();
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_refusal(&r, 502);
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    backend.assert_untouched(0);
    hangups.abort();
}

#[tokio::test]
async fn every_strategy_fails_closed_when_its_table_is_gone() {
    for (strategy, table) in [
        ("allowlist", "valid_token"),
        ("denylist", "invalid_token"),
        ("denylist", "user_status"),
        ("user-status", "user_status"),
    ] {
        let backend = Backend::start().await;
        let gate = Gate::start_strategy(&backend, strategy).await;
        let token = login(&gate, "alice").await;
        // Not in the verdict cache: the store must answer for it.
        let cold = login(&gate, "alice").await;
        assert_eq!(
            get_with(&gate.url("/api/x"), &token).await.status,
            200,
            "{strategy}"
        );
        let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
        conn.execute_batch(&format!("DROP TABLE {table}")).unwrap();
        let before = backend.count();
        let r = get_with(&gate.url("/api/x"), &cold).await;
        assert_eq!(r.status, 503, "{strategy} without {table}: {:?}", r.body);
        assert_refusal(&r, 503);
        assert!(r.header("retry-after").is_some(), "{strategy}");
        backend.assert_untouched_because(before, &format!("{strategy} without {table} forwarded"));
    }
}

#[tokio::test]
async fn a_backend_slower_than_the_timeout_gets_504() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let started = Instant::now();
    let r = get_with(&gate.url("/slow"), &token).await;
    assert_refusal(&r, 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the 1 s timeout was not applied: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn refusals_carry_an_x_request_id() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get(&gate.url("/api/x"), &[]).await;
    assert_no_token(&r);
    let id = r.header("x-request-id").expect("a 401 has an X-Request-Id");
    assert!(!id.is_empty());
    let r = get(&gate.url("/api/x"), &[("x-request-id", "client-id-42")]).await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-id-42"));
    let r = ask(
        &gate,
        "GET /a/../b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    r.assert_refusal(400);
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_token_cookie_sent_twice_gets_401_invalid_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let alice = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let before = backend.count();
    // The cookie source alone works...
    let r = get(
        &gate.url("/api/x"),
        &[("cookie", &format!("access_token={alice}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().all("x-user-id"), vec!["alice"]);
    // ...but two of them, in one header or two, are ambiguous.
    let before_twice = backend.count();
    for cookies in [
        vec![format!("access_token={alice}; access_token={bob}")],
        vec![
            format!("access_token={alice}"),
            format!("access_token={bob}"),
        ],
    ] {
        let headers: Vec<(&str, &str)> = cookies.iter().map(|c| ("cookie", c.as_str())).collect();
        let r = get(&gate.url("/api/x"), &headers).await;
        assert_invalid_token(&r);
    }
    backend.assert_untouched(before_twice);
    assert_eq!(before_twice, before + 1);
}

#[tokio::test]
async fn a_token_whose_user_claim_is_not_a_clean_header_value_gets_401() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    // (A non-negative integer is a user id, SPEC §14: -42 and 4.2 are not.)
    for sub in [
        json!(""),
        json!("alice\r\nX-Admin: 1"),
        json!(-42),
        json!(4.2),
        json!(null),
    ] {
        let mut c = claims("alice");
        c["sub"] = sub.clone();
        let r = get_with(&gate.url("/api/x"), &mint(&c)).await;
        assert_invalid_token(&r);
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            !challenge.contains("revoked"),
            "sub {sub}: refused only as unknown, not as an invalid user: {challenge}"
        );
    }
    backend.assert_untouched(0);
}

// ---------------------------------------------------------------------------------
// 2. Forged identity headers
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_sent_x_user_id_in_any_spelling_is_replaced_by_the_token_user() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let auth = bearer(&token);
    let forgeries: Vec<Vec<(&str, &str)>> = vec![
        vec![("X-User-Id", "admin")],
        vec![("x-user-id", "admin")],
        vec![("X_User_Id", "admin")],
        vec![("x_user_id", "admin")],
        vec![("X-USER-ID", "admin")],
        vec![("X-User-Id", "admin"), ("X-User-Id", "root")],
        vec![("X-User-Id", "admin, alice")],
        vec![("X-User-Id", "admin"), ("X_User_Id", "root")],
    ];
    for forged in forgeries {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(forged.iter().copied());
        let before = backend.count();
        let r = get(&gate.url("/api/x"), &headers).await;
        assert_eq!(r.status, 200, "{forged:?}");
        assert_eq!(backend.count(), before + 1);
        let seen = backend.last();
        assert_eq!(seen.all("x-user-id"), vec!["alice"], "{forged:?}");
        assert!(seen.all("x_user_id").is_empty(), "{forged:?}");
    }
}

#[tokio::test]
async fn a_client_sent_claim_header_is_removed_when_the_token_has_no_such_claim() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get(
        &gate.url("/api/x"),
        &[
            ("authorization", &bearer(&token)),
            ("X-User-Email", "admin@evil.example"),
            ("x_user_email", "admin@evil.example"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert!(seen.all("x-user-email").is_empty(), "{:?}", seen.headers);
    assert!(seen.all("x_user_email").is_empty(), "{:?}", seen.headers);
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn a_client_sent_claim_header_is_replaced_by_the_token_claim() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = token_with_email(&gate, "carol", "carol@example.com").await;
    let r = get(
        &gate.url("/api/x"),
        &[
            ("authorization", &bearer(&token)),
            ("X-User-Email", "admin@evil.example"),
            ("X-USER-EMAIL", "root@evil.example"),
            ("X_User_Email", "admin@evil.example"),
            ("X-User-Id", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.all("x-user-email"), vec!["carol@example.com"]);
    assert!(seen.all("x_user_email").is_empty(), "{:?}", seen.headers);
    assert_eq!(seen.all("x-user-id"), vec!["carol"]);
}

#[tokio::test]
async fn public_routes_never_carry_an_identity_header() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = token_with_email(&gate, "carol", "carol@example.com").await;
    let auth = bearer(&token);
    for path in ["/public/x", "/healthz"] {
        for with_token in [false, true] {
            let mut headers = vec![
                ("X-User-Id", "admin"),
                ("x_user_id", "admin"),
                ("X-User-Email", "admin@evil.example"),
                ("X_USER_EMAIL", "admin@evil.example"),
            ];
            if with_token {
                headers.push(("authorization", auth.as_str()));
            }
            let before = backend.count();
            let r = get(&gate.url(path), &headers).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(backend.count(), before + 1);
            let seen = backend.last();
            for name in ["x-user-id", "x_user_id", "x-user-email", "x_user_email"] {
                assert!(
                    seen.all(name).is_empty(),
                    "{path} (token: {with_token}): {name} reached the backend: {:?}",
                    seen.headers
                );
            }
        }
    }
}

#[tokio::test]
async fn a_connection_header_naming_x_user_id_cannot_remove_the_injected_header() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    for connection in ["close, X-User-Id", "X-User-Id", "x_user_id, keep-alive"] {
        let r = get(
            &gate.url("/api/x"),
            &[
                ("authorization", &bearer(&token)),
                ("connection", connection),
                ("x-user-id", "admin"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{connection}");
        let seen = backend.last();
        assert_eq!(seen.all("x-user-id"), vec!["alice"], "{connection}");
    }
}

#[tokio::test]
async fn a_connection_header_naming_authorization_drops_the_credentials() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let r = get(
        &gate.url("/api/x"),
        &[
            ("authorization", &bearer(&token)),
            ("connection", "authorization"),
        ],
    )
    .await;
    assert_no_token(&r);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn capture_routes_never_carry_a_client_identity_header() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = send(
        "POST",
        &gate.url("/login"),
        &[
            ("content-type", "application/json"),
            ("X-User-Id", "admin"),
            ("x_user_id", "admin"),
            ("X-User-Email", "admin@evil.example"),
        ],
        json!({"user": "alice"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.uri, "/login");
    for name in ["x-user-id", "x_user_id", "x-user-email"] {
        assert!(seen.all(name).is_empty(), "{name}: {:?}", seen.headers);
    }
}

// ---------------------------------------------------------------------------------
// 3. Path tricks
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn dot_segments_and_encoded_slashes_get_400_and_never_reach_the_backend() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    for path in [
        "/a/../b",
        "/%2e%2e/b",
        "/a/%2E%2e/b",
        "/a/./b",
        "/a/.%2e/b",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/public/..;/secret",
        "/public/%2e%2e/secret",
        "/public/%2e%2e;x/secret",
        "/public/../api/x",
        "/healthz/../api/x",
        "/login/../api/x",
    ] {
        for with_token in [false, true] {
            let auth = if with_token {
                format!("Authorization: Bearer {token}\r\n")
            } else {
                String::new()
            };
            let r = ask(
                &gate,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
            )
            .await;
            r.assert_refusal(400);
        }
    }
    backend.assert_untouched(before);
}

#[tokio::test]
async fn logout_look_alikes_without_a_token_are_protected_routes() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    for path in [
        "/LOGOUT",
        "/logout/",
        "/%6cogout",
        "/Logout-All",
        "/logout-all/",
    ] {
        let r = send("POST", &gate.url(path), &[], Bytes::new()).await;
        assert_no_token(&r);
    }
    backend.assert_untouched(before);
    // Nothing was revoked.
    assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
    assert_eq!(rows(&gate, "valid_token"), 1);
}

#[tokio::test]
async fn logout_look_alikes_with_a_token_are_forwarded_and_revoke_nothing() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    for path in ["/LOGOUT", "/logout/", "/%6cogout"] {
        let before = backend.count();
        let r = post_with(&gate.url(path), &token).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(backend.count(), before + 1);
        assert_eq!(backend.last().uri, path);
        assert_eq!(backend.last().all("x-user-id"), vec!["alice"]);
    }
    assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
}

#[tokio::test]
async fn logout_with_another_method_gets_405_with_allow_post() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    for path in ["/logout", "/logout-all"] {
        let r = get_with(&gate.url(path), &token).await;
        assert_refusal(&r, 405);
        assert_eq!(r.header("allow").as_deref(), Some("POST"));
    }
    backend.assert_untouched(before);
    assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 4. Forwarding
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn method_path_and_query_pass_through_exactly() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let auth = bearer(&token);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        for target in [
            "/api/x?a=1&b=%20",
            "/api/x",
            "/api/x?",
            "/api/%7Euser/a%20b?q=%2F&r=a+b&s",
            "//api/x?a=%2e%2e",
            "/api/x;param=1",
        ] {
            let r = send(
                method,
                &gate.url(target),
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
            assert_eq!(r.status, 200, "{method} {target}");
            let seen = backend.last();
            assert_eq!(seen.method.as_str(), method);
            assert_eq!(seen.uri, target, "{method} {target}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5_mib_request_body_arrives_intact() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let body: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let sha = hex::encode(Sha256::digest(&body));
    let r = send(
        "POST",
        &gate.url("/api/upload"),
        &[
            ("authorization", &bearer(&token)),
            ("content-type", "application/octet-stream"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.body_len, body.len());
    assert_eq!(seen.body_sha256, sha);
    assert_eq!(r.json()["body_len"], body.len());
    assert_eq!(r.json()["body_sha256"], sha);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5_mib_response_body_arrives_intact() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get_with(&gate.url("/stream/5242880"), &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 5_242_880);
    assert!(r.body.iter().all(|&b| b == b'z'));
}

#[tokio::test]
async fn a_chunked_request_body_is_reframed_and_arrives_intact() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = ask(
        &gate,
        &format!(
            "POST /api/chunked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/chunked");
    assert_eq!(seen.body_len, 11);
    assert_eq!(
        seen.body_sha256,
        hex::encode(Sha256::digest(b"hello world"))
    );
}

#[tokio::test]
async fn an_absolute_form_request_target_cannot_redirect_the_upstream() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let r = ask(
        &gate,
        &format!(
            "GET http://evil.example/api/abs?q=1 HTTP/1.1\r\nHost: evil.example\r\n\
             Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        backend.count(),
        before + 1,
        "the request reached our backend"
    );
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/abs?q=1");
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
    // And its path is judged like any other.
    let r = ask(
        &gate,
        "GET http://evil.example/public/../api/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    r.assert_refusal(400);
    assert_eq!(backend.count(), before + 1);
}

#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_the_backend() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get(
        &gate.url("/api/x"),
        &[
            ("authorization", &bearer(&token)),
            ("connection", "keep-alive, X-Hop-Named"),
            ("x-hop-named", "secret"),
            ("keep-alive", "timeout=99"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eDp5"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    for name in [
        "x-hop-named",
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            seen.all(name).is_empty(),
            "{name} reached the backend: {:?}",
            seen.headers
        );
    }
    // The gate's own connection to the backend may say keep-alive, never the client's.
    assert!(
        !seen
            .all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("x-hop-named")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.all("x-end-to-end"), vec!["kept"]);
}

#[tokio::test]
async fn an_upgrade_request_header_does_not_reach_the_backend() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let r = ask(
        &gate,
        &format!(
            "GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Upgrade: websocket\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(backend.count(), before + 1);
    let seen = backend.last();
    assert!(seen.all("upgrade").is_empty(), "{:?}", seen.headers);
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_eq!(r.status, 200);
    for name in [
        "keep-alive",
        "proxy-connection",
        "x-backend-private",
        "connection",
    ] {
        assert!(
            !r.headers.contains_key(name),
            "{name} reached the client: {:?}",
            r.headers
        );
    }
    // End-to-end headers of the backend do.
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn client_forwarding_headers_are_replaced() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let auth = bearer(&token);
    for path in ["/api/x", "/public/x"] {
        let r = get(
            &gate.url(path),
            &[
                ("authorization", &auth),
                ("host", "app.example"),
                ("x-forwarded-for", "6.6.6.6"),
                ("X-Forwarded-For", "7.7.7.7"),
                ("forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
                ("x-real-ip", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x_forwarded_for", "6.6.6.6"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        let seen = backend.last();
        assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"], "{path}");
        assert_eq!(seen.all("x-forwarded-proto"), vec!["http"], "{path}");
        assert_eq!(seen.all("x-forwarded-host"), vec!["app.example"], "{path}");
        for name in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-port",
            "x_forwarded_for",
        ] {
            assert!(
                seen.all(name).is_empty(),
                "{path}: {name} reached the backend: {:?}",
                seen.headers
            );
        }
    }
}

#[tokio::test]
async fn forwarding_headers_are_set_when_the_client_sent_none() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.all("x-forwarded-host"), vec![gate.addr.to_string()]);
}

#[tokio::test]
async fn path_and_method_override_headers_never_reach_the_backend() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let auth = bearer(&token);
    for path in ["/api/x", "/public/x"] {
        let r = get(
            &gate.url(path),
            &[
                ("authorization", &auth),
                ("x-original-url", "/admin"),
                ("x-rewrite-url", "/admin"),
                ("x-http-method-override", "DELETE"),
                ("X-HTTP-Method", "DELETE"),
                ("x-method-override", "DELETE"),
            ],
        )
        .await;
        assert_eq!(r.status, 200);
        let seen = backend.last();
        for name in [
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ] {
            assert!(
                seen.all(name).is_empty(),
                "{path}: {name} reached the backend: {:?}",
                seen.headers
            );
        }
    }
}

#[tokio::test]
async fn a_client_request_id_is_forwarded_and_echoed() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get(
        &gate.url("/api/x"),
        &[
            ("authorization", &bearer(&token)),
            ("x-request-id", "req-1234-abcd"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().all("x-request-id"), vec!["req-1234-abcd"]);
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.header("x-request-id").as_deref(), Some("req-1234-abcd"));
}

#[tokio::test]
async fn a_missing_request_id_is_generated_forwarded_and_echoed() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_eq!(r.status, 200);
    let echoed = r.header("x-request-id").expect("an X-Request-Id is echoed");
    assert!(!echoed.is_empty());
    assert_eq!(backend.last().all("x-request-id"), vec![echoed.clone()]);
    // Another request gets another id.
    let again = get_with(&gate.url("/api/x"), &token).await;
    assert_ne!(again.header("x-request-id"), Some(echoed));
}

#[tokio::test]
async fn an_unreasonable_request_id_is_replaced_consistently() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let long = "i".repeat(500);
    let r = get(
        &gate.url("/api/x"),
        &[("authorization", &bearer(&token)), ("x-request-id", &long)],
    )
    .await;
    assert_eq!(r.status, 200);
    let echoed = r.header("x-request-id").unwrap();
    assert_ne!(echoed, long);
    assert_eq!(backend.last().all("x-request-id"), vec![echoed]);
}

// ---------------------------------------------------------------------------------
// 5. Keep-alive and pooled backend connections
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_kept_alive_connection_judges_every_request_on_its_own() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let mut conn = Conn::open(&gate).await;
    conn.send(
        format!("GET /api/first HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let first = conn.response().await;
    assert_eq!(first.status, 200, "{first:?}");
    conn.send(b"GET /api/second HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let second = conn.response().await;
    second.assert_refusal(401);
    assert_eq!(second.header("www-authenticate"), Some(REALM));
    // And a third, authenticated again, on the same connection.
    conn.send(
        format!("GET /api/third HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let third = conn.response().await;
    assert_eq!(third.status, 200, "{third:?}");
    let seen = backend.seen();
    let uris: Vec<_> = seen[before..].iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, vec!["/api/first", "/api/third"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn interleaved_users_over_pooled_backend_connections_keep_their_identities() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let alice = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let before = backend.count();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (user, token) = if i % 2 == 0 {
            ("alice", alice.clone())
        } else {
            ("bob", bob.clone())
        };
        let url = gate.url(&format!("/api/x?n={i}&u={user}"));
        tasks.push(tokio::spawn(async move {
            get(
                &url,
                &[
                    ("authorization", &bearer(&token)),
                    ("x-user-id", if user == "alice" { "bob" } else { "alice" }),
                ],
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), before + 40);
    for s in &seen[before..] {
        let user = s.uri.rsplit("u=").next().unwrap();
        assert_eq!(s.all("x-user-id"), vec![user], "{}", s.uri);
    }
}

#[tokio::test]
async fn a_kept_alive_client_reuses_one_backend_connection() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let mut conn = Conn::open(&gate).await;
    let before = backend.connections();
    for i in 0..5 {
        let request =
            format!("GET /api/n{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        conn.send(request.as_bytes()).await;
        let reply = conn.response().await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // The login's backend connection idled when its client connection ended, and this
    // client connection took it and kept it: no new connection at all.
    assert_eq!(
        backend.connections(),
        before,
        "the backend saw new connections"
    );
    assert_eq!(backend.count(), 6);
}

#[tokio::test]
async fn a_backend_connection_outlives_its_client_connection_for_the_next_client() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    for _ in 0..4 {
        // `get` opens a new client connection each time.
        assert_eq!(get_with(&gate.url("/api/x"), &token).await.status, 200);
    }
    assert_eq!(backend.connections(), 1);
}

/// A keep-alive backend that closes each connection shortly after answering, as one
/// whose idle timeout is short does: counts its connections.
async fn closing_backend(linger: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(linger).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_backend_connection_the_backend_closed_is_replaced_without_a_502() {
    let (addr, accepted) = closing_backend(Duration::from_millis(20)).await;
    let config = format!(
        "[upstream]\nurl = \"http://{addr}\"\n[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\
         [store]\nsqlite_path = \"{{db}}\"\n[routes]\npublic = [\"/public/*\"]\n"
    );
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &config).await;
    let mut conn = Conn::open(&gate).await;
    for i in 0..3 {
        if i > 0 {
            // Past the backend's linger: the kept connection is closed by now.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        conn.send(b"GET /public/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let reply = conn.response().await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------
// 6. HTTP/2
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn http2_with_prior_knowledge_is_served_and_forwarded() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::builder()
        .uri(gate.url("/api/h2?x=1"))
        .header("authorization", bearer(&token))
        .header("x-user-id", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/h2?x=1");
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
    assert_eq!(seen.all("x-forwarded-host"), vec![gate.addr.to_string()]);
    assert!(!seen.all("host").is_empty(), "{:?}", seen.headers);

    // A refusal over HTTP/2 is the same refusal.
    let before = backend.count();
    let request = Request::builder()
        .uri(gate.url("/api/h2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[WWW_AUTHENTICATE], REALM);
    backend.assert_untouched(before);
}

/// An HTTP/2 (prior knowledge) client.
fn h2_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_with_more_than_100_header_fields_gets_431() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let mut request = Request::builder()
        .uri(gate.url("/public/x"))
        .header("authorization", bearer(&token));
    for i in 0..120 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    let response = h2_client()
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_framing_header_spelled_with_an_underscore_gets_400() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let before = backend.count();
    for name in ["transfer_encoding", "content_length"] {
        let request = Request::builder()
            .method("POST")
            .uri(gate.url("/public/x"))
            .header(name, "chunked")
            .body(Full::new(Bytes::from_static(b"0\r\n\r\n")))
            .unwrap();
        let response = h2_client().request(request).await.unwrap();
        assert_eq!(response.status(), 400, "{name}");
    }
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_cookie_fields_reach_the_backend_as_one_cookie_line() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let request = Request::builder()
        .uri(gate.url("/public/x"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = h2_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(backend.last().all("cookie"), vec!["a=1; b=2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_http2_connection_holds_at_most_http2_max_streams_backend_connections() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &config_with("server", "http2_max_streams = 4")).await;
    let token = login(&gate, "alice").await;
    let before = backend.connections();
    let client = h2_client();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let request = Request::builder()
            .uri(gate.url("/sleep/300"))
            .header("authorization", bearer(&token))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Streams opened before the client read our SETTINGS may be refused
            // (REFUSED_STREAM): that is the limit at work, and safe to retry.
            client.request(request).await.map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(status) => assert_eq!(status, 200),
            Err(e) => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
        }
    }
    let opened = backend.connections() - before;
    assert!(
        opened <= 4,
        "one client connection opened {opened} backend connections"
    );
}

#[tokio::test]
async fn an_upgrade_to_h2c_is_answered_over_http1_and_not_forwarded() {
    // HTTP/2 cleartext is prior knowledge only (README): no 101 Switching Protocols.
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let request = format!(
        "GET /api/h2c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\
         Connection: close\r\n\r\n"
    );
    let reply = raw(gate.addr, request.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/h2c");
    assert!(seen.all("upgrade").is_empty() && seen.all("http2-settings").is_empty());
}

// ---------------------------------------------------------------------------------
// 7. Header limits and the admin probes
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn more_than_100_request_headers_get_431() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let mut request =
        format!("GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n");
    for i in 0..120 {
        request.push_str(&format!("X-Filler-{i}: v\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let text = raw(gate.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    backend.assert_untouched(before);
}

#[tokio::test]
async fn ninety_request_headers_are_still_served() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let mut request =
        format!("GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n");
    for i in 0..87 {
        request.push_str(&format!("X-Filler-{i}: v\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let r = ask(&gate, &request).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(backend.last().all("x-filler-86"), vec!["v"]);
}

#[tokio::test]
async fn the_admin_probes_answer_200_while_the_store_is_fine() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get(&format!("http://{}/healthz", gate.admin), &[]).await;
    assert_eq!(r.status, 200);
    let r = get(&format!("http://{}/readyz", gate.admin), &[]).await;
    assert_eq!(r.status, 200);
    backend.assert_untouched_because(0, "admin probes never reach the backend");
}

#[tokio::test]
async fn readyz_is_503_once_the_store_cannot_answer_and_healthz_stays_200() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    assert_eq!(
        get(&format!("http://{}/readyz", gate.admin), &[])
            .await
            .status,
        200
    );
    corrupt_schema(&gate);
    let r = get(&format!("http://{}/readyz", gate.admin), &[]).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    let r = get(&format!("http://{}/healthz", gate.admin), &[]).await;
    assert_eq!(r.status, 200);
    // The request path fails closed too.
    let before = backend.count();
    let r = get_with(&gate.url("/api/x"), &token).await;
    assert_refusal(&r, 503);
    assert!(r.header("retry-after").is_some());
    backend.assert_untouched(before);
}

// ---------------------------------------------------------------------------------
// 8. Slowloris
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (received, closed) = read_until_close(&mut stream, Duration::from_secs(15)).await;
    let elapsed = started.elapsed();
    assert!(
        closed,
        "the connection was still open after 15 s: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        elapsed >= Duration::from_secs(8),
        "closed too early ({elapsed:?}): not the header-read timeout"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text:?}"
    );
    backend.assert_untouched(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_alive_connection_is_closed_by_the_header_read_timeout() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let mut conn = Conn::open(&gate).await;
    conn.send(b"GET /public/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let first = conn.response().await;
    assert_eq!(first.status, 200);
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(15), conn.stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection was kept open: {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn two_host_headers_are_a_400_and_never_forwarded() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let request = format!(
        "GET /api HTTP/1.1\r\nHost: app.example\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let reply = raw(
        gate.addr,
        request.as_bytes(),
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    backend.assert_untouched(before);
}
