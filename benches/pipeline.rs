//! Micro-benchmarks of the hot path, so that a regression shows without wrk:
//!
//! - `verify/{HS256,RS256,ES256}`: signature and claim checks of one token;
//! - `cache/hit`: the cache key of a token and a hit in a cache of 10k verdicts;
//! - `store/check`: an allowlist lookup in a SQLite store of 10k live tokens;
//! - `pipeline/{public,protected_cached,protected_store}`: [`tokengate::gate::handle`]
//!   on an in-process request, through the header rules, the cache or the store, and
//!   the upstream client to an in-process backend on a loopback socket.
//!
//! Run: `cargo bench --bench pipeline` (add `-- pipeline/` for one group). The
//! end-to-end comparison with nginx is `bench/hop.sh`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokengate::app::App;
use tokengate::config::Config;
use tokengate::connection::Budget;
use tokengate::context::{ClientConn, ConnInfo};
use tokengate::strategy::{Liveness, SessionMeta};
use tokio::runtime::Runtime;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const TOKENS: usize = 10_000;

fn keys() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn mint(alg: Algorithm, key: &EncodingKey, n: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "sub": format!("user{}", n % 1000),
        "iat": now,
        "exp": now + 3600,
        "jti": format!("bench-{n}"),
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    let pem = |file: &str| std::fs::read(keys().join(file)).unwrap();
    match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("ec256_private.pem")).unwrap(),
        other => unreachable!("{other:?}"),
    }
}

fn jwt_block(alg: Algorithm) -> String {
    let dir = keys().display().to_string();
    match alg {
        Algorithm::HS256 => format!("algorithms = [\"HS256\"]\nsecret = \"{SECRET}\""),
        Algorithm::RS256 => {
            format!("algorithms = [\"RS256\"]\npublic_key_file = \"{dir}/rsa_public.pem\"")
        }
        Algorithm::ES256 => {
            format!("algorithms = [\"ES256\"]\npublic_key_file = \"{dir}/ec256_public.pem\"")
        }
        other => unreachable!("{other:?}"),
    }
}

/// tokengate in front of `backend`, with a SQLite allowlist under `dir`. The cache's
/// staleness bound is wide, so that a feed poll delayed by the benchmark's own load
/// does not turn measured hits into misses.
fn config(alg: Algorithm, backend: std::net::SocketAddr, dir: &std::path::Path) -> Config {
    let text = format!(
        "[upstream]\nurl = \"http://{backend}\"\n[jwt]\n{}\n[store]\nsqlite_path = \"{}\"\n\
         strategy = \"allowlist\"\n[routes]\npublic = [\"/public/*\"]\n\
         [cache]\nmax_staleness_ms = 5000\n",
        jwt_block(alg),
        dir.join("tokengate.db").display()
    );
    Config::from_toml(&text, dir).unwrap()
}

/// An in-process backend answering every request with a short body.
async fn backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A running App with `TOKENS` live tokens of `alg`; returns the tokens.
struct Setup {
    rt: Runtime,
    app: Arc<App>,
    conn: Arc<ClientConn>,
    tokens: Vec<String>,
    _dir: tempfile::TempDir,
}

/// A runtime whose one worker runs the backend and the revocation feed reader (which
/// keeps cached verdicts usable) while the benchmark drives requests from the main
/// thread.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts the feed reader, as `server::run` does.
fn start_feed(rt: &Runtime, app: &App) {
    if let Some(reader) = app.feed_reader() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        std::mem::forget(stop); // runs until the process ends
        rt.spawn(reader.run(stopped));
    }
}

