//! Learning tokens from login responses (SPEC §2).
//!
//! A capture route is forwarded without authentication; on a 2xx answer the issued
//! token is read from the response (a JSON field, a header or a `Set-Cookie`), and the
//! caller ([`crate::gate`]) verifies and stores it before the response goes back
//! unchanged. This module owns the reading: where the token is, and how much of a body
//! may be read to find it ([`MAX_CAPTURE_BODY`]). On a refresh route (SPEC §15) it also
//! reads the refresh token the *request* presents ([`take_presented`], a body of at most
//! [`MAX_PRESENTED_BODY`]).

use std::fmt;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE};
use http::{Request, Response};
use http_body_util::BodyExt;

use crate::body::{Body, Prefixed};

/// The most of a JSON response read to find a token; beyond it the response passes
/// through untouched and nothing is captured.
pub const MAX_CAPTURE_BODY: usize = 1024 * 1024;

/// The most of a refresh request's body read to find the presented refresh token; a
/// larger body is refused (SPEC §15).
pub const MAX_PRESENTED_BODY: usize = 64 * 1024;

/// Where a capture route's response carries the issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureSource {
    /// `json:<JSON pointer>` (RFC 6901) into the response body.
    Json(String),
    /// `header:NAME`: the token, optionally after `Bearer `.
    Header(HeaderName),
    /// `cookie:NAME`: a `Set-Cookie` of that name.
    Cookie(String),
}

impl CaptureSource {
    /// Parses `json:/ptr`, `header:NAME` or `cookie:NAME`.
    pub fn parse(text: &str) -> Result<CaptureSource, String> {
        match text.split_once(':') {
            Some(("json", ptr)) if ptr.is_empty() || ptr.starts_with('/') => {
                Ok(CaptureSource::Json(ptr.to_string()))
            }
            Some(("json", ptr)) => Err(format!(
                "{ptr:?} is not a JSON pointer (it must start with /)"
            )),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(CaptureSource::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            Some(("cookie", name)) if crate::extract::valid_cookie_name(name) => {
                Ok(CaptureSource::Cookie(name.into()))
            }
            Some(("cookie", name)) => Err(format!("{name:?} is not a valid cookie name")),
            _ => Err(format!(
                "{text:?} is not json:<pointer>, header:NAME or cookie:NAME"
            )),
        }
    }
}

impl fmt::Display for CaptureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureSource::Json(p) => write!(f, "json:{p}"),
            CaptureSource::Header(h) => write!(f, "header:{h}"),
            CaptureSource::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

/// Why nothing was captured from a 2xx response. Logged and counted, never silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptureMiss {
    /// The configured field, header or cookie is absent or empty.
    #[error("the response carries no token at the configured place")]
    NotFound,
    /// The body is not JSON.
    #[error("the response body is not JSON")]
    NotJson,
    /// The body is larger than [`MAX_CAPTURE_BODY`].
    #[error("the response body is larger than the capture bound")]
    TooLarge,
    /// The body could not be read from the backend.
    #[error("the response body could not be read")]
    BodyError,
    /// The header or cookie appears more than once.
    #[error("the response carries more than one token")]
    Ambiguous,
}

impl CaptureMiss {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CaptureMiss::NotFound => "not_found",
            CaptureMiss::NotJson => "not_json",
            CaptureMiss::TooLarge => "too_large",
            CaptureMiss::BodyError => "body_error",
            CaptureMiss::Ambiguous => "ambiguous",
        }
    }
}

/// Reads the token out of a 2xx response; returns the response to send on (its body
/// re-assembled if it had to be read) and the token or why there is none.
pub async fn take_token(
    source: &CaptureSource,
    response: Response<Body>,
) -> (Response<Body>, Result<String, CaptureMiss>) {
    let (response, mut found) = take_tokens(std::slice::from_ref(source), response).await;
    (response, found.pop().unwrap_or(Err(CaptureMiss::NotFound)))
}

/// Reads several tokens out of one 2xx response (an access token and the refresh token
/// issued with it), the body at most once; one result per source, in order.
pub async fn take_tokens(
    sources: &[CaptureSource],
    response: Response<Body>,
) -> (Response<Body>, Vec<Result<String, CaptureMiss>>) {
    let needs_body = sources.iter().any(|s| matches!(s, CaptureSource::Json(_)));
    let (response, body) = if needs_body {
        read_json_body(response).await
    } else {
        (response, Err(CaptureMiss::NotFound))
    };
    let found = sources
        .iter()
        .map(|source| match source {
            CaptureSource::Json(pointer) => body.clone().and_then(|b| from_json(&b, pointer)),
            _ => from_headers(source, response.headers()),
        })
        .collect();
    (response, found)
}

