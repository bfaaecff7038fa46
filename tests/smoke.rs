//! The shortest end-to-end story: login through the proxy, call, logout, refused; and
//! the harness's config builder, which refuses an edit that would miss the template.

mod common;
use common::*;

#[tokio::test]
async fn login_call_logout_refused() {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    let token = login(&gate, "alice").await;
    let r = get_with(&gate.url("/api/hello"), &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().all("x-user-id"), vec!["alice"]);
    let r = post_with(&gate.url("/logout"), &token).await;
    assert_eq!(r.status, 204);
    let before = backend.count();
    let r = get_with(&gate.url("/api/hello"), &token).await;
    assert_refusal(&r, 401);
    backend.assert_untouched_because(before, "a refused request must not reach the backend");
}

#[test]
fn the_config_builder_edits_keys_and_refuses_edits_that_would_miss() {
    let text = GateConfig::default()
        .set("server", "max_connections = 4")
        .set("cache", "enabled = false")
        .strategy("denylist")
        .remove("jwt", "leeway_seconds")
        .to_string();
    let table: toml::Table = text.parse().unwrap();
    assert_eq!(table["server"]["max_connections"].as_integer(), Some(4));
    assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(table["cache"]["enabled"].as_bool(), Some(false));
    assert_eq!(table["store"]["strategy"].as_str(), Some("denylist"));
    assert!(table["jwt"].get("leeway_seconds").is_none(), "{text}");
    let missing = |edit: fn(GateConfig) -> GateConfig| {
        std::panic::catch_unwind(|| edit(GateConfig::default())).is_err()
    };
    assert!(missing(|c| c.remove("jwt", "leeway_second")));
    assert!(missing(|c| c.remove("sever", "listen")));
    assert!(missing(
        |c| c.replace_sections("[jtw]\nalgorithms = [\"HS256\"]\n")
    ));
}