fn setup(alg: Algorithm) -> Setup {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let key = encoding_key(alg);
    let tokens: Vec<String> = (0..TOKENS).map(|n| mint(alg, &key, n)).collect();
    let (app, conn) = rt.block_on(async {
        let addr = backend().await;
        let app = App::open(config(alg, addr, dir.path())).await.unwrap();
        for token in &tokens {
            let verified = app.policy().verifier.verify(token).unwrap();
            app.strategy
                .admit(&verified, SessionMeta::default())
                .await
                .unwrap();
        }
        let conn = Arc::new(ClientConn::new(
            ConnInfo::new("127.0.0.1:40000".parse().unwrap(), false, false),
            app.upstream.link(),
            Arc::new(Budget::new(usize::MAX).take().unwrap()),
        ));
        (app, conn)
    });
    start_feed(&rt, &app);
    Setup {
        rt,
        app,
        conn,
        tokens,
        _dir: dir,
    }
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(alg, "127.0.0.1:9".parse().unwrap(), dir.path());
        let verifier = tokengate::app::verifier(&config, tokengate::app::KeyLoading::Load).unwrap();
        let token = mint(alg, &encoding_key(alg), 1);
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| verifier.verify(black_box(&token)).unwrap())
        });
    }
    group.finish();
}

fn cache_and_store(c: &mut Criterion) {
    let s = setup(Algorithm::HS256);
    let now = tokengate::jwt::now();
    // Fill the cache with every token's verdict, as a run of requests would; twice, since
    // an insert racing the feed reader's first catch-up is (rightly) dropped.
    s.rt.block_on(async {
        for token in s.tokens.iter().chain(&s.tokens) {
            let request = Request::builder()
                .uri("/api/x")
                .header("host", "bench")
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = tokengate::gate::handle(s.app.clone(), s.conn.clone(), request)
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    let mut n = 0usize;
    c.bench_function("cache/hit", |b| {
        b.iter(|| {
            n = (n + 1) % TOKENS;
            let key = s.app.cache.key(&s.tokens[n]).unwrap();
            black_box(s.app.cache.lookup(&key, now).unwrap());
        })
    });
    let verified: Vec<_> = s
        .tokens
        .iter()
        .map(|t| s.app.policy().verifier.verify(t).unwrap())
        .collect();
    c.bench_function("store/check", |b| {
        b.iter(|| {
            n = (n + 1) % TOKENS;
            let live = s.rt.block_on(s.app.strategy.check(&verified[n])).unwrap();
            assert!(matches!(live, Liveness::Live(_)));
        })
    });
}

/// One request through `gate::handle`, its response body read; asserts the status.
fn one(s: &Setup, path: &str, token: Option<&str>, status: u16) {
    s.rt.block_on(async {
        let mut request = Request::builder().uri(path).header("host", "bench");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let response = tokengate::gate::handle(s.app.clone(), s.conn.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        black_box(response.into_body().collect().await.unwrap());
    });
}

fn pipeline(c: &mut Criterion) {
    let s = setup(Algorithm::HS256);
    let mut group = c.benchmark_group("pipeline");
    group.bench_function("public", |b| b.iter(|| one(&s, "/public/x", None, 200)));
    let mut n = 0usize;
    group.bench_function("protected_cached", |b| {
        b.iter(|| {
            n = (n + 1) % 100;
            one(&s, "/api/x", Some(&s.tokens[n]), 200)
        })
    });
    // The cache off: every request verifies and reads the store.
    let uncached = {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (app, conn) = rt.block_on(async {
            let addr = backend().await;
            let mut config = config(Algorithm::HS256, addr, dir.path());
            config.store = s.app.policy().config.store.clone();
            config.cache.enabled = false;
            let app = App::open(config).await.unwrap();
            let conn = Arc::new(ClientConn::new(
                ConnInfo::new("127.0.0.1:40001".parse().unwrap(), false, false),
                app.upstream.link(),
                Arc::new(Budget::new(usize::MAX).take().unwrap()),
            ));
            (app, conn)
        });
        Setup {
            rt,
            app,
            conn,
            tokens: s.tokens.clone(),
            _dir: dir,
        }
    };
    group.bench_function("protected_store", |b| {
        b.iter(|| {
            n = (n + 1) % TOKENS;
            one(&uncached, "/api/x", Some(&uncached.tokens[n]), 200)
        })
    });
    group.bench_function("refused_no_token", |b| {
        b.iter(|| one(&s, "/api/x", None, 401))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = verify, cache_and_store, pipeline
}
criterion_main!(benches);
