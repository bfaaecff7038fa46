//! The verdict cache and the revocation feed (SPEC §9), end to end: a token served
//! from one proxy's cache is refused once a revocation made by *another* process has had
//! `cache.max_staleness_ms` to arrive, whichever door made it.
//!
//! Each case checks two things. The guarantee: a request that starts after the bound
//! has passed since the revocation was acknowledged is refused, however busy the
//! machine (if the feed is late, the cache is bypassed). The mechanism: once the feed
//! is current, the cache no longer holds the token at all, so the refusal came from
//! the feed and not from a bypass. The revoking side is the CLI binary (a real
//! process), a second gate on the same store (its own connections, cache and feed
//! reader: a replica), or its admin API.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokengate::cache::CacheKey;

const BIN: &str = env!("CARGO_BIN_EXE_tokengate");
const ADMIN_TOKEN: &str = "feed-test-admin-token-0123456789";
/// `cache.max_staleness_ms` of these tests (the default).
const BOUND: Duration = Duration::from_millis(100);

/// The default config with the admin API on and an explicit `[cache]`.
fn config(strategy: &str, cache: &str) -> GateConfig {
    GateConfig::default()
        .strategy(strategy)
        .set("admin", "token_env = \"FEED_TEST_ADMIN_TOKEN\"")
        .set("cache", cache)
}

const CACHE_ON: &str = "enabled = true\nmax_staleness_ms = 100\nfeed_poll_ms = 25";