/// Reads the refresh token a request presents, without consuming it: the request comes
/// back whole (its body re-assembled if it had to be read) with the token or why there
/// is none. `json:<pointer>` reads a JSON body, or a form-encoded one
/// (`application/x-www-form-urlencoded`), where the pointer names the field
/// (`json:/refresh` is the field `refresh`); `header:NAME` a request header (optionally
/// `Bearer `); `cookie:NAME` a cookie of the request.
pub async fn take_presented(
    source: &CaptureSource,
    request: Request<Body>,
) -> (Request<Body>, Result<String, CaptureMiss>) {
    match source {
        CaptureSource::Header(name) => {
            let token = from_header(request.headers(), name);
            (request, token)
        }
        CaptureSource::Cookie(name) => {
            let token = from_cookie_header(request.headers(), name);
            (request, token)
        }
        CaptureSource::Json(pointer) => {
            let form = request
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("application/x-www-form-urlencoded")
                });
            let pointer = pointer.clone();
            let (parts, body) = request.into_parts();
            let Some(bytes) = collect_limited(body).await else {
                // Too large or broken: nothing can be forwarded faithfully either.
                let request = Request::from_parts(parts, crate::body::empty());
                return (request, Err(CaptureMiss::TooLarge));
            };
            let token = if form {
                from_form(&bytes, pointer.trim_start_matches('/'))
            } else {
                from_json(&bytes, &pointer)
            };
            (Request::from_parts(parts, crate::body::full(bytes)), token)
        }
    }
}

/// A request body of at most [`MAX_PRESENTED_BODY`], whole; `None` when it is larger or
/// broke off.
pub(crate) async fn collect_limited(mut body: Body) -> Option<Bytes> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.ok()?.data_ref() {
            buffer.extend_from_slice(data);
        }
        if buffer.len() > MAX_PRESENTED_BODY {
            return None;
        }
    }
    Some(buffer.freeze())
}

/// A field of a form-encoded body (`a=1&b=2`, `+` for space, `%XX` escapes); two
/// fields of that name are ambiguous.
fn from_form(body: &[u8], field: &str) -> Result<String, CaptureMiss> {
    let text = std::str::from_utf8(body).map_err(|_| CaptureMiss::NotFound)?;
    let mut found = None;
    for pair in text.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(name) != field {
            continue;
        }
        if found.is_some() {
            return Err(CaptureMiss::Ambiguous);
        }
        found = Some(form_decode(value));
    }
    non_empty(&found.ok_or(CaptureMiss::NotFound)?)
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    String::from_utf8_lossy(&crate::gate::percent_decode(&spaced)).into_owned()
}

/// A cookie of a request, read as a token source reads it ([`crate::extract`]).
fn from_cookie_header(headers: &HeaderMap, name: &str) -> Result<String, CaptureMiss> {
    match crate::extract::from_cookie(headers, name) {
        Ok(Some(value)) => Ok(value.to_owned()),
        Ok(None) => Err(CaptureMiss::NotFound),
        Err(_) => Err(CaptureMiss::Ambiguous),
    }
}

/// Finds the token in response headers, for the `header:` and `cookie:` sources.
pub fn from_headers(source: &CaptureSource, headers: &HeaderMap) -> Result<String, CaptureMiss> {
    match source {
        CaptureSource::Header(name) => from_header(headers, name),
        CaptureSource::Cookie(name) => from_set_cookie(headers, name),
        CaptureSource::Json(_) => Err(CaptureMiss::NotFound),
    }
}

fn from_header(headers: &HeaderMap, name: &HeaderName) -> Result<String, CaptureMiss> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(CaptureMiss::NotFound)?;
    if values.next().is_some() {
        return Err(CaptureMiss::Ambiguous);
    }
    let value = value.to_str().map_err(|_| CaptureMiss::NotFound)?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    non_empty(token)
}

fn from_set_cookie(headers: &HeaderMap, name: &str) -> Result<String, CaptureMiss> {
    let mut found = None;
    for value in headers.get_all(SET_COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let Ok(cookie) = cookie::Cookie::parse(text) else {
            continue;
        };
        if cookie.name() != name {
            continue;
        }
        if found.is_some() {
            return Err(CaptureMiss::Ambiguous);
        }
        found = Some(cookie.value().to_string());
    }
    non_empty(&found.ok_or(CaptureMiss::NotFound)?)
}

fn non_empty(token: &str) -> Result<String, CaptureMiss> {
    if token.is_empty() {
        Err(CaptureMiss::NotFound)
    } else {
        Ok(token.to_string())
    }
}

/// Finds the token at a JSON pointer in a body.
pub fn from_json(body: &[u8], pointer: &str) -> Result<String, CaptureMiss> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| CaptureMiss::NotJson)?;
    match value.pointer(pointer) {
        Some(serde_json::Value::String(s)) => non_empty(s),
        _ => Err(CaptureMiss::NotFound),
    }
}

