//! Forward-auth (SPEC §13): tokengate as the authorization service of an ingress that
//! already proxies (nginx `auth_request`, Traefik ForwardAuth, Envoy `ext_authz` over
//! HTTP), on `routes.forward_auth`.
//!
//! The ingress sends tokengate a copy of each request's head and forwards the request
//! itself only on a 2xx. tokengate answers such a request itself and never forwards it:
//! the original method and URI come from `X-Forwarded-Method`/`X-Forwarded-Uri`
//! (Traefik), else `X-Original-Method`/`X-Original-URI` (nginx), else the request's own
//! (Envoy, whose `path_prefix` puts the original path after the route). The path rules,
//! public and captured routes and `[[rules]]` apply to that original request:
//! - a bad path: 400;
//! - a public or captured route: 200, no identity (tokengate sees no login response in
//!   this mode, so capture cannot happen: see the README);
//! - otherwise the token of the request (its `Authorization`, cookies) must be live:
//!   200 with the identity headers in the *response*, for the ingress to copy onto the
//!   request it forwards; or the usual 401/403 with `WWW-Authenticate`.
//!
//! The ingress is trusted to set the original-URI headers itself, overwriting any a
//! client sent (each example in `deploy/forward-auth/` does): they are read whatever
//! the peer, since the answer only ever goes back to whoever asked.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response};

use crate::body::Body;
use crate::gate::{authorize, check_path, check_rules, Refusal, Scope, MAX_URI_BYTES};
use crate::metrics::Outcome;

/// The request an ingress asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub target: PathAndQuery,
}

/// Traefik's headers, then nginx's (by the convention of their documentation).
const CONVENTIONS: [(&str, &str); 2] = [
    ("x-forwarded-method", "x-forwarded-uri"),
    ("x-original-method", "x-original-uri"),
];

/// When `request` is addressed to the forward-auth `route` (the route itself, or a
/// path under it as Envoy's `path_prefix` makes it), the original request it asks
/// about; `None` for any other request. Read before the header rules run: they remove
/// `X-Forwarded-*` from peers that are not trusted proxies.
pub fn original<B>(request: &Request<B>, route: &str) -> Option<Result<Original, Refusal>> {
    let path = request.uri().path();
    let rest = path.strip_prefix(route)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(read_original(request, rest))
}

fn read_original<B>(request: &Request<B>, rest: &str) -> Result<Original, Refusal> {
    let headers = request.headers();
    for (method_header, uri_header) in CONVENTIONS {
        let uri = single(headers, uri_header)?;
        let method = single(headers, method_header)?;
        if uri.is_none() && method.is_none() {
            continue;
        }
        let target = match uri {
            Some(uri) => target(uri.as_bytes())?,
            None => own_target(request, rest)?,
        };
        let method = match method {
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| Refusal::Malformed("the original method is not a method"))?,
            None => request.method().clone(),
        };
        return Ok(Original { method, target });
    }
    Ok(Original {
        method: request.method().clone(),
        target: own_target(request, rest)?,
    })
}

/// One value of a header, `None` when absent; two are ambiguous.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a HeaderValue>, Refusal> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(Refusal::Malformed(
            "more than one original method or URI header",
        )),
    }
}

/// An original URI as the ingress wrote it: origin form (`/path?query`).
fn target(bytes: &[u8]) -> Result<PathAndQuery, Refusal> {
    if bytes.len() > MAX_URI_BYTES {
        return Err(Refusal::UriTooLong);
    }
    match PathAndQuery::try_from(bytes) {
        Ok(target) if bytes.first() == Some(&b'/') => Ok(target),
        _ => Err(Refusal::Malformed("the original URI is not a path")),
    }
}

/// The request's own target, without the forward-auth route in front (Envoy).
fn own_target<B>(request: &Request<B>, rest: &str) -> Result<PathAndQuery, Refusal> {
    let path = if rest.is_empty() { "/" } else { rest };
    let text = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    target(text.as_bytes())
}

/// Answers a forward-auth request about `original` (see the module doc).
pub async fn answer<B>(
    app: &Scope<'_>,
    request: &Request<B>,
    original: Original,
) -> Result<(Outcome, Response<Body>), Refusal> {
    let path = original.target.path();
    check_path(path)?;
    let routes = &app.config.routes;
    let captured = app
        .config
        .capture
        .iter()
        .any(|c| c.path == path && c.method == original.method);
    if captured || routes.public.iter().any(|p| p.matches(path)) {
        return Ok((Outcome::ForwardAuth, allowed(&[])));
    }
    let verdict = authorize(app, request).await?;
    check_rules(app, &original.method, path, &verdict.grants)?;
    Ok((Outcome::ForwardAuth, allowed(&verdict.identity)))
}

/// 200 with the identity headers, for the ingress to copy onto the request it forwards.
fn allowed(identity: &[(HeaderName, HeaderValue)]) -> Response<Body> {
    let mut response = crate::gate::empty_no_store();
    let headers = response.headers_mut();
    for (name, value) in identity {
        headers.insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, pairs: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().method(method).uri(uri);
        for (k, v) in pairs {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    fn read(r: &Request<()>) -> Option<Result<Original, Refusal>> {
        original(r, "/_auth")
    }

    fn ok(r: &Request<()>) -> (String, String) {
        let o = read(r).unwrap().unwrap();
        (o.method.to_string(), o.target.to_string())
    }

    #[test]
    fn the_original_request_comes_from_traefik_nginx_or_the_path() {
        let traefik = request(
            "GET",
            "/_auth",
            &[
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-uri", "/orders/7?x=1"),
                ("x-original-uri", "/ignored"),
            ],
        );
        assert_eq!(ok(&traefik), ("DELETE".into(), "/orders/7?x=1".into()));
        let nginx = request("GET", "/_auth", &[("x-original-uri", "/a/b")]);
        assert_eq!(ok(&nginx), ("GET".into(), "/a/b".into()));
        let nginx = request(
            "GET",
            "/_auth",
            &[("x-original-method", "POST"), ("x-original-uri", "/a")],
        );
        assert_eq!(ok(&nginx), ("POST".into(), "/a".into()));
        let envoy = request("PUT", "/_auth/api/items?q=2", &[]);
        assert_eq!(ok(&envoy), ("PUT".into(), "/api/items?q=2".into()));
        assert_eq!(
            ok(&request("GET", "/_auth", &[])),
            ("GET".into(), "/".into())
        );
    }

    #[test]
    fn other_paths_are_not_forward_auth() {
        assert!(read(&request("GET", "/_authx", &[])).is_none());
        assert!(read(&request("GET", "/api", &[])).is_none());
    }

    #[test]
    fn an_ambiguous_or_malformed_original_is_refused() {
        for pairs in [
            vec![("x-original-uri", "/a"), ("x-original-uri", "/b")],
            vec![("x-forwarded-uri", "http://evil/a")],
            vec![("x-forwarded-uri", "a/b")],
            vec![("x-forwarded-uri", "/a b")],
            vec![("x-original-method", "GE T"), ("x-original-uri", "/a")],
        ] {
            let r = request("GET", "/_auth", &pairs);
            assert!(read(&r).unwrap().is_err(), "{pairs:?}");
        }
    }
}
