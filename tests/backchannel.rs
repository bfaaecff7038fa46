//! OIDC Back-Channel Logout 1.0 on `routes.backchannel_logout` (SPEC §13): an identity
//! provider posts a logout token signed with the keys tokengate trusts, and the sessions
//! it names end at once, through the same door as any revocation.

mod common;
use common::*;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ROUTE: &str = "/backchannel-logout";
const ISSUER: &str = "https://idp.test";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The default config with the route on and the issuer and audience checked.
fn config() -> GateConfig {
    GateConfig::default()
        .set("routes", &format!("backchannel_logout = \"{ROUTE}\""))
        .set(
            "jwt",
            &format!("issuer = \"{ISSUER}\"\naudience = [\"api\"]"),
        )
}

/// A backend issuing access tokens of the provider: `iss`, `aud`, and a `sid` made by
/// `sid` for each login.
async fn idp_backend(sid: fn(&str) -> String) -> Backend {
    Backend::start_with(Arc::new(move |user: &str| {
        let mut c = claims(user);
        c["iss"] = json!(ISSUER);
        c["aud"] = json!("api");
        c["sid"] = json!(sid(user));
        mint(&c)
    }))
    .await
}

/// A new provider session id for every login.
fn fresh_sid(_user: &str) -> String {
    format!("sid-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// One provider session shared by every login (one browser, several users).
fn shared_sid(_user: &str) -> String {
    "sid-shared".into()
}

/// The `sid` claim of a token, read as the provider wrote it.
fn sid_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// The claims of a valid logout token, with `sub` and/or `sid` as given.
fn logout_claims(sub: Option<&str>, sid: Option<&str>) -> Value {
    let n = now();
    let mut c = json!({
        "iss": ISSUER,
        "aud": "api",
        "iat": n,
        "exp": n + 120,
        "jti": hex::encode(rand::random::<[u8; 8]>()),
        "events": {EVENT: {}},
    });
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    c
}

/// Signs logout-token claims as the provider does: HS256, the test secret, `logout+jwt`.
fn logout_token(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("logout+jwt".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Posts a form body to the route.
async fn post_form(gate: &Gate, body: &str) -> Reply {
    send(
        "POST",
        &gate.url(ROUTE),
        &[("content-type", "application/x-www-form-urlencoded")],
        body.to_owned(),
    )
    .await
}

/// Posts a logout token as the provider does.
async fn post_logout(gate: &Gate, token: &str) -> Reply {
    post_form(gate, &format!("logout_token={token}")).await
}

/// Asserts a 200 with nothing to cache.
fn assert_done(reply: &Reply) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
}

/// Asserts a 400 `invalid_request` whose description contains `problem`.
fn assert_bad(reply: &Reply, problem: &str) {
    assert_refusal(reply, 400);
    let body = reply.json();
    assert_eq!(body["error"], "invalid_request", "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains(problem),
        "{problem:?} in {description:?}"
    );
    assert!(
        reply.header("www-authenticate").is_none(),
        "never a 401 challenge"
    );
}

#[tokio::test]
async fn a_logout_token_with_sub_ends_every_session_of_the_user() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    let (phone, laptop) = (login(&gate, "alice").await, login(&gate, "alice").await);
    let bob = login(&gate, "bob").await;
    assert_passes(&gate, &backend, &phone, "alice").await;

    let before = backend.count();
    let r = post_logout(&gate, &logout_token(&logout_claims(Some("alice"), None))).await;
    assert_done(&r);
    assert!(r.body.is_empty());
    backend.assert_untouched_because(before, "the logout is tokengate's own route");
    assert_refused(&gate, &backend, &phone).await;
    assert_refused(&gate, &backend, &laptop).await;
    assert_passes(&gate, &backend, &bob, "bob").await;
    let by = "backchannel".to_owned();
    assert_eq!(
        gate.feed(),
        [("logout_all".into(), "alice".into(), None, by)]
    );
}

/// HMAC-SHA256 (RFC 2104) by hand, so that a token can be signed without jsonwebtoken.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[tokio::test]
async fn a_logout_token_written_by_another_library_is_understood() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    let phone = login(&gate, "alice").await;
    let laptop = login(&gate, "alice").await;
    // Written as a provider in another language writes it: its own key order and
    // spacing, `aud` as an array, `typ` first, the whole signed with a hand-made HMAC.
    let n = now();
    let header = r#"{"typ": "logout+jwt", "alg": "HS256"}"#;
    let payload = format!(
        r#"{{"events": {{"{EVENT}": {{}}}}, "sid": "{sid}", "jti": "{jti}", "aud": ["api", "other"], "iss": "{ISSUER}", "iat": {n}, "exp": {exp}}}"#,
        sid = sid_of(&laptop),
        jti = hex::encode(rand::random::<[u8; 8]>()),
        exp = n + 60,
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = hmac_sha256(SECRET.as_bytes(), input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_done(&post_logout(&gate, &token).await);
    assert_refused(&gate, &backend, &laptop).await;
    assert_passes(&gate, &backend, &phone, "alice").await;
    // The same token again: a replay.
    assert_bad(&post_logout(&gate, &token).await, "used already");
}

#[tokio::test]
async fn a_logout_token_with_sid_ends_only_the_session_that_carried_it() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    let (phone, laptop) = (login(&gate, "alice").await, login(&gate, "alice").await);
    assert_passes(&gate, &backend, &phone, "alice").await;

    let r = post_logout(
        &gate,
        &logout_token(&logout_claims(None, Some(&sid_of(&phone)))),
    )
    .await;
    assert_done(&r);
    assert_refused(&gate, &backend, &phone).await;
    assert_passes(&gate, &backend, &laptop, "alice").await;
    let rows = gate.feed();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (kind, user, session, by) = &rows[0];
    assert_eq!((kind.as_str(), user.as_str()), ("session", "alice"));
    assert!(session.is_some(), "the row names the session");
    assert_eq!(by, "backchannel");
}

#[tokio::test]
async fn sub_and_sid_together_end_that_users_sessions_with_that_sid_only() {
    let backend = idp_backend(shared_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    let alice = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let r = post_logout(
        &gate,
        &logout_token(&logout_claims(Some("alice"), Some("sid-shared"))),
    )
    .await;
    assert_done(&r);
    assert_refused(&gate, &backend, &alice).await;
    assert_passes(&gate, &backend, &bob, "bob").await;
    // Without sub, the sid names every session that carried it.
    assert_done(
        &post_logout(
            &gate,
            &logout_token(&logout_claims(None, Some("sid-shared"))),
        )
        .await,
    );
    assert_refused(&gate, &backend, &bob).await;
}

#[tokio::test]
async fn a_sid_that_matches_nothing_is_still_a_success() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    let alice = login(&gate, "alice").await;
    let r = post_logout(&gate, &logout_token(&logout_claims(None, Some("sid-gone")))).await;
    assert_done(&r);
    assert_passes(&gate, &backend, &alice, "alice").await;
    assert!(gate.feed().is_empty(), "nothing ended, nothing in the feed");
}

#[tokio::test]
async fn every_bad_logout_token_is_refused_with_400_and_ends_nothing() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    let alice = login(&gate, "alice").await;
    let sub = || logout_claims(Some("alice"), None);
    let with = |name: &str, value: Value| {
        let mut c = sub();
        c[name] = value;
        c
    };
    let without = |name: &str| {
        let mut c = sub();
        c.as_object_mut().unwrap().remove(name);
        c
    };
    let n = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a nonce",
            logout_token(&with("nonce", json!("n-1"))),
            "nonce",
        ),
        ("no events", logout_token(&without("events")), "events"),
        (
            "another event",
            logout_token(&with(
                "events",
                json!({"http://schemas.openid.net/event/other": {}}),
            )),
            "events",
        ),
        (
            "an event that is not an object",
            logout_token(&with("events", json!({EVENT: true}))),
            "events",
        ),
        (
            "neither sub nor sid",
            logout_token(&without("sub")),
            "neither sub nor sid",
        ),
        ("no jti", logout_token(&without("jti")), "jti"),
        ("no iat", logout_token(&without("iat")), "iat"),
        (
            "another issuer",
            logout_token(&with("iss", json!("https://evil.test"))),
            "issuer",
        ),
        (
            "another audience",
            logout_token(&with("aud", json!("web"))),
            "audience",
        ),
        (
            "an expired token",
            logout_token(&with("exp", json!(n - 600))),
            "expired",
        ),
        (
            "a bad signature",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &sub(),
                &EncodingKey::from_secret(b"another-secret-another-secret-xx-xx").unwrap(),
            )
            .unwrap(),
            "signature",
        ),
        (
            "an algorithm not configured",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS384),
                &sub(),
                &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            )
            .unwrap(),
            "algorithm",
        ),
        ("an access token", alice.clone(), "events"),
    ];
    let before = backend.count();
    for (what, token, problem) in cases {
        let r = post_logout(&gate, &token).await;
        assert_eq!(r.status, 400, "{what}");
        assert_bad(&r, problem);
    }
    // The request itself.
    assert_bad(
        &post_form(&gate, "logout_token=%zz").await,
        "not a valid form",
    );
    assert_bad(&post_form(&gate, "token=abc").await, "no logout_token");
    let token = logout_token(&sub());
    let twice = format!("logout_token={token}&logout_token={token}");
    assert_bad(&post_form(&gate, &twice).await, "more than one");
    let json_body = send(
        "POST",
        &gate.url(ROUTE),
        &[("content-type", "application/json")],
        json!({ "logout_token": token }).to_string(),
    )
    .await;
    assert_bad(&json_body, "x-www-form-urlencoded");
    let big = format!("logout_token={token}&pad={}", "x".repeat(70 * 1024));
    assert_bad(&post_form(&gate, &big).await, "64 KiB");
    let r = get(&gate.url(ROUTE), &[]).await;
    assert_refusal(&r, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));

    backend.assert_untouched_because(before, "the logout route never forwards");
    assert!(gate.feed().is_empty(), "nothing was revoked");
    assert_passes(&gate, &backend, &alice, "alice").await;
}

