//! WebSockets through tokengate (SPEC §12), with a real WebSocket client
//! (tokio-tungstenite) and a real WebSocket backend (tests/common/backend.rs).
//!
//! The handshake is authenticated like any request: no token or a dead one is a 401
//! and never a 101, and the backend sees nothing. A live token opens a tunnel that
//! carries the identity headers on its handshake and echoes; the tunnel closes when its
//! token is revoked (this process, another process through the feed, another replica
//! through PostgreSQL, with the cache on or off) or expires, and not when another
//! session of the same user ends.

mod common;
use common::*;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest a tunnel may take to close in these tests: far above the bound
/// (`cache.max_staleness_ms`, 100 ms), so that only a tunnel that never closes fails.
const CLOSES_WITHIN: Duration = Duration::from_secs(5);

/// Opens a WebSocket to `path` on the gate, with a bearer token when given.
async fn connect(gate: &Gate, path: &str, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{}{}", gate.addr, path)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Sends a text message and reads its echo.
async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(CLOSES_WITHIN, ws.next())
        .await
        .expect("no echo in time")
        .expect("the tunnel closed")
        .expect("the tunnel failed");
    assert_eq!(reply, Message::text(text));
}

/// Waits for the tunnel to end (closed or reset); panics if it stays open.
async fn assert_closes(ws: &mut Ws, why: &str) {
    let ended = tokio::time::timeout(CLOSES_WITHIN, async {
        match ws.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("{why}: unexpected message {other:?}"),
        }
    })
    .await;
    assert!(ended.is_ok(), "{why}: the tunnel stayed open");
}

/// `tokengate_tunnels_open` as the admin listener reports it.
async fn tunnels_open(gate: &Gate) -> u64 {
    let metrics = get(&format!("http://{}/metrics", gate.admin), &[]).await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tokengate_tunnels_open "))
        .expect("tokengate_tunnels_open is exported")
        .trim()
        .parse()
        .unwrap()
}

async fn assert_tunnels_open(gate: &Gate, expected: u64) {
    let deadline = std::time::Instant::now() + CLOSES_WITHIN;
    loop {
        let open = tunnels_open(gate).await;
        if open == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tokengate_tunnels_open stayed {open}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of a refused handshake.
fn refused_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a 101"),
    }
}

/// A config file for the CLI on the gate's own database.
fn cli_config(gate: &Gate, backend: &Backend) -> std::path::PathBuf {
    let dir = gate.dir.path().join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    GateConfig::default().write_at(&dir, backend.addr, &gate.db_path())
}

#[tokio::test]
async fn a_handshake_without_a_live_token_is_refused_and_never_reaches_the_backend() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let before = backend.count();
    assert_eq!(refused_status(connect(&gate, "/api/ws", None).await), 401);
    assert_eq!(
        refused_status(connect(&gate, "/api/ws", Some("not-a-jwt")).await),
        401
    );
    // A token that verifies but was never captured (allowlist): unknown.
    let unknown = mint(&claims("alice"));
    assert_eq!(
        refused_status(connect(&gate, "/api/ws", Some(&unknown)).await),
        401
    );
    // A logged-out token.
    let token = login(&gate, "alice").await;
    assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
    let before_logout = backend.count();
    assert_eq!(
        refused_status(connect(&gate, "/api/ws", Some(&token)).await),
        401
    );
    backend.assert_untouched(before_logout);
    // The login went through; nothing else did.
    assert_eq!(backend.count(), before + 1);
    assert_eq!(tunnels_open(&gate).await, 0);
}

#[tokio::test]
async fn a_live_token_opens_a_tunnel_with_the_identity_on_its_handshake() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let mut ws = connect(&gate, "/api/ws", Some(&token)).await.unwrap();
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/ws");
    assert_eq!(seen.all("x-user-id"), ["alice"]);
    assert_eq!(seen.all("upgrade"), ["websocket"]);
    assert_eq!(seen.all("connection"), ["upgrade"]);
    assert_eq!(seen.all("sec-websocket-version"), ["13"]);
    assert!(seen.all("authorization")[0].starts_with("Bearer "));
    echo(&mut ws, "hello").await;
    echo(&mut ws, &"x".repeat(100_000)).await;
    assert_eq!(tunnels_open(&gate).await, 1);
    ws.close(None).await.unwrap();
    // The close handshake, then the client goes.
    assert_closes(&mut ws, "after the client's close").await;
    drop(ws);
    assert_tunnels_open(&gate, 0).await;
}

