//! Several replicas on one PostgreSQL store (SPEC §8), through real HTTP: two gates in
//! front of one backend share a fresh schema, as two pods of one deployment would.
//!
//! A token learnt by one replica passes on the other; a logout answered by one is
//! refused by the other on its very next request, under every strategy; the CLI acts
//! on both. These replicas run with the verdict cache off (SPEC §9 `[cache] enabled =
//! false`: the store is read on every request); with it on, the same revocations are
//! refused within `cache.max_staleness_ms`, which `tests/feed.rs` proves. When the store cannot be reached a replica answers 503 and forwards nothing,
//! and it reconnects by itself once the database is back.

mod common;
use common::*;

const STRATEGIES: [&str; 3] = ["allowlist", "denylist", "user-status"];

/// Two replicas (`a`, `b`) of one deployment. Fields drop in order: the gates, then the
/// backend, then the schema.
struct Replicas {
    a: Gate,
    b: Gate,
    backend: Backend,
    schema: PgSchema,
}

impl Replicas {
    async fn start(strategy: &str) -> Replicas {
        let schema = PgSchema::create().await;
        let backend = Backend::start().await;
        let a = Gate::start_pg_uncached(&backend, strategy, &schema.url).await;
        let b = Gate::start_pg_uncached(&backend, strategy, &schema.url).await;
        Replicas {
            a,
            b,
            backend,
            schema,
        }
    }
}

/// Calls a protected route with `token`; the status.
async fn call(gate: &Gate, token: &str) -> u16 {
    get_with(&gate.url("/api/me"), token).await.status.as_u16()
}

