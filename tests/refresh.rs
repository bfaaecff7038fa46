//! Refresh chains (SPEC §15), end to end, in front of a backend shaped like
//! djangorestframework-simplejwt: `POST /api/token/` issues an access and a refresh
//! token, `POST /api/token/refresh/` takes the refresh token (JSON or form) and issues a
//! new access token and a rotated refresh token. The backend knows nothing of
//! tokengate's revocations: only tokengate stands between a revoked session and a new
//! access token.
//!
//! Under the allowlist the tokens of one login form one session: `/sessions` shows it
//! once, and `/logout`, `/logout-all`, `DELETE /sessions/{id}` and
//! `tokens revoke --session` end its refresh token too. Under denylist and user-status
//! the presented refresh token must pass the user's cut-off. Every refusal proves the
//! backend saw nothing.

mod common;
use common::*;

use std::process::Command;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tokengate");

const CHAIN: &str = r#"
[[capture]]
path = "/api/token/"
from = "json:/access"
refresh_token = "json:/refresh"

[[capture]]
path = "/api/token/refresh/"
from = "json:/access"
presents = "json:/refresh"
refresh_token = "json:/refresh"

[[capture]]
path = "/api/token/refresh-keep/"
from = "json:/access"
presents = "json:/refresh"
refresh_token = "json:/refresh"
"#;

async fn gate(backend: &Backend, strategy: &str) -> Gate {
    Gate::start_config(
        backend,
        &GateConfig::default().strategy(strategy).add(CHAIN),
    )
    .await
}

