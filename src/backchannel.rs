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

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};
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
        Ok(()) => Ok((Outcome::BackchannelLogout, ok())),
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
    if !is_form(&request) {
        return Err(BadRequest::ContentType.into());
    }
    // The same bound as a presented refresh token's body (64 KiB).
    let bytes = crate::capture::collect_limited(request.into_body())
        .await
        .ok_or(BadRequest::Body)?;
    let raw = form_field(&bytes, FIELD)?;
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

/// Whether the request says its body is a form (parameters such as `charset` allowed).
fn is_form<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The one value of `field` in a form body, decoded (`+` is a space, `%XX` a byte);
/// a body that is not UTF-8 or holds a broken escape is not a form, and a field given
/// twice is ambiguous.
fn form_field(body: &[u8], field: &str) -> Result<String, BadRequest> {
    let text = std::str::from_utf8(body).map_err(|_| BadRequest::Form)?;
    let mut found = None;
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(name)? != field {
            continue;
        }
        if found.is_some() {
            return Err(BadRequest::TwoTokens);
        }
        found = Some(decode(value)?);
    }
    found
        .filter(|token| !token.is_empty())
        .ok_or(BadRequest::NoToken)
}

/// Decodes one form component strictly (RFC 1866 §8.2.1, WHATWG URL
/// `application/x-www-form-urlencoded` with invalid escapes refused).
fn decode(component: &str) -> Result<String, BadRequest> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(BadRequest::Form)?;
                let hex = std::str::from_utf8(hex).map_err(|_| BadRequest::Form)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| BadRequest::Form)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BadRequest::Form)
}

/// 200 with no body; `Cache-Control: no-store` (§2.8).
fn ok() -> Response<Body> {
    let mut response = Response::new(body::empty());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_read_strictly() {
        let field = |body: &str| form_field(body.as_bytes(), FIELD).map_err(|e| e.to_string());
        assert_eq!(field("logout_token=a.b.c").unwrap(), "a.b.c");
        assert_eq!(field("x=1&logout_token=a%2Eb+c&&").unwrap(), "a.b c");
        assert_eq!(field("logout%5Ftoken=t").unwrap(), "t");
        for (body, problem) in [
            ("", "no logout_token"),
            ("logout_token=", "no logout_token"),
            ("token=a", "no logout_token"),
            ("logout_token=a&logout_token=b", "more than one"),
            ("logout_token=a%2", "not a valid form"),
            ("logout_token=a%zz", "not a valid form"),
            ("logout_token=%ff", "not a valid form"),
        ] {
            assert!(field(body).unwrap_err().contains(problem), "{body}");
        }
        assert!(form_field(b"logout_token=\xff", FIELD).is_err());
    }

    #[test]
    fn only_a_form_content_type_is_taken() {
        let with = |value: &str| {
            Request::builder()
                .header(CONTENT_TYPE, value)
                .body(())
                .unwrap()
        };
        assert!(is_form(&with("application/x-www-form-urlencoded")));
        assert!(is_form(&with(
            "Application/X-WWW-Form-Urlencoded ; charset=UTF-8"
        )));
        for other in ["application/json", "text/plain", "multipart/form-data"] {
            assert!(!is_form(&with(other)), "{other}");
        }
        assert!(!is_form(&Request::new(())));
    }
}
