//! The request pipeline of the public listener (SPEC §5), as named steps:
//!
//! 1. [`check_path`]: dot-segments and encoded slashes get 400;
//! 2. strip client copies of identity, hop-by-hop and forwarding headers, and refuse a
//!    framing name spelled with `_` ([`crate::proxy::HeaderPolicy::sanitize`]);
//! 3. route: forward-auth ([`crate::forward_auth`], answered here, never forwarded),
//!    logout, logout-all, RFC 7009 revocation, back-channel logout
//!    ([`crate::backchannel`]), sessions, capture, public, or protected;
//! 4. [`authorize`] (from the verdict cache) or [`authenticate`]: extract, verify,
//!    check liveness;
//! 5. prepare the upstream request (forwarding headers, identity) and forward
//!    ([`crate::proxy::HeaderPolicy::prepare_upstream`], [`crate::proxy::Upstream`]);
//!    an upgrade (a WebSocket) that the backend accepts becomes a tunnel
//!    ([`crate::tunnel`]);
//! 6. record metrics and a log line.
//!
//! What is known about the connection and the request (peer, trust, request id) is
//! worked out once, in a [`RequestContext`], and read by every step.
//!
//! Every refusal is a [`Refusal`], mapped in one place to status, `WWW-Authenticate`
//! and a JSON body. Refusals never reach the backend.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{
    HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, HOST, ORIGIN, RETRY_AFTER, USER_AGENT,
    WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::{App, Policy};
use crate::body::{self, Body};
use crate::cache::Verdict;
use crate::capture;
use crate::config::CaptureRoute;
use crate::context::{ClientConn, RequestContext};
use crate::extract::{extract, extract_with_source, ExtractError, TokenSource};
use crate::forward_auth;
use crate::jwt::{VerifiedToken, VerifyError};
use crate::metrics::Outcome;
use crate::proxy::headers::{set_upgrade, upgrade_offered, DisguisedFraming};
use crate::proxy::{UpstreamError, X_REQUEST_ID};
use crate::revocations::RevokeError;
use crate::rules::Grants;
use crate::store::{Actor, Session, StoreError, TokenHash, TokenKind};
use crate::strategy::{DeadReason, Liveness, SessionMeta, Target};
use crate::tunnel::Watched;

/// Why a request is answered by tokengate itself instead of the backend.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A dot-segment, an encoded slash, or a path the backend might read differently.
    #[error("bad path")]
    BadPath,
    /// A request whose head is ambiguous (e.g. two `Host` headers, RFC 9112 §3.2).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A request target longer than [`MAX_URI_BYTES`].
    #[error("URI too long")]
    UriTooLong,
    /// More request header fields than [`crate::server::MAX_HEADERS`] (an HTTP/2 header
    /// block; the HTTP/1.1 parser refuses such a head itself).
    #[error("too many request headers")]
    TooManyHeaders,
    /// A method a tokengate route does not take.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// No token in any configured source.
    #[error("no token")]
    NoToken,
    /// The credential headers are ambiguous or malformed.
    #[error("bad credentials: {0}")]
    BadCredentials(#[from] ExtractError),
    /// The token does not verify.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] VerifyError),
    /// The token verifies but is not live.
    #[error("token not live: {0:?}")]
    NotLive(DeadReason),
    /// The store could not answer: fail closed.
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[from] StoreError),
    /// The backend could not be reached or failed.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// A tokengate resource that does not exist (or is not the caller's).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A cross-site request to change a session whose token is a cookie (SPEC §10).
    #[error("cross-site state change with a cookie token")]
    CrossSite,
    /// A live token that fails the `[[rules]]` entry of its route (SPEC §13).
    #[error("insufficient scope")]
    InsufficientScope {
        /// The `WWW-Authenticate` challenge naming the required scopes.
        challenge: HeaderValue,
        /// The required scopes, space-separated (may be empty: claims only).
        scope: String,
    },
}

/// Longest request target (path and query) accepted; nginx's default is the same.
pub const MAX_URI_BYTES: usize = 8 * 1024;

const REALM: &str = "Bearer realm=\"tokengate\"";

