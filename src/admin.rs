//! The admin listener: health, readiness, metrics and the admin API (SPEC §6).
//!
//! It listens on its own address (loopback by default) so that probes and scrapes never
//! share a port with the traffic they watch. The `/admin` routes need
//! `Authorization: Bearer <admin token>`, compared in constant time; without a
//! configured token they do not exist (404) and the rest of the listener works.
//! Every revocation made here is logged at info with `by = "admin"`: an audit trail.
//! `POST /admin/introspect` answers RFC 7662 introspection from the live store.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::body::{self, Body};
use crate::gate::{json_response, percent_decode};
use crate::revocations::RevokeError;
use crate::store::{Actor, Session, TokenKind};
use crate::strategy::{Liveness, SessionMeta, Target};

/// The most of a `POST /admin/tokens` body read (a token is at most 8 KiB).
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// Handles one request of the admin listener.
pub async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let response = match (request.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            json_response(StatusCode::OK, &json!({"status": "ok"}))
        }
        (&Method::GET | &Method::HEAD, "/readyz") => readiness(&app).await,
        (&Method::GET, "/metrics") => {
            // The live-sessions gauge is read at scrape time; a store failure leaves its
            // last value (readiness reports the outage).
            match app.strategy.live_sessions().await {
                Ok(n) => app.metrics.set_live_sessions(n),
                Err(e) => tracing::warn!(error = %e, "metrics: cannot count live sessions"),
            }
            app.metrics.set_cache_state(
                app.cache.len(),
                app.cache.enabled() && !app.cache.is_current(),
            );
            let mut response = Response::new(body::full(app.metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (_, p) if p == "/admin" || p.starts_with("/admin/") => admin_api(&app, request).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin route"),
    };
    Ok(response)
}

/// Ready when the keys are loaded (they are, or we would not have started) and the
/// store answers.
async fn readiness(app: &App) -> Response<Body> {
    // A provider's key set that failed to refresh keeps the last good one: still ready.
    if app.policy().verifier.keys().current().is_empty() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "error": "temporarily_unavailable", "error_description": "no verification keys are loaded"}),
        );
    }
    match app.strategy.ping().await {
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unavailable");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unavailable", "error": "temporarily_unavailable", "error_description": "the token store is unavailable"}),
            )
        }
    }
}

fn error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Whether the request carries the admin token. Both sides are compared in constant
/// time; only their lengths can leak.
fn authorized(expected: &str, request: &Request<Incoming>) -> bool {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes()))
}

async fn admin_api(app: &App, request: Request<Incoming>) -> Response<Body> {
    let policy = app.policy();
    let Some(expected) = policy.config.admin.token.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin API is off (no admin token configured)",
        );
    };
    if !authorized(expected, &request) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required",
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tokengate-admin\""),
        );
        return response;
    }
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (request.method().clone(), segments.as_slice()) {
        (Method::POST, ["admin", "tokens"]) => add_token(app, request).await,
        (Method::POST, ["admin", "introspect"]) => introspect(app, request).await,
        (Method::GET, ["admin", "users", user, "sessions"]) => list_user(app, &decode(user)).await,
        (Method::DELETE, ["admin", "users", user, "sessions"]) => {
            revoke_user(app, &decode(user)).await
        }
        (Method::DELETE, ["admin", "sessions", id]) => revoke_session(app, &decode(id)).await,
        _ => Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin route",
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "admin API: store unavailable");
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the token store is unavailable",
        );
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    })
}

fn decode(segment: &str) -> String {
    String::from_utf8_lossy(&percent_decode(segment)).into_owned()
}

type ApiResult = Result<Response<Body>, crate::store::StoreError>;

/// `POST /admin/tokens`: the body is the JWT (or `{"token": "..."}`); it is verified
/// exactly as a request's token would be, then registered.
async fn add_token(app: &App, request: Request<Incoming>) -> ApiResult {
    let Ok(collected) = Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    else {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the body is too large for a token",
        ));
    };
    let bytes = collected.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let raw = if text.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(String::from))
        {
            Some(t) => t,
            None => {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "expected the JWT, or {\"token\": \"<jwt>\"}",
                ))
            }
        }
    } else {
        text.to_string()
    };
    let verifier = app.policy().verifier.clone();
    let token = match verifier.verify_fresh(&raw).await {
        Ok(t) => t,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_token",
                &e.to_string(),
            ))
        }
    };
    let meta = SessionMeta {
        user_agent: Some("tokengate-admin".into()),
        client_addr: None,
    };
    let session = match app.strategy.admit(&token, meta).await {
        Ok(s) => s,
        Err(crate::strategy::AdmitError::Store(e)) => return Err(e),
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_token",
                &e.to_string(),
            ))
        }
    };
    tracing::info!(user = %token.user, token = %token.hash.short(), by = "admin", "token registered");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"user": token.user, "expires": token.expires_at, "session": session.as_ref().map(session_json)}),
    ))
}

