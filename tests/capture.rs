//! Capture (SPEC §2): tokengate learns the tokens an unmodified backend issues by
//! watching its login responses, in all three forms (JSON field, response header,
//! `Set-Cookie`), stores them hashed with their session metadata, and passes every
//! login response to the client unchanged, whether or not it captured anything.

mod common;
use common::*;

use std::sync::{Arc, Mutex};

use serde_json::json;
use sha2::{Digest, Sha256};

/// A backend whose minter remembers every token it issued, so a test can rebuild the
/// exact bytes the backend sent.
async fn recording_backend(secret: &'static str) -> (Backend, Arc<Mutex<Vec<String>>>) {
    let minted: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = minted.clone();
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let backend = Backend::start_with(Arc::new(move |user: &str| {
        let token = mint_with(jsonwebtoken::Algorithm::HS256, &key, &claims(user), None);
        log.lock().unwrap().push(token.clone());
        token
    }))
    .await;
    (backend, minted)
}

/// The one token the backend issued.
fn only(minted: &Arc<Mutex<Vec<String>>>) -> String {
    let minted = minted.lock().unwrap();
    assert_eq!(
        minted.len(),
        1,
        "the backend issued {} tokens",
        minted.len()
    );
    minted[0].clone()
}

/// POSTs a login for `user` to a capture route, with a recognisable user agent.
async fn post_login(gate: &Gate, path: &str, user: &str) -> Reply {
    send(
        "POST",
        &gate.url(path),
        &[
            ("content-type", "application/json"),
            ("user-agent", "capture-test/2.0"),
        ],
        json!({ "user": user }).to_string(),
    )
    .await
}

/// One `valid_token` row, as stored.
#[derive(Debug)]
struct Row {
    token_hash: Vec<u8>,
    user_id: String,
    expires_at: i64,
    user_agent: Option<String>,
    client_addr: Option<String>,
}

fn valid_rows(gate: &Gate) -> Vec<Row> {
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT token_hash, user_id, expires_at, user_agent, client_addr FROM valid_token")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            token_hash: r.get(0)?,
            user_id: r.get(1)?,
            expires_at: r.get(2)?,
            user_agent: r.get(3)?,
            client_addr: r.get(4)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// SHA-256 of a token's signing input (`header.payload`), the store key of SPEC §1.
fn signing_input_hash(token: &str) -> Vec<u8> {
    let input = &token[..token.rfind('.').unwrap()];
    Sha256::digest(input.as_bytes()).to_vec()
}

/// Asserts that neither the raw token nor its signature appears in any file of the
/// database (the main file, its WAL and its shared-memory index).
fn assert_token_not_stored(gate: &Gate, token: &str) {
    let signature = &token[token.rfind('.').unwrap() + 1..];
    let mut checked = 0;
    for entry in std::fs::read_dir(gate.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("tokengate.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in [token.as_bytes(), signature.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} holds the raw token"
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no database file found");
}

/// The form a capture route reads the token from.
#[derive(Clone, Copy)]
enum Form {
    Json,
    Header,
    Cookie,
}

/// Logs in through the capture route of `form`, checks the response is the backend's,
/// then checks the token works, is stored hashed with its metadata, and nowhere raw.
async fn capture_works(form: Form) {
    let (backend, minted) = recording_backend(SECRET).await;
    let gate = Gate::start(&backend).await;
    let path = match form {
        Form::Json => "/login",
        Form::Header => "/login-header",
        Form::Cookie => "/login-cookie",
    };
    let r = post_login(&gate, path, "carol").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let token = only(&minted);
    let received = match form {
        Form::Json => r.json()["access_token"].as_str().unwrap().to_string(),
        Form::Header => r.header("x-access-token").unwrap(),
        Form::Cookie => {
            let cookie = r.header("set-cookie").unwrap();
            cookie
                .strip_prefix("access_token=")
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(
        received, token,
        "the client must get the token the backend issued"
    );
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);

    // The token now works through the proxy.
    let before = backend.count();
    let r = match form {
        // A captured cookie is sent back as a cookie, the way a browser would.
        Form::Cookie => {
            get(
                &gate.url("/api/me"),
                &[("cookie", &format!("access_token={token}"))],
            )
            .await
        }
        _ => get_with(&gate.url("/api/me"), &token).await,
    };
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(backend.count(), before + 1);
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/me");
    assert_eq!(seen.all("x-user-id"), vec!["carol"]);

    // One row, keyed by the hash of the signing input, with the session metadata.
    let rows = valid_rows(&gate);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.token_hash.len(), 32);
    assert_eq!(row.token_hash, signing_input_hash(&token));
    assert_eq!(row.user_id, "carol");
    let exp = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token)
        .unwrap()
        .claims["exp"]
        .as_i64()
        .unwrap();
    assert_eq!(row.expires_at, exp);
    assert_eq!(row.user_agent.as_deref(), Some("capture-test/2.0"));
    assert_eq!(row.client_addr.as_deref(), Some("127.0.0.1"));
    assert_token_not_stored(&gate, &token);
}

#[tokio::test]
async fn a_token_captured_from_a_json_body_works_and_is_stored_hashed_with_its_session() {
    capture_works(Form::Json).await;
}

#[tokio::test]
async fn a_token_captured_from_a_response_header_works_and_is_stored_hashed_with_its_session() {
    capture_works(Form::Header).await;
}

#[tokio::test]
async fn a_token_captured_from_a_set_cookie_works_and_is_stored_hashed_with_its_session() {
    capture_works(Form::Cookie).await;
}

#[tokio::test]
async fn a_json_login_response_reaches_the_client_unchanged() {
    let (backend, minted) = recording_backend(SECRET).await;
    let gate = Gate::start(&backend).await;
    let r = post_login(&gate, "/login", "alice").await;
    assert_eq!(r.status, 200);
    let token = only(&minted);
    let sent = json!({"access_token": token, "token_type": "Bearer"}).to_string();
    assert_eq!(
        r.body,
        sent.as_bytes(),
        "the body must be the backend's, byte for byte"
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("x-backend-header").as_deref(), Some("kept"));
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, sent.len().to_string());
    }
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
}