impl Refusal {
    /// The metrics label of this refusal.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::BadPath | Refusal::UriTooLong => Outcome::BadPath,
            Refusal::Malformed(_) | Refusal::TooManyHeaders => Outcome::BadRequest,
            Refusal::MethodNotAllowed(_) => Outcome::MethodNotAllowed,
            Refusal::NoToken => Outcome::NoToken,
            Refusal::BadCredentials(_) | Refusal::InvalidToken(_) => Outcome::InvalidToken,
            // Not a revocation: the token can never pass under this configuration.
            Refusal::NotLive(DeadReason::NoIssuedAt(_) | DeadReason::WrongKind) => {
                Outcome::InvalidToken
            }
            Refusal::NotLive(_) => Outcome::Revoked,
            Refusal::StoreUnavailable(_) => Outcome::StoreUnavailable,
            Refusal::Upstream(UpstreamError::Timeout) => Outcome::UpstreamTimeout,
            Refusal::Upstream(_) => Outcome::UpstreamError,
            Refusal::NotFound(_) => Outcome::NotFound,
            Refusal::CrossSite => Outcome::CrossSite,
            Refusal::InsufficientScope { .. } => Outcome::InsufficientScope,
        }
    }

    /// The one mapping from refusal to response (status, headers, JSON body). Internal
    /// details are logged by the caller, never sent.
    pub fn into_response(self) -> Response<Body> {
        // A description that carries a value (a claim name, a strategy).
        let detail: Cow<'static, str>;
        let (status, error, description): (StatusCode, &str, &str) = match &self {
            Refusal::BadPath => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request path is not accepted",
            ),
            Refusal::Malformed(what) => (StatusCode::BAD_REQUEST, "invalid_request", what),
            Refusal::TooManyHeaders => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                "too many request headers",
            ),
            Refusal::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "invalid_request",
                "the request target is too long",
            ),
            Refusal::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            ),
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            ),
            Refusal::BadCredentials(e) => {
                (StatusCode::UNAUTHORIZED, "invalid_token", static_text(e))
            }
            Refusal::InvalidToken(e) => {
                detail = verify_text(e);
                (StatusCode::UNAUTHORIZED, "invalid_token", &detail)
            }
            Refusal::NotLive(DeadReason::NoIssuedAt(strategy)) => {
                detail =
                    format!("the token has no iat, which the {strategy} strategy needs").into();
                (StatusCode::UNAUTHORIZED, "invalid_token", &detail)
            }
            // A refresh token where a bearer token belongs, or the reverse (SPEC §15).
            Refusal::NotLive(DeadReason::WrongKind) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this kind of token is not accepted here",
            ),
            Refusal::NotLive(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token has been revoked or is not known",
            ),
            Refusal::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the token store is unavailable",
            ),
            Refusal::Upstream(UpstreamError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the backend did not answer in time",
            ),
            Refusal::Upstream(_) => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the backend could not be reached",
            ),
            Refusal::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", what),
            Refusal::CrossSite => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "a cross-site request cannot change a session held in a cookie",
            ),
            Refusal::InsufficientScope { .. } => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks a scope or claim this route requires",
            ),
        };
        let mut body = json!({"error": error, "error_description": description});
        if let Refusal::InsufficientScope { scope, .. } = &self {
            if !scope.is_empty() {
                body["scope"] = json!(scope);
            }
        }
        let mut response = json_response(status, &body);
        let headers = response.headers_mut();
        match &self {
            Refusal::NoToken => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
            }
            Refusal::BadCredentials(_) | Refusal::InvalidToken(_) | Refusal::NotLive(_) => {
                let value = format!(
                    "{REALM}, error=\"invalid_token\", error_description=\"{}\"",
                    challenge_text(description)
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(WWW_AUTHENTICATE, v);
                }
            }
            Refusal::StoreUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Refusal::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            // RFC 6750 §3.1.
            Refusal::InsufficientScope { challenge, .. } => {
                headers.insert(WWW_AUTHENTICATE, challenge.clone());
            }
            _ => {}
        }
        response
    }
}

fn static_text(e: &ExtractError) -> &'static str {
    match e {
        ExtractError::DuplicateHeader => "more than one credential header",
        ExtractError::DuplicateCookie => "more than one token cookie",
        ExtractError::BadBearer => "the bearer token is empty or malformed",
    }
}

/// A description as RFC 6750 §3 allows it in `error_description`: printable ASCII
/// without `"` and `\` (not even escaped), so a `"` becomes `'`, a `\` becomes `/` and
/// anything else outside that set `?`. The JSON body carries the text unchanged.
fn challenge_text(description: &str) -> String {
    description
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

fn verify_text(e: &VerifyError) -> Cow<'static, str> {
    Cow::Borrowed(match e {
        VerifyError::TooLong => "the token is too long",
        VerifyError::Malformed => "the token is malformed",
        VerifyError::BadHeader => "the token header is malformed",
        VerifyError::ForbiddenHeader => "the token header carries a parameter that is not accepted",
        VerifyError::Algorithm => "the token algorithm is not accepted",
        VerifyError::UnknownKey => "the token was signed by an unknown key",
        VerifyError::Signature => "the token signature is invalid",
        VerifyError::BadClaims => "the token claims are malformed",
        VerifyError::MissingExp => "the token has no expiry",
        VerifyError::Expired => "the token has expired",
        VerifyError::NotYetValid => "the token is not valid yet",
        VerifyError::IssuedInFuture => "the token is issued in the future",
        VerifyError::Issuer => "the token issuer is not accepted",
        VerifyError::Audience => "the token audience is not accepted",
        VerifyError::NoUserClaim(_) | VerifyError::RequiredClaim(_) => {
            return Cow::Owned(e.to_string())
        }
        VerifyError::Type => "the token type (typ) is not accepted",
        VerifyError::User => "the token does not name a valid user",
    })
}

