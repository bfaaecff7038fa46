//! The shortest end-to-end story: login through the proxy, call, logout, refused.

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
    assert_eq!(
        backend.count(),
        before,
        "a refused request must not reach the backend"
    );
}
