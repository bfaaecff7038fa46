//! The HTTP client of the tests (hyper, a fresh HTTP/1.1 connection per request) and
//! the assertions on what it reads.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::backend::Backend;
use super::gate::Gate;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// Sends one request through a fresh HTTP/1.1 client.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET with headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, Bytes::new()).await
}

/// GET with a bearer token.
pub async fn get_with(url: &str, token: &str) -> Reply {
    get(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// POST with a bearer token and no body.
pub async fn post_with(url: &str, token: &str) -> Reply {
    send(
        "POST",
        url,
        &[("authorization", &format!("Bearer {token}"))],
        Bytes::new(),
    )
    .await
}

/// Logs `user` in through the proxy's `/login` capture route; returns the token.
pub async fn login(gate: &Gate, user: &str) -> String {
    let r = send(
        "POST",
        &gate.url("/login"),
        &[
            ("content-type", "application/json"),
            ("user-agent", "test-agent/1.0"),
        ],
        json!({"user": user}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// Asserts the JSON refusal shape of SPEC §5.
pub fn assert_refusal(reply: &Reply, status: u16) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert!(
        body["error"].is_string() && body["error_description"].is_string(),
        "{body}"
    );
}

/// Asserts that `token` is refused on a protected route with 401 `invalid_token`, and
/// that the backend never sees the request.
pub async fn assert_refused(gate: &Gate, backend: &Backend, token: &str) {
    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), token).await;
    assert_refusal(&r, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_token\"")),
        "{:?}",
        r.headers
    );
    backend.assert_untouched_because(before, "a refused token must not reach the backend");
}

/// Asserts that `token` gets a request through to the backend as `user`: 200, exactly
/// one request forwarded, with that identity.
pub async fn assert_passes(gate: &Gate, backend: &Backend, token: &str, user: &str) {
    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), token).await;
    assert_eq!(
        r.status,
        200,
        "the token was refused: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(backend.count(), before + 1);
    assert_eq!(backend.last().all("x-user-id"), vec![user]);
}
