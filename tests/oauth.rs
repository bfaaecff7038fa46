//! The standard endpoints (SPEC §13): RFC 7009 token revocation on `routes.revoke`
//! (the token is its own credential; 200 whether or not it was live) and RFC 7662
//! introspection on the admin listener (`POST /admin/introspect`, with the admin
//! token), both through real HTTP with form bodies.

mod common;
use common::*;

use serde_json::Value;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

async fn gate_with_revoke(backend: &Backend) -> Gate {
    Gate::start_config(
        backend,
        GateConfig::default().set("routes", "revoke = \"/oauth/revoke\""),
    )
    .await
}

async fn revoke(gate: &Gate, body: &str) -> Reply {
    send(
        "POST",
        &gate.url("/oauth/revoke"),
        &[FORM],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_token_revokes_itself_and_is_refused_afterwards() {
    let backend = Backend::start().await;
    let gate = gate_with_revoke(&backend).await;
    let token = login(&gate, "alice").await;
    let other = login(&gate, "alice").await;
    let before = backend.count();
    let r = revoke(
        &gate,
        &format!("token={token}&token_type_hint=access_token"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    backend.assert_untouched_because(before, "the revocation request");
    assert_refusal(&get_with(&gate.url("/api"), &token).await, 401);
    backend.assert_untouched(before);
    // Only that session: the user's other login still passes.
    assert_passes(&gate, &backend, &other, "alice").await;
    let feed = gate.feed();
    assert_eq!(
        (feed.len(), &feed[0].0, &feed[0].3),
        (1, &"logout".to_string(), &"self".to_string())
    );
    // Again: 200, nothing more revoked.
    assert_eq!(revoke(&gate, &format!("token={token}")).await.status, 200);
    assert_eq!(gate.feed().len(), 1);
}

#[tokio::test]
async fn a_forged_or_unknown_token_gets_200_and_revokes_nothing() {
    let backend = Backend::start().await;
    let gate = gate_with_revoke(&backend).await;
    let token = login(&gate, "alice").await;
    // The same header and payload under another signature: the row's key, not its proof.
    let (input, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{input}.c2lnbmF0dXJl");
    let unknown = mint(&claims("alice"));
    for body in [
        format!("token={forged}"),
        format!("token={unknown}"),
        "token=not-a-jwt".to_string(),
    ] {
        assert_eq!(revoke(&gate, &body).await.status, 200, "{body}");
    }
    assert!(gate.feed().is_empty());
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_malformed_revocation_request_is_a_400_and_reaches_nothing() {
    let backend = Backend::start().await;
    let gate = gate_with_revoke(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    let url = gate.url("/oauth/revoke");
    let json = ("content-type", "application/json");
    for (headers, body) in [
        (vec![json], format!("{{\"token\": \"{token}\"}}")),
        (vec![], format!("token={token}")),
        (vec![FORM], "token_type_hint=access_token".to_string()),
        (vec![FORM], format!("token={token}&token={token}")),
        (
            vec![FORM],
            format!("token={token}&pad={}", "x".repeat(70_000)),
        ),
    ] {
        let r = send("POST", &url, &headers, body.clone()).await;
        assert_refusal(&r, 400);
        assert_eq!(r.json()["error"], "invalid_request");
    }
    let r = send("GET", &url, &[], "").await;
    assert_refusal(&r, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    backend.assert_untouched(before);
    assert!(gate.feed().is_empty());
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn the_revocation_route_is_off_by_default() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    // A protected route like any other: no token, 401.
    let r = revoke(&gate, &format!("token={token}")).await;
    assert_refusal(&r, 401);
    backend.assert_untouched(before);
}

async fn gate_with_admin(backend: &Backend, var: &str) -> Gate {
    std::env::set_var(var, "admin-secret-for-introspection");
    Gate::start_config(
        backend,
        GateConfig::default().set("admin", &format!("token_env = \"{var}\"")),
    )
    .await
}

async fn introspect(gate: &Gate, admin: Option<&str>, body: &str) -> Reply {
    let auth = admin.map(|a| format!("Bearer {a}"));
    let mut headers = vec![FORM];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    send(
        "POST",
        &format!("http://{}/admin/introspect", gate.admin),
        &headers,
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn introspection_answers_from_the_live_store() {
    let backend = Backend::start().await;
    let gate = gate_with_admin(&backend, "TG_TEST_INTROSPECT_LIVE").await;
    let admin = Some("admin-secret-for-introspection");
    let token = login(&gate, "alice").await;
    let r = introspect(&gate, admin, &format!("token={token}")).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["exp"].as_i64().unwrap() > now());
    assert!(body["iat"].as_i64().is_some());
    let sessions = get_with(&gate.url("/sessions"), &token).await.json();
    assert_eq!(body["sid"], sessions[0]["id"]);
    assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
    let r = introspect(&gate, admin, &format!("token={token}")).await;
    assert_eq!(r.json(), serde_json::json!({"active": false}));
}

#[tokio::test]
async fn introspection_of_a_bad_token_is_inactive_and_of_a_bad_request_a_400() {
    let backend = Backend::start().await;
    let gate = gate_with_admin(&backend, "TG_TEST_INTROSPECT_BAD").await;
    let admin = Some("admin-secret-for-introspection");
    let token = login(&gate, "alice").await;
    let (input, _) = token.rsplit_once('.').unwrap();
    for bad in [
        format!("{input}.c2lnbmF0dXJl"),
        mint(&claims("bob")),
        "garbage".to_string(),
    ] {
        let r = introspect(&gate, admin, &format!("token={bad}")).await;
        assert_eq!(r.json(), serde_json::json!({"active": false}), "{bad}");
    }
    for body in ["", "token_type_hint=x", "token=a&token=b"] {
        let r = introspect(&gate, admin, body).await;
        assert_refusal(&r, 400);
    }
    let r = send(
        "POST",
        &format!("http://{}/admin/introspect", gate.admin),
        &[("authorization", "Bearer admin-secret-for-introspection")],
        format!("{{\"token\": \"{token}\"}}"),
    )
    .await;
    assert_refusal(&r, 400);
}

#[tokio::test]
async fn introspection_needs_the_admin_token() {
    let backend = Backend::start().await;
    let gate = gate_with_admin(&backend, "TG_TEST_INTROSPECT_AUTH").await;
    let token = login(&gate, "alice").await;
    for admin in [None, Some("wrong"), Some(token.as_str())] {
        let r = introspect(&gate, admin, &format!("token={token}")).await;
        assert_refusal(&r, 401);
        let body: Value = r.json();
        assert!(body.get("active").is_none());
    }
}
