//! Token conventions of real issuers (SPEC §14): `jwt.required_claims` (simplejwt signs
//! its refresh tokens with the same key and marks them `token_type: refresh`),
//! `jwt.required_typ` (RFC 9068 `at+jwt`), and numeric user ids forwarded as decimal
//! text. Every refusal proves the backend saw nothing.

mod common;
use common::*;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The default config with extra `[jwt]` keys.
fn config(strategy: &str, jwt: &str) -> GateConfig {
    GateConfig::default().strategy(strategy).set("jwt", jwt)
}

fn with_type(user: &str, token_type: &str) -> String {
    mint(&token_of_type(user, token_type, 600))
}

fn with_typ(claims: &Value, typ: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(String::from);
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

async fn refused(gate: &Gate, backend: &Backend, token: &str, what: &str) -> Reply {
    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), token).await;
    assert_refusal(&r, 401);
    backend.assert_untouched_because(before, &format!("{what}: the backend saw it"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simplejwt_refresh_token_is_refused_everywhere_when_access_is_required() {
    for strategy in ["allowlist", "denylist", "user-status"] {
        // A backend whose login answers with a refresh-type token, as a misconfigured
        // capture (or a client posting the wrong token) would produce.
        let minter: Minter = Arc::new(|user: &str| with_type(user, "refresh"));
        let backend = Backend::start_with(minter).await;
        let text = config(strategy, "required_claims = { token_type = \"access\" }");
        let gate = Gate::start_config(&backend, &text).await;

        // At capture: verified like a request token, so not stored.
        let refresh_token = login(&gate, "alice").await;
        assert_eq!(gate.app.metrics.capture_count("invalid"), 1, "{strategy}");
        let r = refused(&gate, &backend, &refresh_token, strategy).await;
        let challenge = r.header("www-authenticate").unwrap();
        assert!(challenge.contains("token_type"), "{strategy}: {challenge}");
        // Out of band too.
        let e = gate
            .app
            .policy()
            .verifier
            .verify(&refresh_token)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the token lacks the required claim \"token_type\" (jwt.required_claims)"
        );

        // An access token passes where the strategy lets it (the allowlist needs it
        // captured or registered first).
        let access = with_type("alice", "access");
        if strategy == "allowlist" {
            let verified = gate.app.policy().verifier.verify(&access).unwrap();
            gate.app
                .strategy
                .admit(&verified, Default::default())
                .await
                .unwrap();
        }
        assert_eq!(
            get_with(&gate.url("/api/me"), &access).await.status,
            200,
            "{strategy}"
        );
        // A claim held in an array counts; another value does not.
        let listed = mint(
            &json!({"sub": "bob", "iat": now(), "exp": now() + 600, "token_type": ["x", "access"]}),
        );
        assert!(gate.app.policy().verifier.verify(&listed).is_ok());
        let other = with_type("bob", "id");
        assert!(gate.app.policy().verifier.verify(&other).is_err());
        // /logout with a refresh token is refused as well.
        let r = post_with(&gate.url("/logout"), &refresh_token).await;
        assert_refusal(&r, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_typ_is_compared_as_a_media_type() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &config("denylist", "required_typ = \"at+jwt\"")).await;
    let c = claims("alice");
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let token = with_typ(&c, Some(typ));
        assert_eq!(
            get_with(&gate.url("/api/me"), &token).await.status,
            200,
            "{typ}"
        );
    }
    for typ in [None, Some("JWT"), Some("jwt+at")] {
        let token = with_typ(&c, typ);
        let r = refused(&gate, &backend, &token, &format!("{typ:?}")).await;
        assert!(r.header("www-authenticate").unwrap().contains("typ"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_user_claim_is_forwarded_as_decimal_text() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &config("denylist", "user_claim = \"user_id\"")).await;
    let base = |id: Value| json!({"user_id": id, "iat": now(), "exp": now() + 600});
    let token = mint(&base(json!(42)));
    assert_eq!(get_with(&gate.url("/api/me"), &token).await.status, 200);
    assert_eq!(backend.last().all("x-user-id"), ["42"]);
    let big = mint(&base(json!(u64::MAX)));
    assert_eq!(get_with(&gate.url("/api/me"), &big).await.status, 200);
    assert_eq!(backend.last().all("x-user-id"), [u64::MAX.to_string()]);
    for bad in [
        json!(-1),
        json!(4.2),
        json!(42.0),
        json!(1e30),
        json!(true),
        json!(null),
    ] {
        let token = mint(&base(bad.clone()));
        let r = refused(&gate, &backend, &token, &bad.to_string()).await;
        assert!(
            r.header("www-authenticate").unwrap().contains("user_id"),
            "{bad}"
        );
    }
    // Beyond u64, written as an integer: serde reads it as a float, and it is refused.
    let payload = format!(
        r#"{{"user_id":18446744073709551616,"iat":{0},"exp":{1}}}"#,
        now(),
        now() + 600
    );
    let raw: Value = serde_json::from_str(&payload).unwrap();
    let token = mint(&raw);
    refused(&gate, &backend, &token, "u64::MAX + 1").await;
}

#[test]
fn the_new_keys_are_checked_at_load_by_dotted_key() {
    for (jwt, key) in [
        (
            "required_claims = { token_type = 1 }",
            "jwt.required_claims.token_type",
        ),
        (
            "required_claims = { token_type = \"\" }",
            "jwt.required_claims.token_type",
        ),
        (
            "required_claims = { exp = \"1\" }",
            "jwt.required_claims.exp",
        ),
        (
            "required_claims = { sub = \"x\" }",
            "jwt.required_claims.sub",
        ),
        ("required_typ = \"\"", "jwt.required_typ"),
        ("required_typ = 5", "jwt.required_typ"),
    ] {
        let text = fill(
            &config("allowlist", jwt).to_string(),
            NO_BACKEND,
            std::path::Path::new("/tmp/unused.db"),
        );
        let e = tokengate::config::Config::from_toml(&text, std::path::Path::new(".")).unwrap_err();
        assert_eq!(e.key, key, "{jwt}: {e}");
    }
}

/// FastAPI's tutorial shape (no `iat`) under a cut-off strategy: the capture is counted
/// as an unusable token (not a store error), and the refusal as `invalid_token`, not as
/// a revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_iat_under_denylist_is_invalid_not_a_store_error() {
    let minter: Minter = Arc::new(|user: &str| mint(&json!({"sub": user, "exp": now() + 600})));
    let backend = Backend::start_with(minter).await;
    let gate = Gate::start_config(&backend, &config("denylist", "")).await;
    let token = login(&gate, "alice").await;
    assert_eq!(gate.app.metrics.capture_count("invalid"), 1);
    assert_eq!(gate.app.metrics.capture_count("store_error"), 0);
    let r = refused(&gate, &backend, &token, "no iat").await;
    assert!(r.header("www-authenticate").unwrap().contains("iat"));
    let metrics = get(&format!("http://{}/metrics", gate.admin), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        metrics.contains("tokengate_requests_total{outcome=\"invalid_token\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"revoked\""), "{metrics}");
}
