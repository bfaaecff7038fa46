//! Per-route `[[rules]]` (SPEC §13) through real HTTP: the first rule covering a
//! request's path and method decides; a live token that lacks its scopes or claims gets
//! 403 `insufficient_scope` (RFC 6750 §3.1) and the backend sees nothing; a route no
//! rule covers needs authentication only.

mod common;
use common::*;

use serde_json::json;

const RULES: &str = r#"
[[rules]]
path = "/orders/health"

[[rules]]
path = "/orders/*"
methods = ["POST", "DELETE"]
scopes = ["orders:write"]

[[rules]]
path = "/admin/*"
claims = { role = "admin" }
"#;

async fn gate_with_rules(backend: &Backend) -> Gate {
    Gate::start_config(backend, GateConfig::default().add(RULES)).await
}

async fn call(gate: &Gate, method: &str, path: &str, token: &str) -> Reply {
    send(
        method,
        &gate.url(path),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
}

fn assert_insufficient_scope(reply: &Reply, scope: Option<&str>) {
    assert_refusal(reply, 403);
    let body = reply.json();
    assert_eq!(body["error"], "insufficient_scope", "{body}");
    let challenge = reply.header("www-authenticate").unwrap();
    match scope {
        Some(scope) => {
            assert_eq!(
                challenge,
                format!(
                    "Bearer realm=\"tokengate\", error=\"insufficient_scope\", scope=\"{scope}\""
                )
            );
            assert_eq!(body["scope"], scope);
        }
        None => {
            assert_eq!(
                challenge,
                "Bearer realm=\"tokengate\", error=\"insufficient_scope\""
            );
            assert!(body.get("scope").is_none(), "{body}");
        }
    }
}

#[tokio::test]
async fn a_token_without_the_rules_scope_gets_403_and_the_backend_sees_nothing() {
    let backend = Backend::start().await;
    let gate = gate_with_rules(&backend).await;
    let reader = gate
        .admit_claims("alice", json!({"scope": "orders:read profile"}))
        .await;
    for method in ["POST", "DELETE"] {
        let before = backend.count();
        // Twice: the second is answered from the verdict cache, and still refused.
        for _ in 0..2 {
            let r = call(&gate, method, "/orders/7", &reader).await;
            assert_insufficient_scope(&r, Some("orders:write"));
        }
        backend.assert_untouched(before);
    }
    // No rule covers GET /orders/7: authentication only.
    assert_eq!(call(&gate, "GET", "/orders/7", &reader).await.status, 200);
    assert_eq!(backend.last().all("x-user-id"), ["alice"]);
}

#[tokio::test]
async fn a_token_with_the_scope_in_scope_or_scp_passes() {
    let backend = Backend::start().await;
    let gate = gate_with_rules(&backend).await;
    for extra in [
        json!({"scope": "orders:read orders:write"}),
        json!({"scp": ["orders:write"]}),
        json!({"scp": "profile orders:write"}),
    ] {
        let token = gate.admit_claims("bob", extra.clone()).await;
        let r = call(&gate, "POST", "/orders/7", &token).await;
        assert_eq!(r.status, 200, "{extra}");
        assert_eq!(backend.last().all("x-user-id"), ["bob"]);
    }
}

#[tokio::test]
async fn the_first_rule_decides_so_an_exception_can_come_before_a_broad_rule() {
    let backend = Backend::start().await;
    let gate = gate_with_rules(&backend).await;
    let none = gate.admit_claims("carol", json!({})).await;
    // rules[0] covers /orders/health with no requirement: the broad rule after it is
    // never reached.
    assert_eq!(
        call(&gate, "POST", "/orders/health", &none).await.status,
        200
    );
    let r = call(&gate, "POST", "/orders/health2", &none).await;
    assert_insufficient_scope(&r, Some("orders:write"));
}

#[tokio::test]
async fn a_claim_rule_takes_the_string_or_an_array_holding_it() {
    let backend = Backend::start().await;
    let gate = gate_with_rules(&backend).await;
    let admin = gate.admit_claims("root", json!({"role": "admin"})).await;
    let also = gate
        .admit_claims("ops", json!({"role": ["ops", "admin"]}))
        .await;
    let user = gate.admit_claims("dave", json!({"role": "user"})).await;
    let none = gate.admit_claims("erin", json!({})).await;
    assert_eq!(call(&gate, "GET", "/admin/x", &admin).await.status, 200);
    assert_eq!(call(&gate, "DELETE", "/admin/x", &also).await.status, 200);
    for token in [&user, &none] {
        let before = backend.count();
        let r = call(&gate, "GET", "/admin/x", token).await;
        assert_insufficient_scope(&r, None);
        backend.assert_untouched(before);
    }
}

#[tokio::test]
async fn a_rule_never_turns_a_missing_or_dead_token_into_a_403() {
    let backend = Backend::start().await;
    let gate = gate_with_rules(&backend).await;
    let before = backend.count();
    let r = send("POST", &gate.url("/orders/7"), &[], "").await;
    assert_refusal(&r, 401);
    let unknown = mint(&claims("mallory"));
    assert_refusal(&call(&gate, "POST", "/orders/7", &unknown).await, 401);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_websocket_handshake_is_held_to_its_rule() {
    let backend = Backend::start().await;
    let gate = gate_with_rules(&backend).await;
    let user = gate.admit_claims("dave", json!({"role": "user"})).await;
    let before = backend.count();
    let r = ask(
        &gate,
        &format!(
            "GET /admin/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    backend.assert_untouched(before);
}

#[tokio::test]
async fn check_config_names_a_bad_rule_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = GateConfig::default()
        .add("[[rules]]\npath = \"/a\"\nmethods = [\"get\"]")
        .write(dir.path(), NO_BACKEND);
    let out = run(&["check-config"], &config);
    assert_one_line_error(
        "a lower-case method",
        &out,
        &["rules[0].methods[0]", "upper case: GET"],
    );
}