#[tokio::test]
async fn a_replayed_logout_token_is_refused() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config()).await;
    login(&gate, "alice").await;
    let token = logout_token(&logout_claims(Some("alice"), None));
    assert_done(&post_logout(&gate, &token).await);
    // The user logs in again; the same token posted again must not end the new session.
    let again = login(&gate, "alice").await;
    assert_bad(&post_logout(&gate, &token).await, "used already");
    assert_passes(&gate, &backend, &again, "alice").await;
    assert_eq!(gate.feed().len(), 1);
    assert_eq!(rows(&gate, "backchannel_jti"), 1);
}

#[tokio::test]
async fn under_denylist_sub_cuts_the_user_off_and_sid_alone_cannot_be_resolved() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, config().strategy("denylist")).await;
    let alice = login(&gate, "alice").await;
    let only_sid = logout_token(&logout_claims(None, Some(&sid_of(&alice))));
    assert_bad(&post_logout(&gate, &only_sid).await, "denylist strategy");
    assert_passes(&gate, &backend, &alice, "alice").await;
    assert_eq!(
        rows(&gate, "backchannel_jti"),
        0,
        "a refused logout keeps its jti"
    );

    assert_done(&post_logout(&gate, &logout_token(&logout_claims(Some("alice"), None))).await);
    assert_refused(&gate, &backend, &alice).await;
    let by = "backchannel".to_owned();
    assert_eq!(gate.feed(), [("cutoff".into(), "alice".into(), None, by)]);
}

