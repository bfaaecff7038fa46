//! Session policies of SPEC §13 under the allowlist: `store.max_sessions_per_user` (a
//! login beyond it ends the user's oldest session) and `store.idle_timeout_seconds` (a
//! session unused for that long is revoked). Both end sessions through the revocation
//! door, so the feed row names who did it (`limit`, `idle`) and the backend never sees
//! the ended tokens again.

mod common;
use common::*;

use std::time::Duration;

use serde_json::json;

/// Waits for the next second of the clock: sessions are ordered by their creation
/// second, so logins a test wants ordered are made in distinct seconds.
async fn next_second() {
    let start = now();
    while now() == start {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_login_beyond_the_limit_ends_the_users_oldest_session() {
    let backend = Backend::start().await;
    let config = GateConfig::default().set("store", "max_sessions_per_user = 2");
    let gate = Gate::start_config(&backend, config).await;
    let oldest = login(&gate, "alice").await;
    let oldest_id = gate.session_id_of(&oldest);
    next_second().await;
    let older = login(&gate, "alice").await;
    // Another user's sessions do not count against alice's.
    let bob = login(&gate, "bob").await;
    assert_passes(&gate, &backend, &oldest, "alice").await;
    next_second().await;

    let newest = login(&gate, "alice").await;
    assert_refused(&gate, &backend, &oldest).await;
    assert_passes(&gate, &backend, &older, "alice").await;
    assert_passes(&gate, &backend, &newest, "alice").await;
    assert_passes(&gate, &backend, &bob, "bob").await;
    let (session, by) = ("session".to_owned(), "limit".to_owned());
    assert_eq!(
        gate.feed(),
        [(session, "alice".to_owned(), Some(oldest_id), by)]
    );
    // `/sessions` shows the two that are left.
    let listed = get_with(&gate.url("/sessions"), &newest).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test]
async fn a_refresh_joins_its_session_and_does_not_count_as_a_login() {
    let backend = Backend::start().await;
    let config = GateConfig::default()
        .set("store", "max_sessions_per_user = 2")
        .add(
            r#"
[[capture]]
path = "/api/token/"
from = "json:/access"
refresh_token = "json:/refresh"

[[capture]]
path = "/api/token/refresh/"
from = "json:/access"
presents = "json:/refresh"
refresh_token = "json:/refresh"
"#,
        );
    let gate = Gate::start_config(&backend, config).await;
    let obtain = |path: &'static str, body: serde_json::Value| {
        let url = gate.url(path);
        async move {
            let r = send(
                "POST",
                &url,
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let body = r.json();
            (
                body["access"].as_str().unwrap().to_owned(),
                body["refresh"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (first, mut refresh) = obtain("/api/token/", json!({"user": "alice"})).await;
    next_second().await;
    let (second, _) = obtain("/api/token/", json!({"user": "alice"})).await;
    let mut access = first;
    for _ in 0..3 {
        (access, refresh) = obtain("/api/token/refresh/", json!({ "refresh": refresh })).await;
    }
    assert_passes(&gate, &backend, &access, "alice").await;
    assert_passes(&gate, &backend, &second, "alice").await;
    assert!(gate.feed().iter().all(|(_, _, _, by)| by != "limit"));
}

#[test]
fn the_session_policies_are_allowlist_only_and_named_by_their_key() {
    for line in ["max_sessions_per_user = 3", "idle_timeout_seconds = 60"] {
        let config = GateConfig::default()
            .strategy("denylist")
            .set("store", line)
            .to_string();
        let text = fill(&config, NO_BACKEND, std::path::Path::new("/tmp/x.db"));
        let e = tokengate::config::Config::from_toml(&text, std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        let key = line.split(' ').next().unwrap();
        assert!(
            e.starts_with(&format!("config error: store.{key}: ")),
            "{e}"
        );
        assert!(e.contains("allowlist"), "{e}");
    }
}

/// With `idle_timeout_seconds = 2` (so a last use written, and a sweep, every second): a
/// session used every few hundred milliseconds lives on, an unused one is revoked once
/// idle for longer than the timeout (and at most its precision later).
async fn an_unused_session_is_revoked_and_a_used_one_lives(gate: &Gate, backend: &Backend) {
    let used = login(gate, "alice").await;
    let unused = login(gate, "alice").await;
    let started = std::time::Instant::now();
    // The store, read without using either session.
    let sessions = || async { gate.app.revocations.sessions("alice").await.unwrap() };
    assert_eq!(sessions().await.len(), 2);
    while sessions().await.len() == 2 {
        assert_passes(gate, backend, &used, "alice").await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the unused session was never revoked"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let idle_for = started.elapsed();
    assert!(
        idle_for >= Duration::from_secs(2),
        "revoked after {idle_for:?}"
    );
    assert_refused(gate, backend, &unused).await;
    assert_passes(gate, backend, &used, "alice").await;
    let listed = get_with(&gate.url("/sessions"), &used).await.json();
    assert_eq!(listed[0]["current"], true, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_revoked_and_a_used_one_is_not() {
    let backend = Backend::start().await;
    let config = GateConfig::default().set("store", "idle_timeout_seconds = 2");
    let gate = Gate::start_config(&backend, config).await;
    an_unused_session_is_revoked_and_a_used_one_lives(&gate, &backend).await;
    let rows = gate.feed();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (kind, user, session, by) = &rows[0];
    assert_eq!(
        (kind.as_str(), user.as_str(), by.as_str()),
        ("session", "alice", "idle")
    );
    assert!(session.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_revoked_on_postgres_too() {
    let schema = PgSchema::create().await;
    let backend = Backend::start().await;
    let config = GateConfig::default()
        .set("store", "idle_timeout_seconds = 2")
        .postgres(&schema.url);
    let gate = Gate::start_config(&backend, config).await;
    an_unused_session_is_revoked_and_a_used_one_lives(&gate, &backend).await;
    assert_eq!(schema.rows("revocation_log").await, 1);
}