/// A JSON response with `Cache-Control: no-store` (it may describe credentials).
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// Handles one request of the public listener. Never fails: every error is a response.
/// Generic over the request body so that benchmarks can drive it in-process; the
/// server passes hyper's [`hyper::body::Incoming`].
pub async fn handle<B>(
    app: Arc<App>,
    conn: Arc<ClientConn>,
    request: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<body::BoxError>,
{
    let started = Instant::now();
    let policy = app.policy();
    let scope = Scope::new(&app, &policy);
    let ctx = RequestContext::new(&conn.info, request.headers());
    let method = request.method().clone();
    let (outcome, mut response) =
        match pipeline(&scope, &conn, &ctx, request.map(body::boxed)).await {
            Ok(done) => done,
            Err(refusal) => {
                match &refusal {
                    Refusal::StoreUnavailable(e) => {
                        tracing::error!(error = %e, "store unavailable; request refused")
                    }
                    Refusal::Upstream(e) => tracing::warn!(error = %e, "upstream failure"),
                    other => tracing::debug!(reason = %other, "request refused"),
                }
                if let Refusal::Upstream(e) = &refusal {
                    app.metrics.upstream_error(e.label());
                }
                (refusal.outcome(), refusal.into_response())
            }
        };
    response.headers_mut().insert(X_REQUEST_ID, ctx.id);
    let elapsed = started.elapsed();
    app.metrics.request(outcome, elapsed);
    tracing::debug!(%method, status = response.status().as_u16(), outcome = outcome.label(), micros = elapsed.as_micros() as u64, "request");
    Ok(response)
}

/// Steps 1 to 5; returns the metrics outcome with the response.
async fn pipeline(
    app: &Scope<'_>,
    conn: &Arc<ClientConn>,
    ctx: &RequestContext<'_>,
    mut request: Request<Body>,
) -> Result<(Outcome, Response<Body>), Refusal> {
    check_head(&request)?;
    // Read before step 2 removes `Upgrade` and `Connection` (hop-by-hop), and an
    // ingress's `X-Forwarded-Uri` (forward-auth).
    let upgrade = crate::proxy::headers::requested_upgrade(&request);
    let asked = app
        .config
        .routes
        .forward_auth
        .as_deref()
        .and_then(|route| forward_auth::original(&request, route));
    app.headers
        .sanitize(request.headers_mut(), ctx)
        .map_err(|DisguisedFraming(name)| {
            tracing::debug!(header = name.as_str(), "framing header spelled with '_'");
            Refusal::Malformed("a framing or hop-by-hop header name is spelled with '_'")
        })?;
    if let Some(original) = asked {
        return Box::pin(forward_auth::answer(app, &request, original?)).await;
    }
    let via = Via { app, conn, ctx };
    // Only the hot path (forwarding with a cached verdict, or on a public route) is
    // inline: every other route is boxed, so that the future of a request stays small
    // (hyper moves it whole, and it was 8 KiB with every route inline).
    match route(app, &request) {
        Route::Logout => Box::pin(logout(app, &request, false)).await,
        Route::LogoutAll => Box::pin(logout(app, &request, true)).await,
        Route::Sessions => Box::pin(list_sessions(app, &request)).await,
        Route::BackchannelLogout => Box::pin(crate::backchannel::logout(app, request)).await,
        Route::Session(id) => Box::pin(revoke_session(app, &request, &id)).await,
        Route::Revoke => Box::pin(revoke_token(app, request)).await,
        Route::Capture(route) => Box::pin(capture(&via, request, route)).await,
        Route::Public => match upgrade {
            Some(offered) => Ok((
                Outcome::Public,
                Box::pin(via.tunnel(request, offered, &[], None)).await?,
            )),
            None => Ok((Outcome::Public, via.forward(request, &[]).await?)),
        },
        Route::Protected => match upgrade {
            Some(offered) => Box::pin(open_tunnel(app, &via, request, offered)).await,
            None => {
                let verdict = authorize(app, &request).await?;
                check_rules(app, request.method(), request.uri().path(), &verdict.grants)?;
                let response = via.forward(request, &verdict.identity).await?;
                Ok((Outcome::Forwarded, response))
            }
        },
    }
}

/// A protected route's upgrade (SPEC §12): the token is checked in the store now, never
/// from the cache (a tunnel outlives any cache entry), then held to the route's rule,
/// and watched from then on.
async fn open_tunnel(
    app: &Scope<'_>,
    via: &Via<'_>,
    request: Request<Body>,
    offered: HeaderValue,
) -> Result<(Outcome, Response<Body>), Refusal> {
    let raw = extract(request.headers(), &app.config.token_sources)?
        .ok_or(Refusal::NoToken)?
        .to_owned();
    let (token, _) = verify_live(app, &raw).await?;
    let grants = app.config.rules.grants(&token.claims);
    check_rules(app, request.method(), request.uri().path(), &grants)?;
    let identity = app.headers.identity_headers(&token.user, &token.claims);
    let watched = Watched {
        raw,
        token,
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    };
    let response = via
        .tunnel(request, offered, &identity, Some(watched))
        .await?;
    Ok((Outcome::Forwarded, response))
}

/// Step 4, last: the first `[[rules]]` entry covering the request, if any, against what
/// the token satisfies (SPEC §13); a token that falls short gets 403.
pub fn check_rules(
    app: &Scope<'_>,
    method: &Method,
    path: &str,
    grants: &Grants,
) -> Result<(), Refusal> {
    match app.config.rules.find(method, path) {
        Some((index, rule)) if !grants.allows(index) => {
            tracing::debug!(rule = index, %method, path, "token lacks what the rule requires");
            Err(Refusal::InsufficientScope {
                challenge: rule.challenge().clone(),
                scope: rule.scope_text(),
            })
        }
        _ => Ok(()),
    }
}

/// One request's view of tokengate: the shared state, and the policy (config, keys,
/// header rules) in force when the request arrived, kept to its end even if a reload
/// swaps in another meanwhile. Derefs to the [`App`].
pub struct Scope<'a> {
    app: &'a Arc<App>,
    policy: &'a Arc<Policy>,
    /// The config of this request.
    pub config: &'a crate::config::Config,
    /// The verifier of this request.
    pub verifier: &'a crate::jwt::Verifier,
    /// The header rules of this request.
    pub headers: &'a crate::proxy::HeaderPolicy,
}