/// One login: (access, refresh).
async fn obtain(gate: &Gate, user: &str) -> (String, String) {
    let r = send(
        "POST",
        &gate.url("/api/token/"),
        &[("content-type", "application/json")],
        json!({"user": user}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = r.json();
    (str_of(&body, "access"), str_of(&body, "refresh"))
}

fn str_of(body: &Value, key: &str) -> String {
    body[key].as_str().unwrap().to_string()
}

/// POSTs a refresh token to the refresh route as JSON.
async fn refresh(gate: &Gate, token: &str) -> Reply {
    send(
        "POST",
        &gate.url("/api/token/refresh/"),
        &[("content-type", "application/json")],
        json!({"refresh": token}).to_string(),
    )
    .await
}

/// A refresh that must pass: (new access, rotated refresh).
async fn refreshed(gate: &Gate, token: &str) -> (String, String) {
    let r = refresh(gate, token).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = r.json();
    (str_of(&body, "access"), str_of(&body, "refresh"))
}

/// A refresh that must be refused without reaching the backend.
async fn refused(gate: &Gate, backend: &Backend, token: &str, what: &str) {
    let before = backend.count();
    let r = refresh(gate, token).await;
    assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    assert_refusal(&r, 401);
    backend.assert_untouched_because(before, &format!("{what}: the backend saw the refresh"));
}

async fn call(gate: &Gate, token: &str) -> u16 {
    get_with(&gate.url("/api/me"), token).await.status.as_u16()
}

async fn sessions(gate: &Gate, token: &str) -> Vec<Value> {
    let r = get_with(&gate.url("/sessions"), token).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_joins_its_login_session_and_rotation_spends_the_old_refresh_token() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;
    let (access, refresh_token) = obtain(&gate, "alice").await;
    assert_eq!(call(&gate, &access).await, 200);
    let (access2, refresh2) = refreshed(&gate, &refresh_token).await;
    assert_eq!(call(&gate, &access2).await, 200);
    assert_eq!(
        call(&gate, &access).await,
        200,
        "the login token lives until its exp"
    );
    // One device, one row.
    let listed = sessions(&gate, &access2).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(sessions(&gate, &access).await[0]["id"], listed[0]["id"]);
    // The rotated-away refresh token is spent; the new one works, and so on.
    refused(
        &gate,
        &backend,
        &refresh_token,
        "a rotated-away refresh token",
    )
    .await;
    let (access3, _) = refreshed(&gate, &refresh2).await;
    assert_eq!(call(&gate, &access3).await, 200);
    assert_eq!(sessions(&gate, &access3).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_handed_back_unrotated_stays_usable() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;
    let (_, refresh_token) = obtain(&gate, "alice").await;
    for _ in 0..3 {
        let r = send(
            "POST",
            &gate.url("/api/token/refresh-keep/"),
            &[("content-type", "application/json")],
            json!({"refresh": refresh_token}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(str_of(&r.json(), "refresh"), refresh_token);
        assert_eq!(call(&gate, &str_of(&r.json(), "access")).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_is_never_a_bearer_token() {
    for strategy in ["allowlist", "denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = gate(&backend, strategy).await;
        let (access, refresh_token) = obtain(&gate, "alice").await;
        let before = backend.count();
        let r = get_with(&gate.url("/api/me"), &refresh_token).await;
        assert_refusal(&r, 401);
        let r = post_with(&gate.url("/logout"), &refresh_token).await;
        assert_refusal(&r, 401);
        backend.assert_untouched_because(before, strategy);
        // Nor is an access token a refresh token, where tokengate knows it as one (the
        // allowlist keeps every access token; the cut-off strategies only their
        // refresh tokens, and leave the rest to the backend).
        if strategy == "allowlist" {
            refused(
                &gate,
                &backend,
                &access,
                "an access token as a refresh token",
            )
            .await;
        }
        assert_eq!(call(&gate, &access).await, 200, "{strategy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_refresh_after_logout_logout_all_or_a_revoked_session() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;

    // /logout with the login token ends the refreshed token and the refresh token.
    let (login_token, r1) = obtain(&gate, "alice").await;
    let (access2, r2) = refreshed(&gate, &r1).await;
    assert_eq!(
        post_with(&gate.url("/logout"), &login_token).await.status,
        204
    );
    assert_eq!(
        call(&gate, &access2).await,
        401,
        "the refreshed token went too"
    );
    refused(&gate, &backend, &r2, "refresh after logout").await;

    // /logout-all: every device's refresh token.
    let (a, ra) = obtain(&gate, "alice").await;
    let (_, rb) = obtain(&gate, "alice").await;
    let (_, rb2) = refreshed(&gate, &rb).await;
    let (bob, rbob) = obtain(&gate, "bob").await;
    assert_eq!(sessions(&gate, &a).await.len(), 2);
    assert_eq!(post_with(&gate.url("/logout-all"), &a).await.status, 204);
    refused(&gate, &backend, &ra, "refresh after logout-all").await;
    refused(&gate, &backend, &rb2, "a refreshed device after logout-all").await;
    assert_eq!(call(&gate, &bob).await, 200, "another user stays in");
    let _ = refreshed(&gate, &rbob).await;

    // DELETE /sessions/{id}: that session's refresh token, not the other one.
    let (a, ra) = obtain(&gate, "alice").await;
    let (other, ro) = obtain(&gate, "alice").await;
    let id = sessions(&gate, &a)
        .await
        .into_iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = send(
        "DELETE",
        &gate.url(&format!("/sessions/{id}")),
        &[("authorization", &format!("Bearer {other}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    refused(&gate, &backend, &ra, "refresh after DELETE /sessions/{id}").await;
    let (_, ro2) = refreshed(&gate, &ro).await;

    // tokens revoke --session, from the CLI process.
    let id = sessions(&gate, &other).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let config = gate.dir.path().join("cli.toml");
    let text = fill(
        &GateConfig::default().add(CHAIN).to_string(),
        NO_BACKEND,
        &gate.db_path(),
    );
    std::fs::write(&config, text).unwrap();
    let out = output_of(
        Command::new(BIN)
            .args(["tokens", "revoke", "--session", &id, "--config"])
            .arg(&config),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &gate,
        &backend,
        &ro2,
        "refresh after tokens revoke --session",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_ends_refresh_tokens_under_denylist_and_user_status() {
    for strategy in ["denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = gate(&backend, strategy).await;
        let (access, r1) = obtain(&gate, "alice").await;
        let (_, r2) = refreshed(&gate, &r1).await;
        if strategy == "denylist" {
            // Rotation denies the spent refresh token (user-status keeps no per-token row).
            refused(
                &gate,
                &backend,
                &r1,
                "denylist: a rotated-away refresh token",
            )
            .await;
        }
        let all = if strategy == "denylist" {
            "/logout-all"
        } else {
            "/logout"
        };
        assert_eq!(post_with(&gate.url(all), &access).await.status, 204);
        refused(
            &gate,
            &backend,
            &r2,
            &format!("{strategy}: refresh after {all}"),
        )
        .await;
        // A login right after, even in the same second, refreshes.
        let (fresh, r3) = obtain(&gate, "alice").await;
        assert_eq!(call(&gate, &fresh).await, 200, "{strategy}");
        let (access4, _) = refreshed(&gate, &r3).await;
        assert_eq!(call(&gate, &access4).await, 200, "{strategy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_route_reads_form_bodies_and_refuses_requests_without_a_live_token() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;
    let (_, refresh_token) = obtain(&gate, "alice").await;
    let form = |token: &str| format!("refresh={token}");
    let r = send(
        "POST",
        &gate.url("/api/token/refresh/"),
        &[("content-type", "application/x-www-form-urlencoded")],
        form(&refresh_token),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let before = backend.count();
    for (body, content_type) in [
        (String::new(), "application/json"),
        ("{}".to_string(), "application/json"),
        (
            json!({"refresh": "not.a.jwt"}).to_string(),
            "application/json",
        ),
        (json!({"refresh": 7}).to_string(), "application/json"),
        (form("a&refresh=b"), "application/x-www-form-urlencoded"),
        (" ".repeat(70 * 1024), "application/json"),
        (
            json!({"refresh": mint(&token_of_type("alice", "refresh", 60))}).to_string(),
            "application/json",
        ),
    ] {
        let r = send(
            "POST",
            &gate.url("/api/token/refresh/"),
            &[("content-type", content_type)],
            body.clone(),
        )
        .await;
        assert_eq!(
            r.status,
            401,
            "{}: {:?}",
            &body[..body.len().min(60)],
            r.body
        );
    }
    backend.assert_untouched_because(before, "a refused refresh reached the backend");
}

#[tokio::test]
async fn two_capture_entries_for_one_route_are_a_config_error() {
    let config = GateConfig::default()
        .add(CHAIN)
        .add("[[capture]]\npath = \"/api/token/\"\nfrom = \"json:/other\"\n");
    let text = fill(
        &config.to_string(),
        NO_BACKEND,
        std::path::Path::new("/tmp/unused.db"),
    );
    let e = tokengate::config::Config::from_toml(&text, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("capture[") && e.contains("POST /api/token/ is already capture["),
        "{e}"
    );
}
