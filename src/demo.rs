//! `tokengate demo`: a sample backend behind the proxy, in one process.
//!
//! The backend knows nothing about tokengate: `POST /login` issues an HS256 token in a
//! JSON body, and every other route echoes what it received, including the identity
//! header. The proxy in front of it captures the token from `/login`, authenticates
//! every other call, and revokes on `/logout`. The walkthrough's curl commands are
//! printed with the real ports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::App;
use crate::body::{self, Body};
use crate::cli::DemoArgs;
use crate::config::Config;

/// Lifetime of the tokens the sample backend issues.
const TOKEN_LIFETIME: i64 = 3600;

/// Runs the walkthrough until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let backend = crate::server::bind("demo backend", args.backend_listen).await?;
    let backend_addr = backend.local_addr()?;
    let public = match args.listen {
        Some(addr) => crate::server::bind("demo proxy", addr).await?,
        None => match TcpListener::bind("127.0.0.1:8080").await {
            Ok(l) => l,
            Err(_) => crate::server::bind("demo proxy", "127.0.0.1:0".parse()?).await?,
        },
    };
    let admin = crate::server::bind("demo admin", args.admin_listen).await?;
    let proxy_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let db = std::env::temp_dir().join(format!("tokengate-demo-{}.db", std::process::id()));

    let config_text = format!(
        r#"
[server]
listen = "{proxy_addr}"
admin_listen = "{admin_addr}"
shutdown_grace_seconds = 2

[upstream]
url = "http://{backend_addr}"

[jwt]
algorithms = ["HS256"]
secret = "{secret}"

[[capture]]
path = "/login"
method = "POST"
from = "json:/access_token"

[store]
sqlite_path = {db:?}

[routes]
public = ["/healthz"]
"#,
        db = db.display().to_string()
    );
    let config =
        Config::from_toml(&config_text, std::path::Path::new(".")).context("demo config")?;
    let app = App::open(config)
        .await
        .map_err(|e| anyhow::anyhow!("store error: {e}"))?;

    let backend_secret = Arc::new(secret);
    tokio::spawn(serve_backend(backend, backend_secret));

    print_walkthrough(proxy_addr, admin_addr, backend_addr);
    let result = crate::server::run(app, public, admin, crate::server::shutdown_signal()).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    result
}

fn print_walkthrough(proxy: SocketAddr, admin: SocketAddr, backend: SocketAddr) {
    let p = format!("http://{proxy}");
    println!(
        r#"tokengate demo
  proxy    {p}   (tokengate, in front of the sample backend)
  backend  http://{backend}   (issues HS256 tokens on POST /login, echoes everything else)
  admin    http://{admin}/readyz

Try it in another terminal:

  # 1. no token: refused by tokengate, the backend never sees the request
  curl -i {p}/api/hello

  # 2. log in through the proxy: tokengate captures the issued token
  TOKEN=$(curl -s -X POST {p}/login -H 'content-type: application/json' -d '{{"user":"alice"}}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

  # 3. call the backend: it is told who you are (X-User-Id)
  curl -s {p}/api/hello -H "Authorization: Bearer $TOKEN"

  # 4. your sessions, then log out: the token is revoked at once
  curl -s {p}/sessions -H "Authorization: Bearer $TOKEN"
  curl -i -X POST {p}/logout -H "Authorization: Bearer $TOKEN"

  # 5. the same token, still unexpired, is now refused
  curl -i {p}/api/hello -H "Authorization: Bearer $TOKEN"

Ctrl-C stops the demo."#
    );
}

/// The sample backend: accepts connections until the process ends.
async fn serve_backend(listener: TcpListener, secret: Arc<String>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let secret = secret.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| backend(secret.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn backend(
    secret: Arc<String>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let response = if parts.method == Method::POST && parts.uri.path() == "/login" {
        let user = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("user").and_then(|u| u.as_str()).map(String::from))
            .unwrap_or_else(|| "alice".into());
        let now = crate::jwt::now();
        let claims = json!({
            "sub": user,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            // A unique id: two logins in the same second are two tokens.
            "jti": hex::encode(rand::random::<[u8; 8]>()),
        });
        let signed = EncodingKey::from_secret(secret.as_bytes())
            .and_then(|key| encode(&Header::new(Algorithm::HS256), &claims, &key));
        match signed {
            Ok(token) => json(
                StatusCode::OK,
                json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME}),
            ),
            Err(_) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "could not sign"}),
            ),
        }
    } else {
        let user = parts.headers.get("x-user-id").and_then(|v| v.to_str().ok());
        json(
            StatusCode::OK,
            json!({
                "backend": "sample",
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "x-user-id": user,
                "body_bytes": bytes.len(),
            }),
        )
    };
    Ok(response)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(format!("{value}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