async fn ready(gate: &Gate) -> u16 {
    let url = format!("http://{}/readyz", gate.admin);
    get(&url, &[]).await.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_captured_on_one_replica_passes_on_the_other() {
    for strategy in STRATEGIES {
        let r = Replicas::start(strategy).await;
        let token = login(&r.a, "alice").await;
        assert_eq!(call(&r.b, &token).await, 200, "{strategy}");
        assert_eq!(r.backend.last().all("x-user-id"), ["alice"], "{strategy}");
        let token = login(&r.b, "bob").await;
        assert_eq!(call(&r.a, &token).await, 200, "{strategy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_is_refused_by_the_other_at_once() {
    for strategy in STRATEGIES {
        let r = Replicas::start(strategy).await;
        let token = login(&r.a, "alice").await;
        // B has answered for this token before: nothing it remembers may outlive the logout.
        assert_eq!(call(&r.b, &token).await, 200, "{strategy}");
        let logout = post_with(&r.a.url("/logout"), &token).await;
        assert_eq!(logout.status, 204, "{strategy}");
        let before = r.backend.count();
        let refused = get_with(&r.b.url("/api/me"), &token).await;
        assert_refusal(&refused, 401);
        assert_eq!(call(&r.a, &token).await, 401, "{strategy}");
        r.backend.assert_untouched_because(
            before,
            &format!("{strategy}: a revoked token was forwarded"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_all_on_one_replica_kills_the_users_tokens_on_the_other() {
    for strategy in STRATEGIES {
        let r = Replicas::start(strategy).await;
        let on_a = login(&r.a, "alice").await;
        let on_b = login(&r.b, "alice").await;
        let bob = login(&r.a, "bob").await;
        let logout_all = post_with(&r.b.url("/logout-all"), &on_b).await;
        assert_eq!(logout_all.status, 204, "{strategy}");
        assert_eq!(call(&r.a, &on_a).await, 401, "{strategy}");
        assert_eq!(call(&r.a, &on_b).await, 401, "{strategy}");
        assert_eq!(call(&r.b, &on_a).await, 401, "{strategy}");
        assert_eq!(
            call(&r.a, &bob).await,
            200,
            "{strategy}: another user stays in"
        );
        // A login right after, even in the same second, works on both replicas.
        let again = login(&r.a, "alice").await;
        assert_eq!(call(&r.b, &again).await, 200, "{strategy}");
        assert_eq!(call(&r.a, &again).await, 200, "{strategy}");
    }
}

/// Writes a config file for the CLI on the replicas' schema.
fn cli_config(
    r: &Replicas,
    dir: &std::path::Path,
    strategy: &str,
    url: &str,
) -> std::path::PathBuf {
    GateConfig::default()
        .strategy(strategy)
        .postgres(url)
        .write(dir, r.backend.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_acts_on_every_replica() {
    let r = Replicas::start("allowlist").await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(&r, dir.path(), "allowlist", &r.schema.url);
    let alice = login(&r.a, "alice").await;
    let bob = login(&r.b, "bob").await;

    let listed = run(&["tokens", "list", "--user", "alice"], &config);
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 2);

    let revoked = run(&["tokens", "revoke", "--user", "alice"], &config);
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(call(&r.a, &alice).await, 401);
    assert_eq!(call(&r.b, &alice).await, 401);
    assert_eq!(call(&r.b, &bob).await, 200);

    let pruned = run(&["prune"], &config);
    assert!(pruned.status.success(), "{pruned:?}");
    assert!(String::from_utf8_lossy(&pruned.stdout).starts_with("pruned 0 rows"));
    assert_eq!(r.schema.rows("valid_token").await, 1);

    // An unreachable database is one line, without the password.
    let port = closed_port().await;
    let down = format!("postgres://tg:hunter2@127.0.0.1:{port}/test");
    let config = cli_config(&r, dir.path(), "allowlist", &down);
    let out = run(&["tokens", "list", "--user", "alice"], &config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_503_never_a_forward_and_the_replica_recovers() {
    let r = Replicas::start("allowlist").await;
    let relay = Relay::start().await;
    // Replica C reaches the shared database through the relay.
    let c = Gate::start_pg_uncached(&r.backend, "allowlist", &r.schema.url_via(relay.addr)).await;
    let token = login(&r.a, "alice").await;
    assert_eq!(call(&c, &token).await, 200);

    relay.cut();
    let before = r.backend.count();
    for _ in 0..3 {
        let reply = get_with(&c.url("/api/me"), &token).await;
        assert_refusal(&reply, 503);
        assert!(reply.header("retry-after").is_some());
    }
    assert_eq!(post_with(&c.url("/logout"), &token).await.status, 503);
    // A login is still forwarded (capture routes need no store); its capture fails.
    assert!(!login(&c, "carol").await.is_empty());
    assert_eq!(
        r.backend.count(),
        before + 1,
        "only the login reached the backend"
    );
    assert_eq!(ready(&c).await, 503);

    // The other replicas go on, and a logout made meanwhile holds on C once it is back.
    assert_eq!(ready(&r.a).await, 200);
    assert_eq!(post_with(&r.a.url("/logout"), &token).await.status, 204);
    let fresh = login(&r.b, "alice").await;

    relay.restore();
    assert_eq!(call(&c, &token).await, 401);
    assert_eq!(call(&c, &fresh).await, 200);
    assert_eq!(ready(&c).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_by_the_server_are_replaced_without_a_503() {
    let r = Replicas::start("allowlist").await;
    let token = login(&r.a, "alice").await;
    for round in 0..2 {
        // Both replicas' connections (3 each at first; later only those reopened, since a
        // dead connection is replaced on its next use).
        let killed = r.schema.terminate_sessions().await;
        assert!(
            killed >= if round == 0 { 6 } else { 1 },
            "round {round}: {killed}"
        );
        assert_eq!(call(&r.a, &token).await, 200, "round {round}");
        assert_eq!(call(&r.b, &token).await, 200, "round {round}");
        let fresh = login(&r.b, "alice").await;
        assert_eq!(call(&r.a, &fresh).await, 200, "round {round}");
    }
}
