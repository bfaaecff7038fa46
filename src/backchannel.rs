//! `routes.backchannel_logout`: OpenID Connect Back-Channel Logout 1.0 (SPEC §13).
//!
//! An identity provider ends a user's sessions here, server to server: `POST`, a form
//! (`application/x-www-form-urlencoded`, at most [`MAX_BODY`]) with one `logout_token`,
//! a JWT signed with the keys tokengate already trusts. This module reads the request,
//! has the token verified by the logout-token rules ([`crate::jwt::logout`]) and turns
//! it into one revocation through the door ([`Revocations::revoke_once`], actor
//! `backchannel`), so the feed row, the cache, the tunnels, the metric and the audit
//! line follow as for any revocation:
//!
//! - `sub` alone: every session of that user (logout-all; under `denylist` and
//!   `user-status` the user's cut-off);
//! - `sid`, with or without `sub`: every session one of whose tokens carried that `sid`
//!   claim (and is `sub`'s, when given); feed kind `session`. Under `denylist` and
//!   `user-status`, which keep no sessions, `sid` with `sub` cuts the user off, and
//!   `sid` alone cannot be resolved (400).
//!
//! The token's `jti` is remembered in the revocation's own transaction until the token
//! can no longer verify (`exp` plus the leeway), so a replay is refused and a failed
//! revocation does not use the `jti` up.
//!
//! Answers (§2.8): **200** once the revocation is durable, also when nothing matched
//! (the sessions are gone already); **400** `{"error": "invalid_request", ...}` for
//! anything wrong with the request or the token, never 401 (the provider is not a
//! user); **405** for another method; **503** when the store cannot answer: the logout
//! did not happen and the provider may retry (its `jti` was not used up).

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::body::Body;
use crate::form::FormError;
use crate::gate::{json_response, Refusal, Scope};
use crate::jwt::LogoutToken;
use crate::metrics::Outcome;
use crate::revocations::{Revocations, RevokeError};
use crate::store::{Actor, ReplayGuard};
use crate::strategy::Target;

/// The largest request body read; a logout token is a few KiB at most.
pub const MAX_BODY: usize = crate::capture::MAX_PRESENTED_BODY;
/// The form field holding the token (§2.5).
const FIELD: &str = "logout_token";

/// Why a back-channel logout request is refused with 400.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("the request must be application/x-www-form-urlencoded")]
    ContentType,
    #[error("the request body is larger than 64 KiB or broke off")]
    Body,
    #[error("the request body is not a valid form")]
    Form,
    #[error("the form has no logout_token")]
    NoToken,
    #[error("the form has more than one logout_token")]
    TwoTokens,
    #[error("{0}")]
    Token(#[from] crate::jwt::LogoutTokenError),
    #[error("this logout token was used already (its jti was seen)")]
    Replayed,
    #[error(
        "the {0} strategy keeps no sessions: a logout token with sid and no sub cannot be resolved"
    )]
    SidOnly(crate::strategy::StrategyKind),
}

/// Handles `POST routes.backchannel_logout`.
pub async fn logout(
    app: &Scope<'_>,
    request: Request<Body>,
) -> Result<(Outcome, Response<Body>), Refusal> {
    if request.method() != Method::POST {
        return Err(Refusal::MethodNotAllowed("POST"));
    }
    match end_sessions(app, request).await {
        Ok(()) => Ok((Outcome::BackchannelLogout, crate::gate::empty_no_store())),
        Err(Failure::Bad(e)) => {
            tracing::warn!(reason = %e, "back-channel logout refused");
            let body = json!({"error": "invalid_request", "error_description": e.to_string()});
            Ok((
                Outcome::BackchannelRefused,
                json_response(StatusCode::BAD_REQUEST, &body),
            ))
        }
        Err(Failure::Refused(refusal)) => Err(refusal),
    }
}

/// What stopped a logout: the request (400), or tokengate (the store: 503).
enum Failure {
    Bad(BadRequest),
    Refused(Refusal),
}

impl From<BadRequest> for Failure {
    fn from(e: BadRequest) -> Failure {
        Failure::Bad(e)
    }
}

impl From<crate::jwt::LogoutTokenError> for Failure {
    fn from(e: crate::jwt::LogoutTokenError) -> Failure {
        Failure::Bad(BadRequest::Token(e))
    }
}

/// Reads, verifies and acts on the logout token of a request.
async fn end_sessions(app: &Scope<'_>, request: Request<Body>) -> Result<(), Failure> {
    let (parts, body) = request.into_parts();
    let form = crate::form::read(&parts.headers, body)
        .await
        .map_err(|e| match e {
            FormError::NotAForm => BadRequest::ContentType,
            FormError::Unreadable => BadRequest::Body,
            FormError::Malformed => BadRequest::Form,
            FormError::Ambiguous => BadRequest::TwoTokens,
        })?;
    let raw = match form.get(FIELD) {
        Ok(Some(raw)) => raw.to_owned(),
        Ok(None) => return Err(BadRequest::NoToken.into()),
        Err(_) => return Err(BadRequest::TwoTokens.into()),
    };
    let token = app.verifier.verify_logout_token_fresh(&raw).await?;
    revoke(&app.revocations, &token, app.verifier.leeway()).await
}

/// The revocation a verified logout token asks for, made once under its `jti`.
async fn revoke(
    revocations: &Revocations,
    token: &LogoutToken,
    leeway: i64,
) -> Result<(), Failure> {
    let target = match (&token.sid, &token.sub) {
        (Some(sid), user) => Target::Sid {
            sid,
            user: user.as_deref(),
        },
        (None, Some(user)) => Target::User(user),
        // The verifier refuses a token with neither.
        (None, None) => return Err(crate::jwt::LogoutTokenError::NoSubject.into()),
    };
    let guard = ReplayGuard {
        jti: token.jti.clone(),
        // Until the token can no longer verify: a replay within the leeway is refused too.
        expires_at: token.expires_at.saturating_add(leeway),
        now: crate::jwt::now(),
    };
    let sessions = match revocations
        .revoke_once(target, Actor::Backchannel, guard)
        .await
    {
        Ok(revoked) => revoked.sessions.len(),
        // Nothing carried that sid (any more): the sessions are gone, which is success.
        Err(RevokeError::NoSuchSession) => 0,
        Err(RevokeError::Replayed) => return Err(BadRequest::Replayed.into()),
        Err(RevokeError::NoSessions(kind)) => return Err(BadRequest::SidOnly(kind).into()),
        Err(RevokeError::Store(e)) => {
            return Err(Failure::Refused(Refusal::StoreUnavailable(e)));
        }
    };
    tracing::info!(
        token = %token.hash.short(),
        jti = %token.jti,
        sub = token.sub.as_deref().unwrap_or("-"),
        sid = token.sid.is_some(),
        sessions,
        "back-channel logout"
    );
    Ok(())
}
