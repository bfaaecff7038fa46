//! The admin listener (SPEC §6): health, readiness and metrics for everyone; the
//! `/admin` API only with the admin token, and not at all without one configured.

mod common;
use common::*;

use bytes::Bytes;

/// The default config with the admin token read from a per-test environment variable.
async fn gate_with_admin(backend: &Backend, var: &str, token: &str) -> Gate {
    std::env::set_var(var, token);
    let config = GateConfig::default().set("admin", &format!("token_env = \"{var}\""));
    Gate::start_config(backend, &config).await
}

fn admin_url(gate: &Gate, path: &str) -> String {
    format!("http://{}{}", gate.admin, path)
}

async fn admin(gate: &Gate, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(
        method,
        &admin_url(gate, path),
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    assert_eq!(get(&admin_url(&gate, "/healthz"), &[]).await.status, 200);
    assert_eq!(get(&admin_url(&gate, "/readyz"), &[]).await.status, 200);
    let token = login(&gate, "alice").await;
    get_with(&gate.url("/api"), &token).await;
    get(&gate.url("/api"), &[]).await;
    let metrics = get(&admin_url(&gate, "/metrics"), &[]).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("tokengate_requests_total{outcome=\"forwarded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tokengate_requests_total{outcome=\"no_token\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tokengate_captures_total{result=\"stored\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tokengate_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("tokengate_live_sessions 1"), "{text}");
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_does_not_exist() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let r = admin(
        &gate,
        "GET",
        "/admin/users/alice/sessions",
        Some("anything"),
        "",
    )
    .await;
    assert_refusal(&r, 404);
    assert_eq!(get(&admin_url(&gate, "/healthz"), &[]).await.status, 200);
}

#[tokio::test]
async fn a_missing_or_wrong_admin_token_is_401() {
    let backend = Backend::start().await;
    let gate = gate_with_admin(
        &backend,
        "TG_TEST_ADMIN_WRONG",
        "the-right-admin-token-0123456789",
    )
    .await;
    let alice = login(&gate, "alice").await;
    for token in [
        None,
        Some("wrong"),
        Some("the-right-admin-token-012345678"),
        Some(""),
    ] {
        let r = admin(&gate, "DELETE", "/admin/users/alice/sessions", token, "").await;
        assert_refusal(&r, 401);
        assert!(r.header("www-authenticate").is_some());
    }
    assert_eq!(
        get_with(&gate.url("/api"), &alice).await.status,
        200,
        "nothing was revoked"
    );
}

#[tokio::test]
async fn the_admin_api_registers_lists_and_revokes() {
    let backend = Backend::start().await;
    let key = "the-right-admin-token-0123456789";
    let gate = gate_with_admin(&backend, "TG_TEST_ADMIN_RIGHT", key).await;

    // POST /admin/tokens: verified, then registered; a forged one is refused.
    let issued = mint(&claims("alice"));
    let r = admin(&gate, "POST", "/admin/tokens", Some(key), &issued).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let session_id = r.json()["session"]["id"].as_str().unwrap().to_string();
    assert_eq!(get_with(&gate.url("/api"), &issued).await.status, 200);
    // One signature character changed, away from the last one (whose low bits are
    // padding, so some changes there decode to the same signature).
    let at = issued.len() - 10;
    let flipped = if &issued[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &issued[..at], &issued[at + 1..]);
    let r = admin(&gate, "POST", "/admin/tokens", Some(key), &forged).await;
    assert_refusal(&r, 400);
    let json_body = serde_json::json!({"token": mint(&claims("alice"))}).to_string();
    assert_eq!(
        admin(&gate, "POST", "/admin/tokens", Some(key), &json_body)
            .await
            .status,
        201
    );

    // GET /admin/users/{id}/sessions
    let captured = login(&gate, "alice").await;
    let r = admin(&gate, "GET", "/admin/users/alice/sessions", Some(key), "").await;
    assert_eq!(r.status, 200);
    let sessions = r.json().as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3);
    assert!(
        !String::from_utf8_lossy(&r.body).contains(&issued),
        "never a raw token"
    );

    // DELETE /admin/sessions/{id}: that session only.
    assert_eq!(
        admin(
            &gate,
            "DELETE",
            &format!("/admin/sessions/{session_id}"),
            Some(key),
            ""
        )
        .await
        .status,
        204
    );
    assert_eq!(get_with(&gate.url("/api"), &issued).await.status, 401);
    assert_eq!(get_with(&gate.url("/api"), &captured).await.status, 200);
    assert_refusal(
        &admin(
            &gate,
            "DELETE",
            &format!("/admin/sessions/{session_id}"),
            Some(key),
            "",
        )
        .await,
        404,
    );

    // DELETE /admin/users/{id}/sessions: every session of the user, no other user.
    let bob = login(&gate, "bob").await;
    assert_eq!(
        admin(
            &gate,
            "DELETE",
            "/admin/users/alice/sessions",
            Some(key),
            ""
        )
        .await
        .status,
        204
    );
    assert_eq!(get_with(&gate.url("/api"), &captured).await.status, 401);
    assert_eq!(get_with(&gate.url("/api"), &bob).await.status, 200);
}

#[tokio::test]
async fn user_ids_in_admin_paths_are_percent_decoded() {
    let backend = Backend::start().await;
    let key = "the-right-admin-token-0123456789";
    let gate = gate_with_admin(&backend, "TG_TEST_ADMIN_DECODE", key).await;
    let token = login(&gate, "auth0|alice").await;
    let r = admin(
        &gate,
        "GET",
        "/admin/users/auth0%7Calice/sessions",
        Some(key),
        "",
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(
        admin(
            &gate,
            "DELETE",
            "/admin/users/auth0%7Calice/sessions",
            Some(key),
            ""
        )
        .await
        .status,
        204
    );
    assert_eq!(get_with(&gate.url("/api"), &token).await.status, 401);
}