/// `POST /admin/introspect` (RFC 7662): a form with `token=<jwt>`; `{"active": false}`
/// unless the token verifies under the current keys and is live in the store right
/// now (never from the verdict cache), then its claims and its tokengate session.
async fn introspect(app: &App, request: Request<Incoming>) -> ApiResult {
    let (parts, incoming) = request.into_parts();
    let form = match crate::form::read(&parts.headers, body::boxed(incoming)).await {
        Ok(form) => form,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &e.to_string(),
            ))
        }
    };
    let raw = match form.get("token") {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the form has no token field",
            ))
        }
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &e.to_string(),
            ))
        }
    };
    let inactive = || json_response(StatusCode::OK, &json!({"active": false}));
    let verifier = app.policy().verifier.clone();
    let token = match verifier.verify_fresh(raw).await {
        Ok(token) => token,
        Err(e) => {
            tracing::debug!(cause = %e, "introspection: the token does not verify");
            return Ok(inactive());
        }
    };
    let (kind, liveness) = app.strategy.check_any(&token).await?;
    let token_type = match kind {
        TokenKind::Access => "Bearer",
        TokenKind::Refresh => "refresh_token",
    };
    let Liveness::Live(session) = liveness else {
        return Ok(inactive());
    };
    let claim = |name: &str| {
        token
            .claims
            .get(name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let mut answer = json!({
        "active": true,
        "sub": token.claims.get("sub").cloned().unwrap_or_else(|| json!(token.user)),
        "username": token.user,
        "exp": token.expires_at,
        "iat": claim("iat"),
        "iss": claim("iss"),
        "aud": claim("aud"),
        "sid": session.as_ref().map(|s| s.session_id.clone()),
        "token_type": token_type,
    });
    if let Some(scope) = token.claims.get("scope").filter(|s| s.is_string()) {
        answer["scope"] = scope.clone();
    }
    // RFC 7662 §2.2: members without a value are left out.
    if let Some(object) = answer.as_object_mut() {
        object.retain(|_, v| !v.is_null());
    }
    Ok(json_response(StatusCode::OK, &answer))
}

fn session_json(s: &Session) -> serde_json::Value {
    json!({
        "id": s.session_id,
        "user": s.user_id,
        "created": s.created_at,
        "expires": s.expires_at,
        "user_agent": s.user_agent,
        "client_addr": s.client_addr,
    })
}

/// `GET /admin/users/{id}/sessions`
async fn list_user(app: &App, user: &str) -> ApiResult {
    match app.revocations.sessions(user).await {
        Ok(sessions) => {
            let list: Vec<_> = sessions.iter().map(session_json).collect();
            Ok(json_response(
                StatusCode::OK,
                &serde_json::Value::Array(list),
            ))
        }
        Err(e) => revoke_error(e),
    }
}

/// `DELETE /admin/users/{id}/sessions`: logout-all on behalf of a user.
async fn revoke_user(app: &App, user: &str) -> ApiResult {
    match app
        .revocations
        .revoke(Target::User(user), Actor::Admin)
        .await
    {
        Ok(_) => Ok(no_content()),
        Err(e) => revoke_error(e),
    }
}

/// `DELETE /admin/sessions/{id}`
async fn revoke_session(app: &App, id: &str) -> ApiResult {
    let target = Target::Session { id, owner: None };
    match app.revocations.revoke(target, Actor::Admin).await {
        Ok(_) => Ok(no_content()),
        Err(e) => revoke_error(e),
    }
}

/// A refused revocation as an admin answer; a store failure is the caller's 503.
fn revoke_error(e: RevokeError) -> ApiResult {
    match e {
        RevokeError::NoSessions(_) => Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "sessions are not kept under this revocation strategy",
        )),
        // (A replay needs `revoke_once`, which the admin API does not use.)
        RevokeError::NoSuchSession | RevokeError::Replayed => {
            Ok(error(StatusCode::NOT_FOUND, "not_found", "no such session"))
        }
        RevokeError::Store(e) => Err(e),
    }
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
