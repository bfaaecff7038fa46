//! One behaviour suite, written once and run for each revocation strategy (SPEC §1),
//! followed by what sets the strategies apart, and the cut-off-and-the-second sequence.
//!
//! Everything goes through real HTTP: tokens are captured from the backend's `/login`,
//! used on a protected route, and revoked with `/logout` and `/logout-all`.

mod common;
use common::*;

use serde_json::json;

const STRATEGIES: [&str; 3] = ["allowlist", "denylist", "user-status"];

/// Calls a protected route with `token`; the status.
async fn call(gate: &Gate, token: &str) -> u16 {
    get_with(&gate.url("/api/me"), token).await.status.as_u16()
}

/// Runs `body` once per strategy, each with its own backend and gate.
macro_rules! for_each_strategy {
    ($name:ident, |$gate:ident, $backend:ident, $strategy:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            for $strategy in STRATEGIES {
                let $backend = Backend::start().await;
                let $gate = Gate::start_strategy(&$backend, $strategy).await;
                $body
            }
        }
    };
}

for_each_strategy!(
    a_captured_token_passes_with_its_identity,
    |gate, backend, strategy| {
        let token = login(&gate, "alice").await;
        assert_eq!(call(&gate, &token).await, 200, "{strategy}");
        assert_eq!(backend.last().all("x-user-id"), vec!["alice"], "{strategy}");
    }
);

for_each_strategy!(
    logout_kills_the_token_used_at_once,
    |gate, backend, strategy| {
        let token = login(&gate, "alice").await;
        assert_eq!(
            post_with(&gate.url("/logout"), &token).await.status,
            204,
            "{strategy}"
        );
        let before = backend.count();
        let r = get_with(&gate.url("/api/me"), &token).await;
        assert_refusal(&r, 401);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_token"),
            "{strategy}"
        );
        backend.assert_untouched_because(
            before,
            &format!("{strategy}: a revoked token reached the backend"),
        );
    }
);

for_each_strategy!(
    logout_all_kills_every_token_of_the_user_and_no_other,
    |gate, backend, strategy| {
        let a1 = login(&gate, "alice").await;
        let a2 = login(&gate, "alice").await;
        let bob = login(&gate, "bob").await;
        assert_eq!(
            post_with(&gate.url("/logout-all"), &a1).await.status,
            204,
            "{strategy}"
        );
        let before = backend.count();
        assert_eq!(call(&gate, &a1).await, 401, "{strategy}");
        assert_eq!(call(&gate, &a2).await, 401, "{strategy}");
        backend.assert_untouched_because(before, strategy);
        assert_eq!(
            call(&gate, &bob).await,
            200,
            "{strategy}: another user must stay logged in"
        );
    }
);

for_each_strategy!(revocations_survive_a_restart, |gate, backend, strategy| {
    let _ = &backend;
    let live = login(&gate, "alice").await;
    let dead = login(&gate, "bob").await;
    assert_eq!(post_with(&gate.url("/logout"), &dead).await.status, 204);
    let gate = gate.restart().await;
    assert_eq!(call(&gate, &live).await, 200, "{strategy}");
    assert_eq!(call(&gate, &dead).await, 401, "{strategy}");
});

for_each_strategy!(
    a_revoked_token_cannot_log_out_again,
    |gate, backend, strategy| {
        let _ = &backend;
        let token = login(&gate, "alice").await;
        assert_eq!(
            post_with(&gate.url("/logout-all"), &token).await.status,
            204
        );
        assert_eq!(
            post_with(&gate.url("/logout"), &token).await.status,
            401,
            "{strategy}"
        );
        assert_eq!(
            post_with(&gate.url("/logout-all"), &token).await.status,
            401,
            "{strategy}"
        );
    }
);

for_each_strategy!(
    a_cli_or_admin_revocation_is_honoured_on_the_next_request,
    |gate, backend, strategy| {
        let _ = &backend;
        let token = login(&gate, "alice").await;
        revoke_alice(&gate).await;
        assert_eq!(call(&gate, &token).await, 401, "{strategy}");
    }
);

/// The cut-off and the second (SPEC §1): within one second, log in twice, log out
/// everywhere with the first token, log in again. The two older tokens are dead, the
/// new one (captured after the cut-off) works, under every strategy.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_in_the_same_second_as_logout_all_works_through_capture() {
    for strategy in STRATEGIES {
        let backend = Backend::start().await;
        let gate = Gate::start_strategy(&backend, strategy).await;
        // Retry until the whole sequence fits in one second (it takes a few ms).
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(
                attempts <= 10,
                "{strategy}: could not fit the sequence in one second"
            );
            let start = now();
            let first = login(&gate, "alice").await;
            let second = login(&gate, "alice").await;
            assert_eq!(
                post_with(&gate.url("/logout-all"), &first).await.status,
                204
            );
            let fresh = login(&gate, "alice").await;
            if now() != start {
                // The second turned over mid-sequence; the case is not the one under test.
                revoke_alice(&gate).await;
                continue;
            }
            assert_eq!(
                call(&gate, &first).await,
                401,
                "{strategy}: the token used to log out"
            );
            assert_eq!(
                call(&gate, &second).await,
                401,
                "{strategy}: a token issued before the logout"
            );
            assert_eq!(
                call(&gate, &fresh).await,
                200,
                "{strategy}: a login right after the logout"
            );
            // And a later logout-all, in that same second, kills the fresh one too.
            assert_eq!(
                post_with(&gate.url("/logout-all"), &fresh).await.status,
                204
            );
            assert_eq!(
                call(&gate, &fresh).await,
                401,
                "{strategy}: the exception must not outlive a new cut-off"
            );
            break;
        }
    }
}