#[tokio::test]
async fn a_client_copy_of_the_identity_header_never_reaches_the_backend_on_a_handshake() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let mut request = format!("ws://{}/api/ws", gate.addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert("x-user-id", "admin".parse().unwrap());
    headers.insert("x_user_id", "admin".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(backend.last().all("x-user-id"), ["alice"]);
    assert!(backend.last().all("x_user_id").is_empty());
    echo(&mut ws, "hi").await;
}

#[tokio::test]
async fn logout_from_another_connection_closes_the_tunnel() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let mut ws = connect(&gate, "/api/ws", Some(&token)).await.unwrap();
    echo(&mut ws, "before").await;
    assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
    assert_closes(&mut ws, "after /logout").await;
    assert_tunnels_open(&gate, 0).await;
    // And it cannot be opened again.
    let before = backend.count();
    assert_eq!(
        refused_status(connect(&gate, "/api/ws", Some(&token)).await),
        401
    );
    backend.assert_untouched(before);
}

#[tokio::test]
async fn another_session_ending_leaves_the_tunnel_open_and_logout_all_closes_it() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let phone = login(&gate, "alice").await;
    let laptop = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    let mut alice_ws = connect(&gate, "/api/ws", Some(&phone)).await.unwrap();
    let mut bob_ws = connect(&gate, "/api/ws", Some(&bob)).await.unwrap();
    assert_eq!(post_with(&gate.url("/logout"), &laptop).await.status, 204);
    // Another device of the same user: a revocation that should not close this one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo(&mut alice_ws, "still here").await;
    assert_eq!(
        post_with(&gate.url("/logout-all"), &phone).await.status,
        204
    );
    assert_closes(&mut alice_ws, "after /logout-all").await;
    echo(&mut bob_ws, "another user is untouched").await;
    assert_tunnels_open(&gate, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_another_process_closes_the_tunnel_through_the_feed() {
    for cache in ["true", "false"] {
        let backend = Backend::start().await;
        let gate = Gate::start_config(
            &backend,
            GateConfig::default().set("cache", &format!("enabled = {cache}")),
        )
        .await;
        let token = login(&gate, "alice").await;
        let mut ws = connect(&gate, "/api/ws", Some(&token)).await.unwrap();
        echo(&mut ws, "before").await;
        let config = cli_config(&gate, &backend);
        let out = tokio::task::spawn_blocking(move || {
            run(&["tokens", "revoke", "--user", "alice"], &config)
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_closes(&mut ws, &format!("CLI revocation, cache.enabled = {cache}")).await;
        assert_tunnels_open(&gate, 0).await;
    }
}

#[tokio::test]
async fn the_tunnel_closes_when_its_token_expires() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(
        &backend,
        GateConfig::default().set("jwt", "leeway_seconds = 0"),
    )
    .await;
    let mut c = claims("alice");
    c["exp"] = serde_json::json!(now() + 2);
    let token = gate.admit(mint(&c)).await;
    let mut ws = connect(&gate, "/api/ws", Some(&token)).await.unwrap();
    echo(&mut ws, "alive").await;
    assert_closes(&mut ws, "after exp").await;
    assert_tunnels_open(&gate, 0).await;
}

#[tokio::test]
async fn a_public_route_tunnels_without_a_token() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let mut ws = connect(&gate, "/public/ws", None).await.unwrap();
    assert!(backend.last().all("x-user-id").is_empty());
    echo(&mut ws, "open to all").await;
    assert_eq!(tunnels_open(&gate).await, 1);
}

#[tokio::test]
async fn a_backend_that_switches_to_an_unoffered_protocol_is_a_502() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    assert_eq!(
        refused_status(connect(&gate, "/ws-unoffered", Some(&token)).await),
        502
    );
    assert_tunnels_open(&gate, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_closes_a_tunnel_on_another() {
    let schema = PgSchema::create().await;
    let backend = Backend::start().await;
    let config = GateConfig::default().postgres(&schema.url);
    let a = Gate::start_config(&backend, &config).await;
    let b = Gate::start_config(&backend, &config).await;
    let token = login(&a, "alice").await;
    let mut ws = connect(&a, "/api/ws", Some(&token)).await.unwrap();
    echo(&mut ws, "before").await;
    assert_eq!(post_with(&b.url("/logout"), &token).await.status, 204);
    assert_closes(&mut ws, "logout on the other replica").await;
    assert_tunnels_open(&a, 0).await;
}