impl<'a> Scope<'a> {
    /// `app` under `policy`.
    pub fn new(app: &'a Arc<App>, policy: &'a Arc<Policy>) -> Scope<'a> {
        Scope {
            app,
            policy,
            config: &policy.config,
            verifier: &policy.verifier,
            headers: &policy.headers,
        }
    }
}

impl std::ops::Deref for Scope<'_> {
    type Target = App;

    fn deref(&self) -> &App {
        self.app
    }
}

/// What forwarding a request needs: the shared state, the client connection (with its
/// backend connection) and the request's context.
struct Via<'a> {
    app: &'a Scope<'a>,
    conn: &'a Arc<ClientConn>,
    ctx: &'a RequestContext<'a>,
}

impl Via<'_> {
    /// Step 5: the upstream request (forwarding headers, `identity`, `Authorization`
    /// policy), then the backend.
    async fn forward(
        &self,
        mut request: Request<Body>,
        identity: &[(HeaderName, HeaderValue)],
    ) -> Result<Response<Body>, UpstreamError> {
        self.app
            .headers
            .prepare_upstream(&mut request, self.ctx, identity);
        self.app.upstream.send(&self.conn.upstream, request).await
    }

    /// Step 5 for an upgrade the client `offered` (SPEC §12): the request goes, with
    /// `identity` and the upgrade headers, on a backend connection of its own; when the
    /// backend switches to an offered protocol, the 101 goes back and both connections
    /// become a tunnel, watching the token that opened it when there is one. Any other
    /// answer goes back as a plain response.
    async fn tunnel(
        &self,
        mut request: Request<Body>,
        offered: HeaderValue,
        identity: &[(HeaderName, HeaderValue)],
        watched: Option<Watched>,
    ) -> Result<Response<Body>, UpstreamError> {
        let client = hyper::upgrade::on(&mut request);
        self.app
            .headers
            .prepare_upstream(&mut request, self.ctx, identity);
        set_upgrade(request.headers_mut(), offered.clone());
        let (mut response, switched) = self.app.upstream.upgrade(request).await?;
        let Some((protocol, backend)) = switched else {
            return Ok(response);
        };
        if !upgrade_offered(&offered, &protocol) {
            tracing::warn!(
                offered = ?offered,
                chosen = ?protocol,
                "the backend switched to a protocol the client did not offer"
            );
            return Err(UpstreamError::Protocol);
        }
        set_upgrade(response.headers_mut(), protocol);
        tokio::spawn(crate::tunnel::run(
            Arc::clone(self.app.app),
            Arc::clone(self.conn),
            client,
            backend,
            watched,
        ));
        Ok(response)
    }
}

