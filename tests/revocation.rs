//! Revocation under the default allowlist strategy (SPEC §1, §5 steps 3 and 4):
//! `/logout`, `/logout-all`, the `/sessions` endpoint, and durability across a restart.

mod common;
use common::*;

use bytes::Bytes;
use serde_json::{json, Value};

use tokengate::strategy::SessionMeta;

/// Logs `user` in through `/login` with a given user agent; returns the token.
async fn login_as(gate: &Gate, user: &str, agent: &str) -> String {
    let r = send(
        "POST",
        &gate.url("/login"),
        &[("content-type", "application/json"), ("user-agent", agent)],
        json!({ "user": user }).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// Asserts that no request to a tokengate route reached the backend.
fn assert_backend_never_saw(backend: &Backend, prefix: &str) {
    for seen in backend.seen() {
        assert!(
            !seen.uri.starts_with(prefix),
            "{} {} reached the backend",
            seen.method,
            seen.uri
        );
    }
}

#[tokio::test]
async fn logout_revokes_only_the_token_used_and_leaves_other_sessions_of_the_user_live() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let phone = login_as(&gate, "alice", "phone").await;
    let laptop = login_as(&gate, "alice", "laptop").await;
    assert_eq!(rows(&gate, "valid_token"), 2);
    assert_passes(&gate, &backend, &phone, "alice").await;
    assert_passes(&gate, &backend, &laptop, "alice").await;

    let r = post_with(&gate.url("/logout"), &phone).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert!(r.body.is_empty());
    assert_eq!(rows(&gate, "valid_token"), 1, "the revocation is on disk");

    assert_refused(&gate, &backend, &phone).await;
    assert_passes(&gate, &backend, &laptop, "alice").await;
    assert_backend_never_saw(&backend, "/logout");
}

#[tokio::test]
async fn logout_all_revokes_every_token_of_the_user_and_leaves_other_users_live() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let a1 = login_as(&gate, "alice", "one").await;
    let a2 = login_as(&gate, "alice", "two").await;
    let a3 = login_as(&gate, "alice", "three").await;
    let bob = login_as(&gate, "bob", "bob").await;

    let r = post_with(&gate.url("/logout-all"), &a2).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(rows(&gate, "valid_token"), 1, "only bob's row is left");

    for token in [&a1, &a2, &a3] {
        assert_refused(&gate, &backend, token).await;
    }
    assert_passes(&gate, &backend, &bob, "bob").await;
    assert_backend_never_saw(&backend, "/logout");
}

#[tokio::test]
async fn logout_routes_refuse_other_methods_with_405_allow_post_and_keep_the_token_live() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let auth = format!("Bearer {token}");
    for path in ["/logout", "/logout-all"] {
        for method in ["GET", "PUT", "DELETE"] {
            let r = send(
                method,
                &gate.url(path),
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
            assert_refusal(&r, 405);
            assert_eq!(
                r.header("allow").as_deref(),
                Some("POST"),
                "{method} {path}"
            );
            assert_passes(&gate, &backend, &token, "alice").await;
        }
    }
    assert_eq!(rows(&gate, "valid_token"), 1);
    assert_backend_never_saw(&backend, "/logout");
}

#[tokio::test]
async fn logout_without_a_token_is_refused_with_401() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    for path in ["/logout", "/logout-all"] {
        let r = send("POST", &gate.url(path), &[], Bytes::new()).await;
        assert_refusal(&r, 401);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"tokengate\""),
            "{path}"
        );
    }
    assert_passes(&gate, &backend, &token, "alice").await;
    assert_backend_never_saw(&backend, "/logout");
}

#[tokio::test]
async fn logout_with_a_revoked_token_is_refused_with_401() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let other = login(&gate, "alice").await;
    assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
    for path in ["/logout", "/logout-all"] {
        let r = post_with(&gate.url(path), &token).await;
        assert_refusal(&r, 401);
    }
    // The refused logout-all revoked nothing.
    assert_passes(&gate, &backend, &other, "alice").await;
    assert_backend_never_saw(&backend, "/logout");
}