/// Reads a response body of at most [`MAX_CAPTURE_BODY`]; the response comes back whole
/// either way.
async fn read_json_body(response: Response<Body>) -> (Response<Body>, Result<Bytes, CaptureMiss>) {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_CAPTURE_BODY as u64) {
        return (response, Err(CaptureMiss::TooLarge));
    }
    let (parts, mut body) = response.into_parts();
    let mut buffer = BytesMut::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buffer.extend_from_slice(data);
                }
                // Trailers, if any, are not JSON; they are dropped like hop-by-hop data.
                if buffer.len() > MAX_CAPTURE_BODY {
                    let rest = Prefixed::new(buffer.freeze(), body);
                    return (
                        Response::from_parts(parts, crate::body::boxed(rest)),
                        Err(CaptureMiss::TooLarge),
                    );
                }
            }
            Some(Err(_)) => {
                // The backend broke the body; send what we have and let the client see
                // the truncation as it would have without us.
                let bytes: Bytes = buffer.freeze();
                return (
                    Response::from_parts(parts, crate::body::full(bytes)),
                    Err(CaptureMiss::BodyError),
                );
            }
        }
    }
    let bytes = buffer.freeze();
    (
        Response::from_parts(parts, crate::body::full(bytes.clone())),
        Ok(bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;
    use http::HeaderValue;

    #[test]
    fn sources_parse_and_display() {
        for s in [
            "json:/access_token",
            "json:/data/0/token",
            "header:X-Token",
            "cookie:access_token",
        ] {
            let parsed = CaptureSource::parse(s).unwrap();
            assert_eq!(parsed.to_string().to_lowercase(), s.to_lowercase());
        }
        for bad in ["json:access_token", "body:x", "cookie:a;b", "header:a b"] {
            assert!(CaptureSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_pointer_finds_nested_strings_only() {
        let body = br#"{"access_token":"t1","data":{"tokens":["t2"]},"n":5}"#;
        assert_eq!(from_json(body, "/access_token"), Ok("t1".into()));
        assert_eq!(from_json(body, "/data/tokens/0"), Ok("t2".into()));
        assert_eq!(from_json(body, "/n"), Err(CaptureMiss::NotFound));
        assert_eq!(from_json(body, "/missing"), Err(CaptureMiss::NotFound));
        assert_eq!(
            from_json(b"<html>", "/access_token"),
            Err(CaptureMiss::NotJson)
        );
    }

    #[test]
    fn set_cookie_is_parsed_with_attributes() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("other=x; Path=/"));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("access_token=tok; Path=/; HttpOnly; Secure; SameSite=Lax"),
        );
        assert_eq!(from_set_cookie(&h, "access_token"), Ok("tok".into()));
        h.append(SET_COOKIE, HeaderValue::from_static("access_token=tok2"));
        assert_eq!(
            from_set_cookie(&h, "access_token"),
            Err(CaptureMiss::Ambiguous)
        );
        assert_eq!(
            from_set_cookie(&HeaderMap::new(), "access_token"),
            Err(CaptureMiss::NotFound)
        );
    }

    #[test]
    fn header_accepts_raw_or_bearer() {
        let name = HeaderName::from_static("x-token");
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_static("Bearer abc"));
        assert_eq!(from_header(&h, &name), Ok("abc".into()));
        h.insert(&name, HeaderValue::from_static("abc"));
        assert_eq!(from_header(&h, &name), Ok("abc".into()));
    }

    #[test]
    fn form_fields_are_decoded_and_must_be_single() {
        assert_eq!(
            from_form(b"a=1&refresh=x%2Ey+z", "refresh"),
            Ok("x.y z".into())
        );
        assert_eq!(
            from_form(b"refresh=a&refresh=b", "refresh"),
            Err(CaptureMiss::Ambiguous)
        );
        assert_eq!(from_form(b"other=a", "refresh"), Err(CaptureMiss::NotFound));
        assert_eq!(
            from_form(b"refresh=", "refresh"),
            Err(CaptureMiss::NotFound)
        );
    }

    #[tokio::test]
    async fn a_presented_token_is_read_and_the_request_kept_whole() {
        let source = CaptureSource::Json("/refresh".into());
        let body = br#"{"refresh":"r1"}"#.to_vec();
        let request = Request::new(crate::body::full(body.clone()));
        let (request, token) = take_presented(&source, request).await;
        assert_eq!(token, Ok("r1".into()));
        let kept = request.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(kept, body);
        let mut form = Request::new(crate::body::full(&b"refresh=r2"[..]));
        form.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert_eq!(take_presented(&source, form).await.1, Ok("r2".into()));
        let big = Request::new(crate::body::full(vec![b' '; MAX_PRESENTED_BODY + 1]));
        assert_eq!(
            take_presented(&source, big).await.1,
            Err(CaptureMiss::TooLarge)
        );
        let mut cookie = Request::new(crate::body::empty());
        cookie
            .headers_mut()
            .insert(COOKIE, HeaderValue::from_static("a=1; refresh=r3"));
        let source = CaptureSource::Cookie("refresh".into());
        assert_eq!(take_presented(&source, cookie).await.1, Ok("r3".into()));
    }

    #[tokio::test]
    async fn a_body_over_the_bound_passes_through_whole() {
        let big = vec![b'x'; MAX_CAPTURE_BODY + 10];
        let response = Response::new(crate::body::full(big.clone()));
        let (response, token) = take_token(&CaptureSource::Json("/t".into()), response).await;
        assert_eq!(token, Err(CaptureMiss::TooLarge));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), big.len());
    }
}