/// Step 1: refuses a request head that proxy and backend might read differently.
fn check_head<B>(request: &Request<B>) -> Result<(), Refusal> {
    if request.method() == Method::CONNECT {
        return Err(Refusal::MethodNotAllowed(
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
    }
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_URI_BYTES {
        return Err(Refusal::UriTooLong);
    }
    check_path(request.uri().path())?;
    let headers = request.headers();
    if headers.get_all(HOST).iter().nth(1).is_some() {
        return Err(Refusal::Malformed("more than one Host header"));
    }
    // HTTP/1.1 heads are capped by the parser; HTTP/2 header blocks here.
    if headers.len() > crate::server::MAX_HEADERS {
        return Err(Refusal::TooManyHeaders);
    }
    Ok(())
}

/// Where a request goes (step 3).
enum Route<'a> {
    Revoke,
    Logout,
    LogoutAll,
    Sessions,
    Session(String),
    BackchannelLogout,
    Capture(&'a CaptureRoute),
    Public,
    Protected,
}

/// Step 3: routes match the raw path exactly, so an encoded or case variant of a
/// tokengate route is just another protected path.
fn route<'a, B>(app: &'a Scope<'_>, request: &Request<B>) -> Route<'a> {
    let routes = &app.config.routes;
    let path = request.uri().path();
    if path == routes.logout {
        return Route::Logout;
    }
    if routes.revoke.as_deref() == Some(path) {
        return Route::Revoke;
    }
    if path == routes.logout_all {
        return Route::LogoutAll;
    }
    if routes.backchannel_logout.as_deref() == Some(path) {
        return Route::BackchannelLogout;
    }
    if let Some(sessions) = &routes.sessions {
        if path == sessions {
            return Route::Sessions;
        }
        if let Some(id) = path
            .strip_prefix(sessions.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        {
            return Route::Session(id.to_string());
        }
    }
    let method = request.method();
    if let Some(capture) = app
        .config
        .capture
        .iter()
        .find(|c| c.path == path && c.method == method)
    {
        return Route::Capture(capture);
    }
    if routes.public.iter().any(|p| p.matches(path)) {
        return Route::Public;
    }
    Route::Protected
}

/// Step 4 for a protected route: the verdict on the request's token, from the verdict
/// cache when it holds a current one (SPEC §9), else from the verifier and the store;
/// a positive verdict from the store is cached for the next request.
pub async fn authorize<B>(app: &Scope<'_>, request: &Request<B>) -> Result<Arc<Verdict>, Refusal> {
    let raw = extract(request.headers(), &app.config.token_sources)?.ok_or(Refusal::NoToken)?;
    let key = app.cache.key(raw);
    if let Some(key) = &key {
        if let Some(verdict) = app.cache.lookup(key, crate::jwt::now()) {
            note_use(app, verdict.session_id.as_deref());
            return Ok(verdict);
        }
    }
    // Boxed: a hit, the common case, keeps a small future.
    Box::pin(verdict_from_store(app, raw, key)).await
}

/// [`authorize`] on a cache miss: the verifier and the store, and the positive verdict
/// cached.
async fn verdict_from_store(
    app: &Scope<'_>,
    raw: &str,
    key: Option<crate::cache::CacheKey>,
) -> Result<Arc<Verdict>, Refusal> {
    // Taken before the store is read: a revocation applied meanwhile voids the insert.
    let ticket = app.cache.ticket();
    let (token, session) = verify_live(app, raw).await?;
    let identity = app.headers.identity_headers(&token.user, &token.claims);
    let grants = app.config.rules.grants(&token.claims);
    let verdict = Arc::new(Verdict::new(&token, session.as_ref(), identity, grants));
    // Identity headers and grants follow the policy: not cached across a reload.
    if let Some(key) = key.filter(|_| app.is_current(app.policy)) {
        app.cache.insert(ticket, key, verdict.clone());
    }
    Ok(verdict)
}

/// Step 4 for tokengate's own routes (logout, sessions): the request's token, verified
/// and live in the store right now; never from the cache, since these change state or
/// show it.
pub async fn authenticate<B>(
    app: &Scope<'_>,
    request: &Request<B>,
) -> Result<(VerifiedToken, Option<Session>), Refusal> {
    let raw = extract(request.headers(), &app.config.token_sources)?.ok_or(Refusal::NoToken)?;
    verify_live(app, raw).await
}

/// A raw token, verified and live in the store right now.
async fn verify_live(
    app: &Scope<'_>,
    raw: &str,
) -> Result<(VerifiedToken, Option<Session>), Refusal> {
    let token = app.verifier.verify_fresh(raw).await?;
    let session = check_live(app, &token).await?;
    note_use(app, session.as_ref().map(|s| s.session_id.as_str()));
    Ok((token, session))
}

/// Notes that a session was used, for `store.idle_timeout_seconds` (in memory; written
/// in the background, [`crate::idle`]).
fn note_use(app: &Scope<'_>, session: Option<&str>) {
    if let (Some(idle), Some(id)) = (&app.idle, session) {
        idle.touch(id, crate::jwt::now());
    }
}

/// [`authenticate`] for a route that changes state (logout, logout-all, revoking a
/// session): a token that came from a cookie must come with a same-site request
/// (SPEC §10), since a browser sends cookies along with a foreign page's request. A
/// header token is not affected: a browser does not send it cross-site unasked.
async fn authenticate_change<B>(
    app: &Scope<'_>,
    request: &Request<B>,
) -> Result<VerifiedToken, Refusal> {
    let (raw, source) = extract_with_source(request.headers(), &app.config.token_sources)?
        .ok_or(Refusal::NoToken)?;
    if matches!(source, TokenSource::Cookie(_)) && is_cross_site(request) {
        return Err(Refusal::CrossSite);
    }
    Ok(verify_live(app, raw).await?.0)
}

/// Whether a browser marks the request as cross-site (`Sec-Fetch-Site: cross-site`),
/// or its `Origin` names another host than the request's (`X-Forwarded-Host` from a
/// trusted proxy, else `Host` or the HTTP/2 authority). `Origin: null` and an
/// unreadable `Origin` count as cross-site.
fn is_cross_site<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return false;
    };
    // Forwarding headers of an untrusted peer were removed in step 2.
    let host = headers
        .get(crate::proxy::X_FORWARDED_HOST)
        .or_else(|| headers.get(HOST))
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let origin = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    match (origin, host) {
        (Some(origin), Some(host)) => !host_name(origin).eq_ignore_ascii_case(host_name(host)),
        _ => true,
    }
}

/// The host of an authority, without its port (an IPv6 literal keeps its brackets).
fn host_name(authority: &str) -> &str {
    let authority = authority.trim_end_matches('/');
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

/// Whether a verified token is live under the strategy, by the store.
async fn check_live(app: &Scope<'_>, token: &VerifiedToken) -> Result<Option<Session>, Refusal> {
    match app.strategy.check(token).await? {
        Liveness::Live(session) => Ok(session),
        Liveness::Dead(reason) => {
            tracing::debug!(user = %token.user, token = %token.hash.short(), ?reason, "token not live");
            Err(Refusal::NotLive(reason))
        }
    }
}

/// `routes.logout` / `routes.logout_all`: POST with a live token; 204 once durable.
async fn logout<B>(
    app: &Scope<'_>,
    request: &Request<B>,
    all: bool,
) -> Result<(Outcome, Response<Body>), Refusal> {
    if request.method() != Method::POST {
        return Err(Refusal::MethodNotAllowed("POST"));
    }
    let token = authenticate_change(app, request).await?;
    let (target, outcome) = if all {
        (Target::User(&token.user), Outcome::LogoutAll)
    } else {
        (Target::Token(&token), Outcome::Logout)
    };
    app.revocations
        .revoke(target, Actor::User)
        .await
        .map_err(session_refusal)?;
    Ok((outcome, no_content()))
}

/// `GET routes.sessions`: the caller's live sessions.
async fn list_sessions<B>(
    app: &Scope<'_>,
    request: &Request<B>,
) -> Result<(Outcome, Response<Body>), Refusal> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Err(Refusal::MethodNotAllowed("GET"));
    }
    let (token, current) = authenticate(app, request).await?;
    let sessions = app
        .revocations
        .sessions(&token.user)
        .await
        .map_err(session_refusal)?;
    let current = current.map(|s| s.session_id);
    let list: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.session_id,
                "created": s.created_at,
                "expires": s.expires_at,
                "user_agent": s.user_agent,
                "client_addr": s.client_addr,
                "current": current.as_deref() == Some(s.session_id.as_str()),
            })
        })
        .collect();
    Ok((
        Outcome::Sessions,
        json_response(StatusCode::OK, &serde_json::Value::Array(list)),
    ))
}