#[tokio::test]
async fn a_restart_keeps_live_tokens_live_and_revoked_tokens_revoked() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let kept = login(&gate, "alice").await;
    let revoked = login(&gate, "alice").await;
    assert_eq!(post_with(&gate.url("/logout"), &revoked).await.status, 204);

    let gate = gate.restart().await;
    assert_passes(&gate, &backend, &kept, "alice").await;
    assert_refused(&gate, &backend, &revoked).await;
    assert_eq!(rows(&gate, "valid_token"), 1);
}

#[tokio::test]
async fn a_token_registered_directly_through_the_strategy_passes() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = mint(&claims("dave"));
    assert_refused(&gate, &backend, &token).await;

    let verified = gate.app.policy().verifier.verify(&token).unwrap();
    let meta = SessionMeta {
        user_agent: Some("out-of-band".into()),
        client_addr: None,
    };
    let session = gate.app.strategy.admit(&verified, meta).await.unwrap();
    assert!(session.is_some(), "the allowlist keeps a session row");
    assert_eq!(rows(&gate, "valid_token"), 1);
    assert_passes(&gate, &backend, &token, "dave").await;
}

#[tokio::test]
async fn the_sessions_endpoint_lists_only_the_callers_sessions_and_marks_the_one_used() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let phone = login_as(&gate, "alice", "phone/1").await;
    let laptop = login_as(&gate, "alice", "laptop/1").await;
    let bob = login_as(&gate, "bob", "bob/1").await;

    let r = get_with(&gate.url("/sessions"), &laptop).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(backend.count(), 3, "only the logins reached the backend");
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for token in [&phone, &laptop, &bob] {
        assert!(!text.contains(token.as_str()), "a raw token is listed");
        let signature = &token[token.rfind('.').unwrap() + 1..];
        assert!(!text.contains(signature), "a token signature is listed");
    }
    let body = r.json();
    let sessions = body.as_array().expect("a sessions array");
    assert_eq!(sessions.len(), 2, "{body}");

    let phone_id = gate.session_id_of(&phone);
    let laptop_id = gate.session_id_of(&laptop);
    let bob_id = gate.session_id_of(&bob);
    assert!(!text.contains(&bob_id), "another user's session is listed");

    let now = now();
    for s in sessions {
        for field in [
            "id",
            "created",
            "expires",
            "user_agent",
            "client_addr",
            "current",
        ] {
            assert!(s.get(field).is_some(), "{field} missing in {s}");
        }
        let created = s["created"].as_i64().expect("created is unix seconds");
        assert!((now - 10..=now + 1).contains(&created), "{s}");
        let expires = s["expires"].as_i64().expect("expires is unix seconds");
        assert!(expires > now, "{s}");
        assert_eq!(s["client_addr"], "127.0.0.1");
    }
    let find = |id: &str| -> &Value {
        sessions
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("session {id} not listed in {body}"))
    };
    assert_eq!(find(&phone_id)["user_agent"], "phone/1");
    assert_eq!(find(&laptop_id)["user_agent"], "laptop/1");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{body}");
    assert_eq!(current[0]["id"], laptop_id.as_str());
    assert_eq!(find(&phone_id)["current"], false);
}

#[tokio::test]
async fn the_sessions_endpoint_without_a_token_is_refused_with_401() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let id = gate.session_id_of(&token);
    let r = get(&gate.url("/sessions"), &[]).await;
    assert_refusal(&r, 401);
    let r = send(
        "DELETE",
        &gate.url(&format!("/sessions/{id}")),
        &[],
        Bytes::new(),
    )
    .await;
    assert_refusal(&r, 401);
    assert_passes(&gate, &backend, &token, "alice").await;
    assert_backend_never_saw(&backend, "/sessions");
}