#[tokio::test]
async fn a_header_login_response_reaches_the_client_unchanged() {
    let (backend, minted) = recording_backend(SECRET).await;
    let gate = Gate::start(&backend).await;
    let r = post_login(&gate, "/login-header", "alice").await;
    assert_eq!(r.status, 200);
    let token = only(&minted);
    assert_eq!(r.header("x-access-token"), Some(token));
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
}

#[tokio::test]
async fn a_cookie_login_response_reaches_the_client_unchanged() {
    let (backend, minted) = recording_backend(SECRET).await;
    let gate = Gate::start(&backend).await;
    let r = post_login(&gate, "/login-cookie", "alice").await;
    assert_eq!(r.status, 200);
    let token = only(&minted);
    let cookies: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cookies,
        vec![format!(
            "access_token={token}; Path=/; HttpOnly; SameSite=Lax"
        )]
    );
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
}

#[tokio::test]
async fn a_failed_login_is_passed_through_unchanged_and_its_token_is_not_captured() {
    let (backend, minted) = recording_backend(SECRET).await;
    let gate = Gate::start(&backend).await;
    let r = post_login(&gate, "/login-fail", "alice").await;
    let token = only(&minted);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        json!({ "access_token": token }).to_string().as_bytes(),
        "the backend's refusal must reach the client as it was sent"
    );
    assert_eq!(
        r.header("www-authenticate"),
        None,
        "tokengate must not dress up the backend's answer"
    );
    assert_eq!(rows(&gate, "valid_token"), 0);
    assert_eq!(gate.app.metrics.capture_count("stored"), 0);

    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), &token).await;
    assert_refusal(&r, 401);
    backend.assert_untouched_because(before, "the refusal must not reach the backend");
}

#[tokio::test]
async fn a_token_that_does_not_verify_is_not_captured_and_the_login_still_passes_unchanged() {
    let (backend, minted) = recording_backend("another-secret-0123456789abcdef012345").await;
    let gate = Gate::start(&backend).await;
    let r = post_login(&gate, "/login", "mallory").await;
    let token = only(&minted);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"access_token": token, "token_type": "Bearer"})
            .to_string()
            .as_bytes()
    );
    assert_eq!(r.header("x-backend-header").as_deref(), Some("kept"));
    assert_eq!(gate.app.metrics.capture_count("invalid"), 1);
    assert_eq!(gate.app.metrics.capture_count("stored"), 0);
    assert_eq!(rows(&gate, "valid_token"), 0);

    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), &token).await;
    assert_refusal(&r, 401);
    backend.assert_untouched_because(before, "the refusal must not reach the backend");
}

#[tokio::test]
async fn a_two_mebibyte_login_body_passes_through_intact_and_is_not_captured() {
    let (backend, minted) = recording_backend(SECRET).await;
    let gate = Gate::start(&backend).await;
    let r = post_login(&gate, "/big-login", "alice").await;
    let token = only(&minted);
    assert_eq!(r.status, 200);
    let sent = json!({"padding": "x".repeat(2 * 1024 * 1024), "access_token": token}).to_string();
    assert_eq!(r.body.len(), sent.len());
    assert!(
        r.body == sent.as_bytes(),
        "the big body must pass byte for byte"
    );
    assert_eq!(gate.app.metrics.capture_count("too_large"), 1);
    assert_eq!(gate.app.metrics.capture_count("stored"), 0);
    assert_eq!(rows(&gate, "valid_token"), 0);

    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), &token).await;
    assert_refusal(&r, 401);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_capture_route_is_forwarded_without_authentication_or_a_client_sent_identity() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = send(
        "POST",
        &gate.url("/login"),
        &[
            ("content-type", "application/json"),
            ("x-user-id", "admin"),
            ("X-USER-ID", "root"),
            ("x_user_id", "admin"),
            ("x-user-email", "admin@example.com"),
        ],
        json!({"user": "alice"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(backend.count(), 1);
    let seen = backend.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/login");
    for name in ["x-user-id", "x_user_id", "x-user-email"] {
        assert!(
            seen.all(name).is_empty(),
            "{name} reached the backend: {:?}",
            seen.all(name)
        );
    }
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
}

#[tokio::test]
async fn a_capture_route_is_forwarded_even_with_a_garbage_bearer_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = send(
        "POST",
        &gate.url("/login"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer not.a.jwt"),
        ],
        json!({"user": "alice"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(backend.count(), 1);
    assert!(backend.last().all("x-user-id").is_empty());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let r = get_with(&gate.url("/api/me"), &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().all("x-user-id"), vec!["alice"]);
}

#[tokio::test]
async fn a_get_to_a_post_capture_path_is_treated_as_a_protected_route() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = get(&gate.url("/login"), &[]).await;
    assert_refusal(&r, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"tokengate\"")
    );
    backend.assert_untouched_because(0, "the refusal must not reach the backend");

    // With a live token it is an ordinary protected request: forwarded with the
    // identity, and whatever the backend answers is not captured.
    let token = login(&gate, "alice").await;
    assert_eq!(rows(&gate, "valid_token"), 1);
    let r = get_with(&gate.url("/login"), &token).await;
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", "/login"));
    assert_eq!(seen.all("x-user-id"), vec!["alice"]);
    assert_eq!(rows(&gate, "valid_token"), 1, "a GET must not capture");
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
}