/// `DELETE routes.sessions/{id}`: revokes one of the caller's own sessions.
async fn revoke_session<B>(
    app: &Scope<'_>,
    request: &Request<B>,
    id: &str,
) -> Result<(Outcome, Response<Body>), Refusal> {
    if request.method() != Method::DELETE {
        return Err(Refusal::MethodNotAllowed("DELETE"));
    }
    let token = authenticate_change(app, request).await?;
    // Another user's session and a missing one are the same 404: ids are not probeable.
    let target = Target::Session {
        id,
        owner: Some(&token.user),
    };
    app.revocations
        .revoke(target, Actor::User)
        .await
        .map_err(session_refusal)?;
    Ok((Outcome::SessionRevoked, no_content()))
}

/// `routes.revoke` (RFC 7009): `POST`, a form with `token=<jwt>` (`token_type_hint`
/// is ignored). The token is its own credential: one that verifies and is live (an
/// access or a refresh token) revokes its session, as `/logout` would; the answer is
/// 200 whether or not it was live (§2.2), so that the endpoint tells nothing about a
/// token. A request that is not such a form is a 400; a store that cannot answer is a
/// 503 (§2.2.1: the client should retry).
async fn revoke_token(
    app: &Scope<'_>,
    request: Request<Body>,
) -> Result<(Outcome, Response<Body>), Refusal> {
    if request.method() != Method::POST {
        return Err(Refusal::MethodNotAllowed("POST"));
    }
    let (parts, body) = request.into_parts();
    let form = crate::form::read(&parts.headers, body)
        .await
        .map_err(form_refusal)?;
    let raw = form
        .get("token")
        .map_err(form_refusal)?
        .ok_or(Refusal::Malformed("the form has no token field"))?;
    match app.verifier.verify_fresh(raw).await {
        Ok(token) => {
            if let (_, Liveness::Live(_)) = app.strategy.check_any(&token).await? {
                match app
                    .revocations
                    .revoke(Target::Token(&token), Actor::User)
                    .await
                {
                    Err(RevokeError::Store(e)) => return Err(Refusal::StoreUnavailable(e)),
                    // Done, or gone meanwhile: what the client asked for either way.
                    Ok(_)
                    | Err(
                        RevokeError::NoSuchSession
                        | RevokeError::NoSessions(_)
                        | RevokeError::Replayed,
                    ) => {}
                }
            }
        }
        Err(e) => {
            tracing::debug!(cause = %e, "revocation request with a token that does not verify; nothing revoked")
        }
    }
    Ok((Outcome::TokenRevocation, empty_no_store()))
}

/// A form that cannot be read, as a 400.
fn form_refusal(e: crate::form::FormError) -> Refusal {
    use crate::form::FormError;
    Refusal::Malformed(match e {
        FormError::NotAForm => "the body must be application/x-www-form-urlencoded",
        FormError::Unreadable => "the form is too large or could not be read",
        FormError::Malformed => "the body is not a valid form",
        FormError::Ambiguous => "a form field appears more than once",
    })
}

/// A refused revocation or session list as a refusal.
fn session_refusal(e: RevokeError) -> Refusal {
    match e {
        RevokeError::NoSessions(_) => {
            Refusal::NotFound("sessions are not kept under this revocation strategy")
        }
        // (A replay needs `revoke_once`, which these routes do not use.)
        RevokeError::NoSuchSession | RevokeError::Replayed => Refusal::NotFound("no such session"),
        RevokeError::Store(e) => Refusal::StoreUnavailable(e),
    }
}

/// A capture route: forwarded without authentication, or, on a refresh route, only with
/// a live refresh token (SPEC §15); on 2xx the issued token, and the refresh token
/// issued with it, are read, verified and stored before the response goes back
/// unchanged. What a refresh issues joins the presented token's session, and a rotated
/// refresh token replaces the presented one.
async fn capture(
    via: &Via<'_>,
    request: Request<Body>,
    route: &CaptureRoute,
) -> Result<(Outcome, Response<Body>), Refusal> {
    let app = via.app;
    let meta = SessionMeta {
        user_agent: request
            .headers()
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        client_addr: Some(via.ctx.client_addr()),
    };
    let (request, presented) = match route.presents.clone() {
        Some(source) => {
            let (request, presented) = presented_refresh(app, &source, request).await?;
            (request, Some(presented))
        }
        None => (request, None),
    };
    let response = via.forward(request, &[]).await?;
    if !response.status().is_success() {
        return Ok((Outcome::CapturePassthrough, response));
    }
    let sources: Vec<capture::CaptureSource> = std::iter::once(route.from.clone())
        .chain(route.refresh_token.clone())
        .collect();
    let (response, mut found) = capture::take_tokens(&sources, response).await;
    let refresh = if route.refresh_token.is_some() {
        found.pop()
    } else {
        None
    };
    let access = found.pop().unwrap_or(Err(capture::CaptureMiss::NotFound));
    let joins = presented.as_ref().and_then(|p| p.session_id.clone());
    let Some(session) =
        admit_captured(app, route, &meta, access, TokenKind::Access, joins.clone()).await
    else {
        return Ok((Outcome::CaptureFailed, response));
    };
    if let Some(raw) = refresh {
        let session = session.or(joins);
        // The same refresh token handed back (no rotation) is not spent.
        let rotated = match (&raw, &presented) {
            (Ok(new), Some(old)) => new.rsplit_once('.').is_some_and(|(input, _)| {
                TokenHash::of_signing_input(input.as_bytes()) != old.token.hash
            }),
            _ => false,
        };
        let stored = admit_captured(app, route, &meta, raw, TokenKind::Refresh, session).await;
        if let (Some(_), Some(old), true) = (stored, &presented, rotated) {
            // Rotation: the presented refresh token is spent.
            if let Err(e) = app
                .revocations
                .revoke(Target::Replaced(&old.token), Actor::User)
                .await
            {
                tracing::error!(route = %route.path, user = %old.token.user, cause = %e, "the rotated-away refresh token could not be revoked");
            }
        }
    }
    Ok((Outcome::Captured, response))
}

