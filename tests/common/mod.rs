//! The end-to-end harness: a real backend, a real tokengate and a real HTTP client, all
//! on port-0 listeners, with a real SQLite file in a temporary directory.
//!
//! - [`Backend`] records every request it receives, so a test can prove that a refusal
//!   never reached it. Its `/login*` routes issue tokens like an unmodified backend.
//! - [`Gate`] runs tokengate in-process from a TOML config (`{backend}` and `{db}` are
//!   filled in), and can be stopped and restarted on the same database.
//! - [`send`] and [`raw`] are the clients: hyper for HTTP, a TCP socket for framing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use tokengate::app::App;
use tokengate::config::Config;

/// The HMAC secret of the default config.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// Path of a test key file.
pub fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// Unix seconds now.
pub fn now() -> i64 {
    tokengate::jwt::now()
}

/// Claims of a fresh token for `user`, valid for an hour, unique (`jti`).
pub fn claims(user: &str) -> Value {
    let n = now();
    json!({"sub": user, "iat": n, "exp": n + 3600, "jti": hex::encode(rand::random::<[u8; 8]>())})
}

/// Signs claims with HS256 and the default secret.
pub fn mint(claims: &Value) -> String {
    mint_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        claims,
        None,
    )
}

/// Signs claims with any algorithm and key, optionally with a `kid`.
pub fn mint_with(alg: Algorithm, key: &EncodingKey, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// An encoding key from a PEM file in `tests/keys`.
pub fn private_key(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = std::fs::read(key_path(file)).unwrap();
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_secret(&pem).unwrap(),
    }
}

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
}

impl Seen {
    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>").to_string())
            .collect()
    }
}

/// A function that signs a token for a user (how the backend issues tokens).
pub type Minter = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A real HTTP backend that records what reaches it.
///
/// Routes: `POST /login` (token in JSON `access_token`), `POST /login-header` (token in
/// `X-Access-Token`), `POST /login-cookie` (token in `Set-Cookie: access_token`),
/// `POST /login-fail` (401 with a token in the body), `/slow` (answers after 3 s), `/sleep/{ms}`,
/// `/stream/{n}` (n bytes), `/big-login` (2 MiB JSON with a token at the end), anything
/// else: 200 with a JSON echo of the request's body length and hash.
/// The login routes read the user from a JSON body `{"user": ...}` (default `alice`).
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    /// A backend issuing HS256 tokens with [`SECRET`].
    pub async fn start() -> Backend {
        Backend::start_with(Arc::new(|user: &str| mint(&claims(user)))).await
    }

    /// A backend issuing tokens with the given minter.
    pub async fn start_with(minter: Minter) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let log = seen.clone();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let accepted_count = connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                accepted_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let log = log.clone();
                let minter = minter.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| backend_route(log.clone(), minter.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            seen,
            connections,
            _stop: stop,
        }
    }

    /// Asserts that the backend received nothing since it had seen `before` requests
    /// (how every refusal test proves that nothing was forwarded).
    pub fn assert_untouched(&self, before: usize) {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            before,
            "the backend was reached: {:?}",
            &seen[before.min(seen.len())..]
        );
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend saw no request")
    }
}