async fn gate(backend: &Backend, strategy: &str) -> Gate {
    std::env::set_var("FEED_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    Gate::start_config(backend, &config(strategy, CACHE_ON)).await
}

/// A second gate on the first one's SQLite file: another process in all but address
/// space (its own store connections, cache and feed reader).
async fn second_gate(first: &Gate, backend: &Backend, strategy: &str) -> Gate {
    let db = toml::Value::from(first.db_path().display().to_string());
    let config = config(strategy, CACHE_ON).set("store", &format!("sqlite_path = {db}"));
    Gate::start_config(backend, &config).await
}

/// The config file the CLI uses to reach `gate`'s database.
fn cli_config(gate: &Gate, strategy: &str) -> PathBuf {
    let path = gate.dir.path().join("cli.toml");
    let text = fill(
        &config(strategy, CACHE_ON).to_string(),
        NO_BACKEND,
        &gate.db_path(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn cli(args: &[&str], config: &Path) -> Output {
    let out = output_of(
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn"),
    );
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn call(gate: &Gate, token: &str) -> u16 {
    get_with(&gate.url("/api/me"), token).await.status.as_u16()
}

async fn admin(gate: &Gate, method: &str, path: &str) -> u16 {
    let url = format!("http://{}{path}", gate.admin);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(method, &url, &[("authorization", &auth)], "")
        .await
        .status
        .as_u16()
}

/// How long [`eventually`] waits in these tests.
const EVENTUALLY: Duration = Duration::from_secs(10);

fn cached(gate: &Gate, token: &str) -> bool {
    let key = CacheKey::of(token).unwrap();
    gate.app.cache.is_current() && gate.app.cache.lookup(&key, now()).is_some()
}

/// Calls until `gate` answers `token` from its cache.
async fn warm(gate: &Gate, token: &str) {
    for _ in 0..200 {
        assert_eq!(call(gate, token).await, 200, "the token must pass first");
        if cached(gate, token) {
            let hits = gate.app.metrics.cache_hits.get();
            assert_eq!(call(gate, token).await, 200);
            assert!(
                gate.app.metrics.cache_hits.get() > hits,
                "served from the cache"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the token never reached the cache");
}

/// The guarantee and the mechanism (module doc), after a revocation acknowledged just
/// before the call; `seen` counts what the backend received, which must not grow.
async fn assert_refused_within_the_bound(gate: &Gate, backend: &Backend, token: &str, what: &str) {
    tokio::time::sleep(BOUND).await;
    let before = backend.count();
    assert_eq!(
        call(gate, token).await,
        401,
        "{what}: served past the bound"
    );
    eventually(EVENTUALLY, &format!("{what}: the feed is current"), || {
        gate.app.cache.is_current()
    })
    .await;
    let key = CacheKey::of(token).unwrap();
    assert!(
        gate.app.cache.lookup(&key, now()).is_none(),
        "{what}: still cached though the feed is current"
    );
    assert_eq!(call(gate, token).await, 401, "{what}");
    backend.assert_untouched_because(
        before,
        &format!("{what}: the backend saw a refused request"),
    );
}

/// The session id of a token's allowlist row, read from the gate's own `/sessions`.
async fn session_id(gate: &Gate, token: &str) -> String {
    let list = get_with(&gate.url("/sessions"), token).await.json();
    let current = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .expect("the current session is listed");
    current["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revocations_reach_a_warm_cache_within_the_bound() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;
    let config = cli_config(&gate, "allowlist");

    let token = login(&gate, "alice").await;
    let other = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    for t in [&token, &other, &bob] {
        warm(&gate, t).await;
    }
    let id = session_id(&gate, &token).await;
    cli(&["tokens", "revoke", "--session", &id], &config);
    assert_refused_within_the_bound(&gate, &backend, &token, "tokens revoke --session").await;
    assert_eq!(call(&gate, &other).await, 200, "one session only");
    assert!(
        cached(&gate, &other),
        "the user's other session stays cached"
    );

    cli(&["tokens", "revoke", "--user", "alice"], &config);
    assert_refused_within_the_bound(&gate, &backend, &other, "tokens revoke --user").await;
    assert_eq!(call(&gate, &bob).await, 200);
    assert!(cached(&gate, &bob), "another user stays cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_revocations_on_another_gate_reach_a_warm_cache() {
    let backend = Backend::start().await;
    let a = gate(&backend, "allowlist").await;
    let b = second_gate(&a, &backend, "allowlist").await;

    let token = login(&a, "alice").await;
    warm(&a, &token).await;
    let id = session_id(&a, &token).await;
    assert_eq!(
        admin(&b, "DELETE", &format!("/admin/sessions/{id}")).await,
        204
    );
    assert_refused_within_the_bound(&a, &backend, &token, "DELETE /admin/sessions/{id}").await;

    let token = login(&a, "alice").await;
    warm(&a, &token).await;
    assert_eq!(
        admin(&b, "DELETE", "/admin/users/alice/sessions").await,
        204
    );
    assert_refused_within_the_bound(&a, &backend, &token, "DELETE /admin/users/{id}/sessions")
        .await;
}

/// Every strategy: a logout and a logout-all answered by one gate reach the other's
/// warm cache. Under denylist the logout-all is a cut-off; under user-status both are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_on_another_gate_reach_a_warm_cache_under_every_strategy() {
    for strategy in ["allowlist", "denylist", "user-status"] {
        let backend = Backend::start().await;
        let a = gate(&backend, strategy).await;
        let b = second_gate(&a, &backend, strategy).await;

        let token = login(&a, "alice").await;
        warm(&a, &token).await;
        assert_eq!(post_with(&b.url("/logout"), &token).await.status, 204);
        assert_refused_within_the_bound(&a, &backend, &token, &format!("{strategy}: logout")).await;

        // A new login (capture) after the revocation passes at once, on both gates.
        let first = login(&a, "alice").await;
        assert_eq!(call(&a, &first).await, 200, "{strategy}");
        warm(&a, &first).await;
        // A second login, so that logout-all has more than the token used to end.
        let second = login(&b, "alice").await;
        warm(&a, &second).await;
        assert_eq!(post_with(&b.url("/logout-all"), &second).await.status, 204);
        for t in [&first, &second] {
            assert_refused_within_the_bound(&a, &backend, t, &format!("{strategy}: logout-all"))
                .await;
        }
        let again = login(&b, "alice").await;
        assert_eq!(
            call(&a, &again).await,
            200,
            "{strategy}: a capture after logout-all"
        );
        assert_eq!(call(&b, &again).await, 200, "{strategy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_the_same_gate_is_refused_at_once() {
    for strategy in ["allowlist", "denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = gate(&backend, strategy).await;
        let token = login(&gate, "alice").await;
        let other = login(&gate, "alice").await;
        warm(&gate, &token).await;
        warm(&gate, &other).await;
        assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
        // No wait: the door forgets the token in this process before answering, and
        // under user-status (where a logout is a cut-off) every token of the user.
        assert_eq!(call(&gate, &token).await, 401, "{strategy}");
        let expected = if strategy == "user-status" { 401 } else { 200 };
        assert_eq!(call(&gate, &other).await, expected, "{strategy}");
        assert_eq!(
            post_with(&gate.url("/logout-all"), &login(&gate, "alice").await)
                .await
                .status,
            204
        );
        assert_eq!(call(&gate, &other).await, 401, "{strategy}: logout-all");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_off_reads_the_store_on_every_request() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &config("allowlist", "enabled = false")).await;
    let config = cli_config(&gate, "allowlist");
    let token = login(&gate, "alice").await;
    for _ in 0..5 {
        assert_eq!(call(&gate, &token).await, 200);
    }
    cli(&["tokens", "revoke", "--user", "alice"], &config);
    // The very next request: no bound to wait for.
    assert_eq!(call(&gate, &token).await, 401);
    assert_eq!(gate.app.metrics.cache_hits.get(), 0);
    assert_eq!(gate.app.metrics.cache_misses.get(), 0);
    assert!(gate.app.cache.is_empty());
}

/// A forged signature over a cached token's payload is a miss, and the verifier says no.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_payload_with_another_signature_is_verified_again() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;
    let token = login(&gate, "alice").await;
    warm(&gate, &token).await;
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signing_input}.{}", "A".repeat(43));
    let before = backend.count();
    assert_eq!(call(&gate, &forged).await, 401);
    backend.assert_untouched(before);
}

/// The feed's metrics are exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_and_cache_metrics_are_exported() {
    let backend = Backend::start().await;
    let a = gate(&backend, "allowlist").await;
    let b = second_gate(&a, &backend, "allowlist").await;
    let token = login(&a, "alice").await;
    warm(&a, &token).await;
    assert_eq!(post_with(&b.url("/logout"), &token).await.status, 204);
    assert_refused_within_the_bound(&a, &backend, &token, "logout").await;
    let text = get(&format!("http://{}/metrics", a.admin), &[]).await;
    let text = String::from_utf8_lossy(&text.body).to_string();
    for line in [
        "tokengate_cache_hits_total",
        "tokengate_cache_misses_total",
        "tokengate_cache_entries",
        "tokengate_revocation_lag_seconds_count 1",
        "tokengate_feed_errors_total 0",
        "tokengate_feed_stale 0",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    let text = get(&format!("http://{}/metrics", b.admin), &[]).await;
    let text = String::from_utf8_lossy(&text.body).to_string();
    assert!(
        text.contains("tokengate_revocations_total{kind=\"logout\",by=\"self\"} 1"),
        "{text}"
    );
}

/// A feed that cannot be read (its table gone) is counted, makes the cache stale, and
/// from then on every request goes to the store: cached verdicts are bypassed, never
/// trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_feed_bypasses_the_cache() {
    let backend = Backend::start().await;
    let gate = gate(&backend, "allowlist").await;
    let token = login(&gate, "alice").await;
    warm(&gate, &token).await;
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    conn.execute_batch("DROP TABLE revocation_log").unwrap();
    eventually(EVENTUALLY, "the feed error is counted", || {
        gate.app.metrics.feed_errors_count() > 0
    })
    .await;
    tokio::time::sleep(BOUND).await;
    assert!(!gate.app.cache.is_current());
    let hits = gate.app.metrics.cache_hits.get();
    // The store still knows the token: it passes, but from the store.
    assert_eq!(call(&gate, &token).await, 200);
    assert_eq!(
        gate.app.metrics.cache_hits.get(),
        hits,
        "no hit while stale"
    );
    let text = get(&format!("http://{}/metrics", gate.admin), &[]).await;
    let text = String::from_utf8_lossy(&text.body).to_string();
    assert!(text.contains("tokengate_feed_stale 1"), "{text}");
    // And a revocation made now, by another process, is refused at once.
    let config = cli_config(&gate, "allowlist");
    let out = output_of(
        Command::new(BIN)
            .args(["tokens", "revoke", "--user", "alice", "--config"])
            .arg(&config),
    );
    // The CLI cannot append its feed row either: the revocation fails as a whole.
    assert!(!out.status.success());
    assert_eq!(call(&gate, &token).await, 200, "nothing was revoked");
}

// ---- PostgreSQL: replicas, a killed listener, an outage ----

async fn pg_gate(backend: &Backend, strategy: &str, url: &str) -> Gate {
    std::env::set_var("FEED_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    Gate::start_config(backend, &config(strategy, CACHE_ON).postgres(url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_logout_reaches_the_other_replicas_warm_cache() {
    let schema = PgSchema::create().await;
    for strategy in ["allowlist", "denylist", "user-status"] {
        let backend = Backend::start().await;
        let a = pg_gate(&backend, strategy, &schema.url).await;
        let b = pg_gate(&backend, strategy, &schema.url).await;
        let token = login(&a, &format!("alice-{strategy}")).await;
        warm(&a, &token).await;
        assert_eq!(post_with(&b.url("/logout"), &token).await.status, 204);
        assert_refused_within_the_bound(&a, &backend, &token, &format!("{strategy}: logout")).await;
        let token = login(&a, &format!("bob-{strategy}")).await;
        warm(&a, &token).await;
        assert_eq!(post_with(&b.url("/logout-all"), &token).await.status, 204);
        assert_refused_within_the_bound(&a, &backend, &token, &format!("{strategy}: logout-all"))
            .await;
    }
}

/// The listener's connection killed by the server: revocations are still refused within
/// the bound (the poll carries on), the listener comes back, and the cache serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_keeps_the_bound_and_comes_back() {
    let schema = PgSchema::create().await;
    let backend = Backend::start().await;
    let a = pg_gate(&backend, "allowlist", &schema.url).await;
    let b = pg_gate(&backend, "allowlist", &schema.url).await;
    // Polls for up to 5 s until both replicas' `-feed` connections are there.
    let two_listeners = || async {
        let mut n = 0;
        for _ in 0..500 {
            let row = pg_admin()
                .await
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&format!("{}-feed", schema.name)],
                )
                .await
                .unwrap();
            n = row.get::<_, i64>(0);
            if n == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n
    };
    assert_eq!(two_listeners().await, 2, "one listener per replica");
    for round in 0..2 {
        let killed: i64 = pg_admin()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("{}-feed", schema.name)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 2, "round {round}");
        let token = login(&a, "alice").await;
        warm(&a, &token).await;
        assert_eq!(post_with(&b.url("/logout"), &token).await.status, 204);
        assert_refused_within_the_bound(&a, &backend, &token, "logout, listener killed").await;
    }
    assert_eq!(two_listeners().await, 2, "the listeners reconnected");
    assert!(a.app.metrics.cache_hits.get() > 0);
}

/// The database out of reach (every connection cut, new ones refused, as a restart or
/// a partition looks from the replica): the cache is bypassed as soon as the feed is
/// stale, so a warm token gets 503, never a cached 200; a revocation made meanwhile by
/// the replica that can still reach the database is refused once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_bypasses_the_cache_and_recovers() {
    let schema = PgSchema::create().await;
    let backend = Backend::start().await;
    let relay = Relay::start().await;
    let a = pg_gate(&backend, "allowlist", &schema.url_via(relay.addr)).await;
    let b = pg_gate(&backend, "allowlist", &schema.url).await;
    let token = login(&b, "alice").await;
    let kept = login(&b, "bob").await;
    warm(&a, &token).await;
    warm(&a, &kept).await;

    relay.cut();
    assert_eq!(post_with(&b.url("/logout"), &token).await.status, 204);
    tokio::time::sleep(BOUND).await;
    let before = backend.count();
    for t in [&token, &kept] {
        let status = call(&a, t).await;
        assert_eq!(status, 503, "a stale cache is bypassed: the store decides");
    }
    backend.assert_untouched(before);
    let metrics = get(&format!("http://{}/metrics", a.admin), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(metrics.contains("tokengate_feed_stale 1"), "{metrics}");

    relay.restore();
    eventually(EVENTUALLY, "the feed is current again", || {
        a.app.cache.is_current()
    })
    .await;
    assert_eq!(call(&a, &token).await, 401, "revoked during the outage");
    assert_eq!(call(&a, &kept).await, 200);
    warm(&a, &kept).await;
    assert!(a.app.metrics.feed_errors_count() > 0);
}