/// The refresh token a refresh route's request presents, verified and live.
struct Presented {
    token: VerifiedToken,
    /// Its session, joined by what the refresh issues.
    session_id: Option<String>,
}

/// Reads, verifies and checks the refresh token a request presents; a request without
/// a live one is refused and never reaches the backend.
async fn presented_refresh(
    app: &Scope<'_>,
    source: &capture::CaptureSource,
    request: Request<Body>,
) -> Result<(Request<Body>, Presented), Refusal> {
    let (request, raw) = capture::take_presented(source, request).await;
    let raw = match raw {
        Ok(raw) => raw,
        Err(miss) => {
            tracing::debug!(source = %source, cause = %miss, "refresh route: no refresh token presented");
            return Err(Refusal::NoToken);
        }
    };
    let token = app.verifier.verify_fresh(&raw).await?;
    match app.strategy.check_as(&token, TokenKind::Refresh).await? {
        Liveness::Live(session) => Ok((
            request,
            Presented {
                session_id: session.map(|s| s.session_id),
                token,
            },
        )),
        Liveness::Dead(reason) => {
            tracing::debug!(user = %token.user, token = %token.hash.short(), ?reason, "refresh token not live");
            Err(Refusal::NotLive(reason))
        }
    }
}

/// Stores one captured token, verified like a request's token; `None` when it was not
/// stored (logged and counted; the response still goes back), else the session it went
/// into (`Some(None)`: verified, and the strategy needs no row).
async fn admit_captured(
    app: &Scope<'_>,
    route: &CaptureRoute,
    meta: &SessionMeta,
    found: Result<String, capture::CaptureMiss>,
    kind: TokenKind,
    session_id: Option<String>,
) -> Option<Option<String>> {
    let refresh = kind == TokenKind::Refresh;
    // A refresh joins its session: only a login counts against the session limit.
    let new_session = session_id.is_none();
    let label = move |access: &'static str, refresh_label: &'static str| -> &'static str {
        if refresh {
            refresh_label
        } else {
            access
        }
    };
    let raw = match found {
        Ok(raw) => raw,
        Err(miss) => {
            app.metrics
                .capture(label(miss.label(), "refresh_not_found"));
            tracing::warn!(route = %route.path, kind = kind.as_str(), cause = %miss, "capture failed");
            return None;
        }
    };
    let token = match app.verifier.verify_fresh(&raw).await {
        Ok(token) => token,
        Err(e) => {
            app.metrics.capture(label("invalid", "refresh_invalid"));
            tracing::warn!(route = %route.path, kind = kind.as_str(), cause = %e, "capture failed: the issued token does not verify");
            return None;
        }
    };
    match app
        .strategy
        .admit_as(&token, meta.clone(), kind, session_id)
        .await
    {
        Ok(session) => {
            app.metrics.capture(label("stored", "refresh_stored"));
            let session = session.map(|s| s.session_id);
            tracing::info!(
                user = %token.user,
                kind = kind.as_str(),
                session = session.as_deref().unwrap_or("-"),
                token = %token.hash.short(),
                "token captured"
            );
            if let (Some(max), Some(id), true) = (
                app.config.store.max_sessions_per_user,
                &session,
                new_session,
            ) {
                limit_sessions(app, &token.user, id, max).await;
            }
            Some(session)
        }
        // The token lacks what the strategy needs: the issuer's doing, not the store's.
        Err(e @ crate::strategy::AdmitError::NoIssuedAt(_)) => {
            app.metrics.capture(label("invalid", "refresh_invalid"));
            tracing::warn!(route = %route.path, kind = kind.as_str(), user = %token.user, cause = %e, "capture failed: the issued token cannot be used");
            None
        }
        Err(e) => {
            app.metrics
                .capture(label("store_error", "refresh_store_error"));
            tracing::error!(route = %route.path, kind = kind.as_str(), user = %token.user, cause = %e, "capture failed: the token was not stored");
            None
        }
    }
}

/// `store.max_sessions_per_user` after a login (SPEC §13): the user's oldest sessions
/// beyond it end. A failure is logged, and the next login tries again; the login itself
/// stands (its response is on its way).
async fn limit_sessions(app: &Scope<'_>, user: &str, newest: &str, max: u32) {
    match app.revocations.limit_sessions(user, newest, max).await {
        Ok(ended) if !ended.is_empty() => {
            tracing::info!(user = %user, max, ended = %ended.join(","), "session limit: oldest sessions ended");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(user = %user, max, cause = %e, "session limit: the oldest sessions could not be ended");
        }
    }
}