async fn backend_route(
    log: Arc<Mutex<Vec<Seen>>>,
    minter: Minter,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    log.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len: bytes.len(),
        body_sha256: hex::encode(Sha256::digest(&bytes)),
    });
    let user = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("user").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "alice".into());
    let path = parts.uri.path().to_string();
    let mut response = Response::new(Full::new(Bytes::new()));
    match path.as_str() {
        "/login" => {
            let token = minter(&user);
            *response.body_mut() = Full::new(Bytes::from(
                json!({"access_token": token, "token_type": "Bearer"}).to_string(),
            ));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
                .headers_mut()
                .insert("x-backend-header", "kept".parse().unwrap());
        }
        // A simplejwt-shaped pair: login issues access + refresh; refresh rotates both.
        // Like an unmodified backend, it knows nothing of tokengate's revocations.
        // `/api/token/refresh-keep/` hands the presented refresh token back (no rotation).
        "/api/token/" | "/api/token/refresh/" | "/api/token/refresh-keep/" => {
            let user = if path == "/api/token/" {
                Some(user)
            } else {
                presented_refresh_user(&parts.headers, &bytes)
            };
            match user {
                Some(user) => {
                    let refresh = if path == "/api/token/refresh-keep/" {
                        serde_json::from_slice::<Value>(&bytes).unwrap_or_default()["refresh"]
                            .clone()
                    } else {
                        json!(mint(&token_of_type(&user, "refresh", 86_400)))
                    };
                    let body = json!({
                        "access": mint(&token_of_type(&user, "access", 300)),
                        "refresh": refresh,
                    });
                    *response.body_mut() = Full::new(Bytes::from(body.to_string()));
                    response
                        .headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                }
                None => *response.status_mut() = StatusCode::UNAUTHORIZED,
            }
        }
        "/login-header" => {
            response
                .headers_mut()
                .insert("x-access-token", minter(&user).parse().unwrap());
        }
        "/login-cookie" => {
            let cookie = format!(
                "access_token={}; Path=/; HttpOnly; SameSite=Lax",
                minter(&user)
            );
            response
                .headers_mut()
                .insert("set-cookie", cookie.parse().unwrap());
        }
        "/login-fail" => {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            *response.body_mut() = Full::new(Bytes::from(
                json!({"access_token": minter(&user)}).to_string(),
            ));
        }
        "/big-login" => {
            let token = minter(&user);
            let padding = "x".repeat(2 * 1024 * 1024);
            *response.body_mut() = Full::new(Bytes::from(
                json!({"padding": padding, "access_token": token}).to_string(),
            ));
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        p if p.starts_with("/sleep/") => {
            let ms: u64 = p["/sleep/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        p if p.starts_with("/stream/") => {
            let n: usize = p["/stream/".len()..].parse().unwrap_or(0);
            *response.body_mut() = Full::new(Bytes::from(vec![b'z'; n]));
        }
        _ => {
            let echo = json!({"body_len": bytes.len(), "body_sha256": hex::encode(Sha256::digest(&bytes))});
            *response.body_mut() = Full::new(Bytes::from(echo.to_string()));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            // Hop-by-hop headers that must not reach the client.
            response
                .headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            response
                .headers_mut()
                .insert("proxy-connection", "keep-alive".parse().unwrap());
            response
                .headers_mut()
                .insert("x-backend-private", "named".parse().unwrap());
            response
                .headers_mut()
                .insert("connection", "x-backend-private".parse().unwrap());
        }
    }
    Ok(response)
}

/// Claims of a token of a simplejwt `token_type`, valid for `ttl` seconds.
pub fn token_of_type(user: &str, token_type: &str, ttl: i64) -> Value {
    let mut c = claims(user);
    c["token_type"] = json!(token_type);
    c["exp"] = json!(now() + ttl);
    c
}

/// The user of the refresh token a refresh request presents (JSON `refresh`, or the
/// form field), read without verifying: the backend trusts its own tokens.
fn presented_refresh_user(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = if form {
        String::from_utf8_lossy(body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("refresh=").map(String::from))?
    } else {
        serde_json::from_slice::<Value>(body)
            .ok()?
            .get("refresh")?
            .as_str()?
            .to_string()
    };
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
        .ok()?
        .claims;
    (claims.get("token_type")? == "refresh").then(|| claims["sub"].as_str().map(String::from))?
}

/// The default config: HS256 with [`SECRET`], JSON capture on `/login`, header capture
/// on `/login-header`, cookie capture on `/login-cookie`, `/login-fail` and
/// `/big-login` captured too, `/public/*` and `/healthz` public.
pub const DEFAULT_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 5

[upstream]
url = "http://{backend}"
timeout_seconds = 1

[jwt]
algorithms = ["HS256"]
secret = "test-secret-0123456789abcdef0123456789"
leeway_seconds = 5

[[capture]]
path = "/login"
from = "json:/access_token"

[[capture]]
path = "/login-header"
from = "header:X-Access-Token"

[[capture]]
path = "/login-cookie"
from = "cookie:access_token"

[[capture]]
path = "/login-fail"
from = "json:/access_token"

[[capture]]
path = "/big-login"
from = "json:/access_token"

[store]
sqlite_path = "{db}"
strategy = "{strategy}"

[routes]
public = ["/healthz", "/public/*"]

[forward]
claim_headers = { email = "X-User-Email" }
"#;

/// [`DEFAULT_CONFIG`] (allowlist) with `lines` added to its `[section]`, or in a new
/// `[section]` at the end when it has none.
pub fn config_with(section: &str, lines: &str) -> String {
    let config = DEFAULT_CONFIG.replace("{strategy}", "allowlist");
    let header = format!("[{section}]\n");
    let lines = lines.trim_end_matches('\n');
    if config.contains(&header) {
        config.replacen(&header, &format!("{header}{lines}\n"), 1)
    } else {
        format!("{config}\n{header}{lines}\n")
    }
}

/// A running tokengate.
pub struct Gate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    pub dir: Arc<tempfile::TempDir>,
    config: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gate {
    /// tokengate with [`DEFAULT_CONFIG`] (allowlist) in front of `backend`.
    pub async fn start(backend: &Backend) -> Gate {
        Gate::start_config(backend, &DEFAULT_CONFIG.replace("{strategy}", "allowlist")).await
    }

    /// tokengate with the default config and another strategy.
    pub async fn start_strategy(backend: &Backend, strategy: &str) -> Gate {
        Gate::start_config(backend, &DEFAULT_CONFIG.replace("{strategy}", strategy)).await
    }

    /// tokengate with a config text; `{backend}`, `{db}` and `{keys}` are filled in.
    pub async fn start_config(backend: &Backend, config: &str) -> Gate {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = config
            .replace("{backend}", &backend.addr.to_string())
            .replace("{keys}", &key_path("").display().to_string());
        Gate::launch(dir, config).await
    }

    async fn launch(dir: Arc<tempfile::TempDir>, config: String) -> Gate {
        let text = config.replace(
            "{db}",
            &dir.path().join("tokengate.db").display().to_string(),
        );
        let config_parsed = Config::from_toml(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let app = App::open(config_parsed)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = public.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tokengate::server::run(
            app.clone(),
            public,
            admin,
            async move {
                let _ = stopped.await;
            },
        ));
        Gate {
            addr,
            admin: admin_addr,
            app,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of a path on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tokengate.db")
    }

    /// Stops tokengate gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Stops this tokengate and starts a new one on the same database and config.
    pub async fn restart(mut self) -> Gate {
        self.stop().await;
        let dir = self.dir.clone();
        let config = self.config.clone();
        Gate::launch(dir, config).await
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

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

/// Writes raw bytes to the proxy and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// The number of rows in a table of the gate's database.
pub fn rows(gate: &Gate, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The PostgreSQL server of the tests (trust auth); `TOKENGATE_TEST_POSTGRES_URL`
/// overrides it.
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// [`PG_URL`], or its override.
pub fn pg_url() -> String {
    std::env::var("TOKENGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| PG_URL.to_string())
}

/// An admin connection to the test server (not a store: no schema of its own).
pub async fn pg_admin() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (set TOKENGATE_TEST_POSTGRES_URL): {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh schema `tg_<hex>` on the test server, so that tests sharing the server never
/// see each other's rows. Stores reach it through [`PgSchema::url`], whose
/// `search_path` and `application_name` are the schema's name. Dropped (best effort)
/// with the value.
pub struct PgSchema {
    pub name: String,
    pub url: String,
}

impl PgSchema {
    /// Creates the schema.
    pub async fn create() -> PgSchema {
        let name = format!("tg_{}", hex::encode(rand::random::<[u8; 8]>()));
        pg_admin()
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let url = PgSchema::url_for(&pg_url(), &name);
        PgSchema { name, url }
    }

    /// `base` with this schema as search path and application name.
    fn url_for(base: &str, name: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{name}&application_name={name}")
    }

    /// The schema's URL with the server's address replaced by `addr` (e.g. a relay).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let base: tokio_postgres::Config = pg_url().parse().unwrap();
        let user = base.get_user().unwrap_or("postgres");
        let db = base.get_dbname().unwrap_or(user);
        PgSchema::url_for(&format!("postgres://{user}@{addr}/{db}"), &self.name)
    }

    /// Ends every server session of this schema's stores (`pg_terminate_backend`);
    /// returns how many there were.
    pub async fn terminate_sessions(&self) -> i64 {
        let row = pg_admin()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .unwrap();
        row.get(0)
    }

    /// The number of rows in one of the schema's tables.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.{table}", self.name);
        pg_admin().await.query_one(&sql, &[]).await.unwrap().get(0)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // On its own thread and runtime: the test's runtime may be single-threaded, or
        // already unwinding from a failed assertion.
        let (url, name) = (pg_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let drop_schema = async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(connection);
                    let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                    client.batch_execute(&sql).await.ok()
                };
                tokio::time::timeout(Duration::from_secs(5), drop_schema)
                    .await
                    .ok()
                    .flatten()
            })
        })
        .join();
    }
}

impl Gate {
    /// tokengate with the default config and `strategy`, on the PostgreSQL store at
    /// `postgres_url` (e.g. a [`PgSchema::url`]; several gates on one URL are replicas),
    /// with the verdict cache off: every request reads the store.
    pub async fn start_pg_uncached(backend: &Backend, strategy: &str, postgres_url: &str) -> Gate {
        let store = format!("backend = \"postgres\"\npostgres_url = \"{postgres_url}\"");
        let config = DEFAULT_CONFIG
            .replace("{strategy}", strategy)
            .replace("sqlite_path = \"{db}\"", &store);
        let config = format!("{config}\n[cache]\nenabled = false\n");
        Gate::start_config(backend, &config).await
    }
}

/// A TCP relay in front of the PostgreSQL server that can be cut, like a network
/// partition between one replica and the database, and restored.
pub struct Relay {
    pub addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start() -> Relay {
        let base: tokio_postgres::Config = pg_url().parse().unwrap();
        let server = match &base.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => {
                format!("{host}:{}", base.get_ports().first().unwrap_or(&5432))
            }
            other => panic!("the relay needs a TCP server, not {other:?}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watching) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = watching.clone();
                if !*up.borrow() {
                    continue; // dropped: the connection is reset at once
                }
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A child process's stderr, read line by line on a thread, so that every wait for a
/// line has a deadline: a child that hangs fails the test instead of hanging the suite.
pub struct ChildLines {
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildLines {
    /// Takes the child's piped stderr.
    pub fn of(child: &mut std::process::Child) -> ChildLines {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildLines { lines }
    }

    /// The next line; `None` once the child closed stderr. Panics, naming `what` was
    /// awaited, when no line comes by `deadline`.
    pub fn next_by(&self, deadline: std::time::Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line from the child in time while waiting for {what}")
            }
        }
    }

    /// Keeps every further line in `sink` (so the child never blocks on a full pipe).
    pub fn drain_into(self, sink: Arc<Mutex<Vec<String>>>) {
        std::thread::spawn(move || {
            for line in self.lines {
                sink.lock().unwrap().push(line);
            }
        });
    }
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