#[tokio::test]
async fn two_logins_in_one_second_without_a_jti_are_one_session() {
    // What the README warns about: a backend that puts nothing unique in its tokens
    // issues the same bytes to two devices logging in within the same second.
    let n = now();
    let backend = Backend::start_with(std::sync::Arc::new(move |user: &str| {
        mint(&json!({"sub": user, "iat": n, "exp": n + 3600}))
    }))
    .await;
    let gate = Gate::start(&backend).await;
    let phone = login_as(&gate, "alice", "phone/1").await;
    let laptop = login_as(&gate, "alice", "laptop/1").await;
    assert_eq!(phone, laptop, "the two devices got byte-identical tokens");
    let sessions = get_with(&gate.url("/sessions"), &laptop).await.json();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert_eq!(
        sessions[0]["user_agent"], "phone/1",
        "the first login's row"
    );
    // Logging out on one device logs out the other.
    assert_eq!(post_with(&gate.url("/logout"), &phone).await.status, 204);
    assert_refused(&gate, &backend, &laptop).await;
}

#[tokio::test]
async fn deleting_another_session_of_ones_own_revokes_that_token_only() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let phone = login_as(&gate, "alice", "phone").await;
    let laptop = login_as(&gate, "alice", "laptop").await;
    let phone_id = gate.session_id_of(&phone);

    let r = send(
        "DELETE",
        &gate.url(&format!("/sessions/{phone_id}")),
        &[("authorization", &format!("Bearer {laptop}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);

    assert_refused(&gate, &backend, &phone).await;
    assert_passes(&gate, &backend, &laptop, "alice").await;
    let r = get_with(&gate.url("/sessions"), &laptop).await;
    let listed = r.json().as_array().unwrap().len();
    assert_eq!(listed, 1);
    assert_backend_never_saw(&backend, "/sessions");
}

/// DELETE /sessions/{id} with a token; returns the reply.
async fn delete_session(gate: &Gate, token: &str, id: &str) -> Reply {
    send(
        "DELETE",
        &gate.url(&format!("/sessions/{id}")),
        &[("authorization", &format!("Bearer {token}"))],
        Bytes::new(),
    )
    .await
}

#[tokio::test]
async fn deleting_another_users_session_is_404_and_leaves_it_live() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let alice = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let bob_id = gate.session_id_of(&bob);

    let r = delete_session(&gate, &alice, &bob_id).await;
    assert_refusal(&r, 404);
    assert_eq!(rows(&gate, "valid_token"), 2);
    assert_passes(&gate, &backend, &bob, "bob").await;
    assert_passes(&gate, &backend, &alice, "alice").await;
    assert_backend_never_saw(&backend, "/sessions");
}

#[tokio::test]
async fn a_nonexistent_session_gets_the_same_404_as_another_users_session() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let alice = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let bob_id = gate.session_id_of(&bob);
    let missing = "0".repeat(bob_id.len());

    let theirs = delete_session(&gate, &alice, &bob_id).await;
    let nobodys = delete_session(&gate, &alice, &missing).await;
    assert_refusal(&theirs, 404);
    assert_refusal(&nobodys, 404);
    assert_eq!(
        theirs.body, nobodys.body,
        "a session id must not be probeable"
    );
    assert_eq!(
        theirs.header("content-type"),
        nobodys.header("content-type")
    );
    assert_passes(&gate, &backend, &bob, "bob").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_background_prune_deletes_expired_rows_and_keeps_live_ones() {
    let backend = Backend::start().await;
    let config = GateConfig::default().set("store", "prune_interval_seconds = 1");
    let gate = Gate::start_config(&backend, &config).await;
    let live = login(&gate, "alice").await;
    // Rows an earlier run left behind, expired a while ago.
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    let n = now();
    for i in 0..3u8 {
        conn.execute(
            "INSERT INTO valid_token (token_hash, session_id, user_id, issued_at, expires_at, created_at)
             VALUES (?1, ?2, 'old', ?3, ?4, ?3)",
            rusqlite::params![vec![i; 32], format!("old-{i}"), n - 7200, n - 3600],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO invalid_token (token_hash, user_id, expires_at) VALUES (?1, 'old', ?2)",
        rusqlite::params![vec![9u8; 32], n - 60],
    )
    .unwrap();
    // The pruner runs every second; give it a few.
    for _ in 0..50 {
        if rows(&gate, "valid_token") == 1 && rows(&gate, "invalid_token") == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows(&gate, "valid_token"),
        1,
        "only the live session is left"
    );
    assert_eq!(rows(&gate, "invalid_token"), 0);
    assert_eq!(get_with(&gate.url("/api"), &live).await.status, 200);
}