/// 200 with no body and `Cache-Control: no-store`: the answer of the standard
/// endpoints (RFC 7009 §2.2, Back-Channel Logout §2.8) and of forward-auth.
pub fn empty_no_store() -> Response<Body> {
    let mut response = Response::new(body::empty());
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Step 1: refuses a path that proxy and backend might read differently.
pub fn check_path(path: &str) -> Result<(), Refusal> {
    if path_is_unsafe(path) {
        Err(Refusal::BadPath)
    } else {
        Ok(())
    }
}

/// Whether a raw request path holds a dot-segment (`.` or `..`, raw or
/// percent-encoded, also before a `;` parameter), an encoded slash or backslash
/// (`%2f`, `%5c`), a raw backslash, or an encoded NUL; or does not start with `/`.
/// Runs on every request: it reads the path once and allocates nothing.
pub fn path_is_unsafe(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.contains(&b'\\') {
        return true;
    }
    let encoded_separator = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c') | (b'0', b'0')
            )
    });
    // Servlet containers read `/..;x/` as `/../`: judge a segment without its parameters.
    encoded_separator
        || path
            .split('/')
            .any(|segment| is_dot_segment(segment.split(';').next().unwrap_or("")))
}

/// Whether a segment decodes to `.` or `..` (each dot raw or as `%2e`).
fn is_dot_segment(segment: &str) -> bool {
    let b = segment.as_bytes();
    let (mut dots, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%' && b.len() - i >= 3 && b[i + 1] == b'2' && b[i + 2] | 0x20 == b'e' {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Decodes `%XX` escapes (once); invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::StrategyKind;

    #[test]
    fn dot_segments_and_encoded_slashes_are_unsafe() {
        for bad in [
            "/a/../b",
            "/..",
            "/a/.",
            "/./a",
            "/a/%2e%2e/b",
            "/a/%2E%2e",
            "/a/.%2e/b",
            "/a/%2e/b",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/static/..;/admin",
            "/a/%2e%2e;x/b",
            "/a/%2E.",
            "/a%2f",
            "/%5C",
            "a/b",
            "*",
            "/a%00b",
        ] {
            assert!(path_is_unsafe(bad), "{bad}");
        }
        for good in [
            "/",
            "/a/b",
            "/a/.b",
            "/a/..b",
            "/a/b.",
            "/a%20b",
            "/%6cogout",
            "//a",
            "/a;b=c",
            "/a/...",
            "/a/%2e%2e%2e",
            "/a/.%2",
            "/a/%2",
            "/%",
        ] {
            assert!(!path_is_unsafe(good), "{good}");
        }
    }

    #[tokio::test]
    async fn a_missing_user_claim_is_named_in_the_body_and_the_challenge() {
        use http_body_util::BodyExt;
        let r = Refusal::InvalidToken(VerifyError::NoUserClaim("user_id".into())).into_response();
        assert_eq!(r.status(), 401);
        // RFC 6750 §3 allows no `"` in error_description, not even escaped.
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"the token has no string claim 'user_id' (jwt.user_claim)\""
        );
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["error_description"],
            "the token has no string claim \"user_id\" (jwt.user_claim)"
        );
    }

    #[test]
    fn cross_site_is_told_by_fetch_metadata_or_origin() {
        let req = |pairs: &[(&str, &str)]| {
            let mut r = Request::builder().uri("/logout");
            for (k, v) in pairs {
                r = r.header(*k, *v);
            }
            r.body(()).unwrap()
        };
        assert!(!is_cross_site(&req(&[("host", "app.example")])));
        assert!(is_cross_site(&req(&[("sec-fetch-site", "cross-site")])));
        assert!(!is_cross_site(&req(&[("sec-fetch-site", "same-origin")])));
        let same = [
            ("host", "app.example:8443"),
            ("origin", "https://App.Example"),
        ];
        assert!(!is_cross_site(&req(&same)));
        let foreign = [("host", "app.example"), ("origin", "https://evil.example")];
        assert!(is_cross_site(&req(&foreign)));
        assert!(is_cross_site(&req(&[
            ("host", "app.example"),
            ("origin", "null")
        ])));
        let v6 = [("host", "[::1]:8080"), ("origin", "http://[::1]")];
        assert!(!is_cross_site(&req(&v6)));
    }

    #[test]
    fn a_challenge_text_keeps_to_the_rfc_6750_characters() {
        assert_eq!(challenge_text("claim \"a\\b\" é\n"), "claim 'a/b' ??");
    }

    #[test]
    fn refusals_map_to_the_spec_table() {
        let r = Refusal::NoToken.into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"tokengate\"");
        let r = Refusal::InvalidToken(VerifyError::Expired).into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        assert_eq!(Refusal::BadPath.into_response().status(), 400);
        let r = Refusal::NotLive(DeadReason::NoIssuedAt(StrategyKind::Denylist)).into_response();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"the token has no iat, which the denylist strategy needs\""
        );
        let r = Refusal::StoreUnavailable(StoreError::Backend("x".into())).into_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(RETRY_AFTER));
        assert_eq!(
            Refusal::Upstream(UpstreamError::Connect)
                .into_response()
                .status(),
            502
        );
        assert_eq!(
            Refusal::Upstream(UpstreamError::Timeout)
                .into_response()
                .status(),
            504
        );
        let r = Refusal::MethodNotAllowed("POST").into_response();
        assert_eq!(
            (r.status().as_u16(), r.headers()[ALLOW].to_str().unwrap()),
            (405, "POST")
        );
    }
}