#[tokio::test]
async fn the_route_is_off_unless_configured() {
    let backend = idp_backend(fresh_sid).await;
    let gate = Gate::start_config(&backend, GateConfig::default()).await;
    let before = backend.count();
    // Just another protected path: no token, no entry.
    let r = post_logout(&gate, &logout_token(&logout_claims(Some("alice"), None))).await;
    assert_refusal(&r, 401);
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sid_logout_works_on_postgres_and_reaches_every_replica() {
    let schema = PgSchema::create().await;
    let backend = idp_backend(fresh_sid).await;
    let replica = || config().postgres(&schema.url);
    let (a, b) = (
        Gate::start_config(&backend, replica()).await,
        Gate::start_config(&backend, replica()).await,
    );
    let (phone, laptop) = (login(&a, "alice").await, login(&a, "alice").await);
    assert_passes(&b, &backend, &phone, "alice").await;
    let token = logout_token(&logout_claims(Some("alice"), Some(&sid_of(&phone))));
    assert_done(&post_logout(&a, &token).await);
    // The other replica learns it from the feed, within its staleness bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while get_with(&b.url("/api/me"), &phone).await.status != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "replica b still lets it in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_passes(&b, &backend, &laptop, "alice").await;
    assert_bad(&post_logout(&b, &token).await, "used already");
    assert_eq!(schema.rows("backchannel_jti").await, 1);
}