#[tokio::test]
async fn allowlist_refuses_a_valid_token_it_never_captured() {
    let backend = Backend::start().await;
    let gate = Gate::start_strategy(&backend, "allowlist").await;
    assert_eq!(call(&gate, &mint(&claims("alice"))).await, 401);
    backend.assert_untouched(0);
}

#[tokio::test]
async fn denylist_and_user_status_accept_a_valid_token_they_never_saw() {
    for strategy in ["denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = Gate::start_strategy(&backend, strategy).await;
        assert_eq!(
            call(&gate, &mint(&claims("alice"))).await,
            200,
            "{strategy}"
        );
    }
}

#[tokio::test]
async fn denylist_logout_kills_one_token_and_keeps_the_others() {
    let backend = Backend::start().await;
    let gate = Gate::start_strategy(&backend, "denylist").await;
    let a1 = login(&gate, "alice").await;
    let a2 = mint(&claims("alice"));
    assert_eq!(post_with(&gate.url("/logout"), &a1).await.status, 204);
    assert_eq!(call(&gate, &a1).await, 401);
    assert_eq!(call(&gate, &a2).await, 200);
    assert_eq!(rows(&gate, "invalid_token"), 1);
}

#[tokio::test]
async fn user_status_cannot_tell_logout_from_logout_all() {
    let backend = Backend::start().await;
    let gate = Gate::start_strategy(&backend, "user-status").await;
    let a1 = login(&gate, "alice").await;
    let a2 = login(&gate, "alice").await;
    let bob = login(&gate, "bob").await;
    assert_eq!(post_with(&gate.url("/logout"), &a1).await.status, 204);
    assert_eq!(call(&gate, &a1).await, 401);
    assert_eq!(
        call(&gate, &a2).await,
        401,
        "one row per user: logout is logout-all"
    );
    assert_eq!(call(&gate, &bob).await, 200);
    assert_eq!(rows(&gate, "user_status"), 1);
}

#[tokio::test]
async fn denylist_and_user_status_refuse_a_token_without_iat() {
    for strategy in ["denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = Gate::start_strategy(&backend, strategy).await;
        let token = mint(&json!({"sub": "alice", "exp": now() + 600}));
        let r = get_with(&gate.url("/api/me"), &token).await;
        assert_refusal(&r, 401);
        // The client is told what is missing, not that the token was revoked.
        let needs = format!("the token has no iat, which the {strategy} strategy needs");
        assert_eq!(r.json()["error"], "invalid_token", "{strategy}");
        assert_eq!(r.json()["error_description"], needs.as_str(), "{strategy}");
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            format!("Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"{needs}\""),
            "{strategy}"
        );
        backend.assert_untouched_because(0, &format!("{strategy}: the backend saw nothing"));
    }
}

#[tokio::test]
async fn a_token_issued_after_the_cut_off_passes() {
    for strategy in ["denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = Gate::start_strategy(&backend, strategy).await;
        let old = mint(&claims("alice"));
        revoke_alice(&gate).await;
        // Not captured, so it needs an iat after the cut-off second.
        let mut newer = claims("alice");
        newer["iat"] = json!(now() + 1);
        let newer = mint(&newer);
        assert_eq!(call(&gate, &old).await, 401, "{strategy}");
        assert_eq!(call(&gate, &newer).await, 200, "{strategy}");
    }
}

#[tokio::test]
async fn sessions_are_a_404_with_a_clear_error_where_no_list_is_kept() {
    for strategy in ["denylist", "user-status"] {
        let backend = Backend::start().await;
        let gate = Gate::start_strategy(&backend, strategy).await;
        let token = login(&gate, "alice").await;
        let r = get_with(&gate.url("/sessions"), &token).await;
        assert_refusal(&r, 404);
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("not kept"),
            "{strategy}"
        );
        assert_eq!(backend.count(), 1, "only the login reached the backend");
    }
}

/// What `tokens revoke --user alice` and `DELETE /admin/users/alice/sessions` call.
async fn revoke_alice(gate: &Gate) {
    gate.app
        .revocations
        .revoke(
            tokengate::strategy::Target::User("alice"),
            tokengate::store::Actor::Admin,
        )
        .await
        .unwrap();
}
