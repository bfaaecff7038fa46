//! Keys from an identity provider (SPEC §11): a real JWKS server on a port-0 listener
//! (HTTP on loopback, and HTTPS with a CA made in the test), a real tokengate in front
//! of the recording backend, and the provider's fetch count measured at the server.

mod common;
use common::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use tokengate::app::App;
use tokengate::config::Config;

/// What the provider answers for its key set.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    cache_control: Option<&'static str>,
    delay: Duration,
}

impl Answer {
    fn keys(keys: Value) -> Answer {
        Answer {
            status: 200,
            body: json!({ "keys": keys }).to_string(),
            cache_control: None,
            delay: Duration::ZERO,
        }
    }
}

/// A provider: `/jwks.json` answers [`Answer`], `/.well-known/openid-configuration` a
/// discovery document naming `issuer` and this server's key set; both count fetches.
struct Provider {
    addr: SocketAddr,
    jwks: Arc<Mutex<Answer>>,
    issuer: Arc<Mutex<String>>,
    jwks_fetches: Arc<AtomicUsize>,
    discovery_fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(answer: Answer) -> Provider {
        Provider::start_with(answer, None).await
    }

    /// Over TLS with `tls` when given (the URL is then https://localhost:PORT).
    async fn start_with(first: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let jwks = Arc::new(Mutex::new(first));
        let issuer = Arc::new(Mutex::new("https://idp.test".to_string()));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let discovery_fetches = Arc::new(AtomicUsize::new(0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = if tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let base = format!("{scheme}://{host}:{}", addr.port());
        let (j, i, jf, df) = (
            jwks.clone(),
            issuer.clone(),
            jwks_fetches.clone(),
            discovery_fetches.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (j, i, jf, df, base, tls) = (
                    j.clone(),
                    i.clone(),
                    jf.clone(),
                    df.clone(),
                    base.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (j, i, jf, df, base) =
                            (j.clone(), i.clone(), jf.clone(), df.clone(), base.clone());
                        async move {
                            Ok::<_, Infallible>(
                                answer(request.uri().path(), &j, &i, &jf, &df, &base).await,
                            )
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Provider {
            addr,
            jwks,
            issuer,
            jwks_fetches,
            discovery_fetches,
        }
    }

    fn set(&self, answer: Answer) {
        *self.jwks.lock().unwrap() = answer;
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks.json", self.addr.port())
    }

    fn discovery_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/.well-known/openid-configuration",
            self.addr.port()
        )
    }
}

async fn answer(
    path: &str,
    jwks: &Mutex<Answer>,
    issuer: &Mutex<String>,
    jwks_fetches: &AtomicUsize,
    discovery_fetches: &AtomicUsize,
    base: &str,
) -> Response<Full<Bytes>> {
    match path {
        "/jwks.json" => {
            jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let answer = jwks.lock().unwrap().clone();
            tokio::time::sleep(answer.delay).await;
            let mut response = Response::new(Full::new(Bytes::from(answer.body)));
            *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
            if let Some(cc) = answer.cache_control {
                response
                    .headers_mut()
                    .insert("cache-control", cc.parse().unwrap());
            }
            response
        }
        "/.well-known/openid-configuration" => {
            discovery_fetches.fetch_add(1, Ordering::SeqCst);
            let doc = json!({
                "issuer": *issuer.lock().unwrap(),
                "jwks_uri": format!("{base}/jwks.json"),
                "authorization_endpoint": format!("{base}/authorize"),
            });
            Response::new(Full::new(Bytes::from(doc.to_string())))
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// The public JWK of `tests/keys/jwks.json` with id `kid`, published as `as_kid`.
fn jwk(kid: &str, as_kid: &str) -> Value {
    let set: Value =
        serde_json::from_slice(&std::fs::read(key_path("jwks.json")).unwrap()).unwrap();
    let mut key = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("no {kid} in jwks.json"))
        .clone();
    key["kid"] = json!(as_kid);
    key
}

/// An RS256 token for `user` signed by `private` (a file of tests/keys) with `kid`.
fn token(user: &str, private: &str, kid: &str) -> String {
    mint_with(
        Algorithm::RS256,
        &private_key(Algorithm::RS256, private),
        &claims(user),
        Some(kid),
    )
}

/// rsa-1 and rsa-2 signers.
const RSA1: &str = "rsa_private.pem";
const RSA2: &str = "rsa2_private.pem";

/// A denylist gate (a verified token passes unless revoked: no login needed) whose
/// keys come from `jwt_lines`.
fn jwks_config(jwt_lines: &str) -> GateConfig {
    GateConfig::default()
        .strategy("denylist")
        .replace_sections(&format!(
            "[jwt]\nalgorithms = [\"RS256\"]\nleeway_seconds = 5\n{jwt_lines}"
        ))
}

/// [`jwks_config`] with `provider`'s key set URL and `lines`.
fn provider_config(provider: &Provider, lines: &str) -> GateConfig {
    jwks_config(&format!("jwks_url = \"{}\"\n{lines}", provider.jwks_url()))
}

/// Opens a tokengate from `config` without serving it: the start-up error, if any.
async fn open_error(config: GateConfig) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = config
        .to_string()
        .replace("{backend}", "127.0.0.1:9")
        .replace("{keys}", &key_path("").display().to_string())
        .replace("{db}", &dir.path().join("t.db").display().to_string());
    let config = Config::from_toml(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    match App::open(config).await {
        Ok(_) => panic!("tokengate started"),
        Err(e) => e.to_string(),
    }
}

async fn status(gate: &Gate, token: &str) -> StatusCode {
    get_with(&gate.url("/api/x"), token).await.status
}

async fn metric(gate: &Gate, series: &str) -> String {
    let reply = get(&format!("http://{}/metrics", gate.admin), &[]).await;
    let text = String::from_utf8_lossy(&reply.body).to_string();
    text.lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_kid_at_the_provider_is_picked_up_without_a_restart() {
    let provider = Provider::start(Answer::keys(json!([jwk("rsa-1", "rsa-1")]))).await;
    let backend = Backend::start().await;
    let config = provider_config(&provider, "jwks_min_refetch_seconds = 1");
    let gate = Gate::start_config(&backend, config).await;
    assert_eq!(provider.fetches(), 1, "fetched once at start");
    assert_eq!(status(&gate, &token("ann", RSA1, "rsa-1")).await, 200);

    // The provider rotates in rsa-2: a token naming it is verified after one refetch.
    provider.set(Answer::keys(json!([
        jwk("rsa-1", "rsa-1"),
        jwk("rsa-2", "rsa-2")
    ])));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = backend.count();
    assert_eq!(status(&gate, &token("bob", RSA2, "rsa-2")).await, 200);
    assert_eq!(backend.count(), before + 1);
    assert_eq!(provider.fetches(), 2);
    assert_eq!(
        metric(&gate, "tokengate_jwks_keys").await,
        "tokengate_jwks_keys 2"
    );

    // rsa-1 retired: its tokens stop passing once the set is fetched again, even a
    // verdict the cache held.
    provider.set(Answer::keys(json!([jwk("rsa-2", "rsa-2")])));
    let old = token("cid", RSA1, "rsa-1");
    assert_eq!(status(&gate, &old).await, 200, "cached under the old set");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // An unknown kid makes the refetch that sees the new set.
    assert_eq!(status(&gate, &token("dan", RSA1, "rsa-9")).await, 401);
    assert_eq!(provider.fetches(), 3);
    let before = backend.count();
    assert_eq!(
        status(&gate, &old).await,
        401,
        "a retired key's token passed"
    );
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_cooldown() {
    let provider = Provider::start(Answer::keys(json!([jwk("rsa-1", "rsa-1")]))).await;
    let backend = Backend::start().await;
    let config = provider_config(&provider, "jwks_min_refetch_seconds = 2");
    let gate = Arc::new(Gate::start_config(&backend, config).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = backend.count();
    for round in 0..2 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let kid = format!("made-up-{round}-{i}");
                status(&gate, &token("eve", RSA1, &kid)).await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 401);
        }
    }
    // One at start, one for the whole flood: the others waited for it or were in the
    // cooldown.
    assert_eq!(provider.fetches(), 2);
    backend.assert_untouched(before);
    // A token of the set still passes, without a fetch.
    assert_eq!(status(&gate, &token("ann", RSA1, "rsa-1")).await, 200);
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotated_under_the_same_kid_is_refetched_once_then_verified() {
    let provider = Provider::start(Answer::keys(json!([jwk("rsa-1", "k")]))).await;
    let backend = Backend::start().await;
    let config = provider_config(&provider, "jwks_min_refetch_seconds = 1");
    let gate = Gate::start_config(&backend, config).await;
    let new = token("fay", RSA2, "k");
    // Signed by a key the provider does not publish yet: refused (the refetch it asks
    // for is within the cooldown of the start).
    assert_eq!(status(&gate, &new).await, 401);
    backend.assert_untouched(0);
    provider.set(Answer::keys(json!([jwk("rsa-2", "k")])));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fetches = provider.fetches();
    assert_eq!(status(&gate, &new).await, 200);
    assert_eq!(provider.fetches(), fetches + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_down_during_a_refresh_keeps_the_last_good_set_and_readiness() {
    let provider = Provider::start(Answer::keys(json!([jwk("rsa-1", "rsa-1")]))).await;
    let backend = Backend::start().await;
    let config = provider_config(&provider, "jwks_min_refetch_seconds = 1");
    let gate = Gate::start_config(&backend, config).await;
    provider.set(Answer {
        status: 500,
        ..Answer::keys(json!([]))
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // An unknown kid asks for a refetch, which fails.
    assert_eq!(status(&gate, &token("gus", RSA2, "rsa-2")).await, 401);
    backend.assert_untouched(0);
    assert_eq!(provider.fetches(), 2);
    assert_eq!(
        metric(&gate, "tokengate_jwks_refresh_total{result=\"error\"}").await,
        "tokengate_jwks_refresh_total{result=\"error\"} 1"
    );
    assert_eq!(status(&gate, &token("ann", RSA1, "rsa-1")).await, 200);
    let ready = get(&format!("http://{}/readyz", gate.admin), &[]).await;
    assert_eq!(ready.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_max_age_is_honoured_but_never_below_30_seconds() {
    let provider = Provider::start(Answer {
        cache_control: Some("public, max-age=1"),
        ..Answer::keys(json!([jwk("rsa-1", "rsa-1")]))
    })
    .await;
    let backend = Backend::start().await;
    let config = provider_config(&provider, "");
    let _gate = Gate::start_config(&backend, config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(provider.fetches(), 1, "max-age=1 made tokengate poll");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_cannot_serve_a_usable_set_at_start_is_one_line_naming_jwks_url() {
    let big = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        "x".repeat(1024 * 1024 + 10)
    );
    let ec_only = json!([{
        "kty": "EC", "crv": "P-256", "kid": "ec",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    }]);
    let cases = [
        (
            "not JSON",
            Answer {
                body: "<html>".into(),
                ..Answer::keys(json!([]))
            },
            "is not a JWK set",
        ),
        (
            "no keys",
            Answer::keys(json!([])),
            "holds no key for the configured algorithms",
        ),
        (
            "EC keys for RS256",
            Answer::keys(ec_only),
            "holds no key for the configured algorithms",
        ),
        (
            "over 1 MiB",
            Answer {
                body: big,
                ..Answer::keys(json!([]))
            },
            "larger than 1048576 bytes",
        ),
        (
            "slow",
            Answer {
                delay: Duration::from_secs(3),
                ..Answer::keys(json!([jwk("rsa-1", "rsa-1")]))
            },
            "no complete answer within 1 s",
        ),
        (
            "404",
            Answer {
                status: 404,
                ..Answer::keys(json!([]))
            },
            "answered 404",
        ),
    ];
    for (what, answer, needle) in cases {
        let provider = Provider::start(answer).await;
        let e = open_error(provider_config(&provider, "jwks_fetch_timeout_seconds = 1")).await;
        assert!(
            e.starts_with("config error: jwt.jwks_url: http://127.0.0.1:"),
            "{what}: {e}"
        );
        assert!(e.contains(needle), "{what}: {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
    }
    // Nobody listening.
    let port = closed_port().await;
    let e = open_error(jwks_config(&format!(
        "jwks_url = \"http://127.0.0.1:{port}/jwks.json\""
    )))
    .await;
    assert!(
        e.contains("jwt.jwks_url") && e.contains("cannot connect"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_fallback_file_a_provider_down_at_start_serves_the_files_keys() {
    let port = closed_port().await;
    let backend = Backend::start().await;
    let config = jwks_config(&format!(
        "jwks_url = \"http://127.0.0.1:{port}/jwks.json\"\njwks_file = \"{{keys}}/jwks.json\""
    ));
    let gate = Gate::start_config(&backend, config).await;
    assert_eq!(status(&gate, &token("hal", RSA1, "rsa-1")).await, 200);
    assert_eq!(
        metric(&gate, "tokengate_jwks_refresh_total{result=\"error\"}").await,
        "tokengate_jwks_refresh_total{result=\"error\"} 1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_gives_the_key_set_and_enforces_the_discovered_issuer() {
    let provider = Provider::start(Answer::keys(json!([jwk("rsa-1", "rsa-1")]))).await;
    let backend = Backend::start().await;
    let config = jwks_config(&format!(
        "oidc_discovery_url = \"{}\"",
        provider.discovery_url()
    ));
    let gate = Gate::start_config(&backend, config).await;
    assert_eq!(provider.discovery_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(provider.fetches(), 1);
    let key = private_key(Algorithm::RS256, RSA1);
    let mut good = claims("ivy");
    good["iss"] = json!("https://idp.test");
    let good = mint_with(Algorithm::RS256, &key, &good, Some("rsa-1"));
    assert_eq!(status(&gate, &good).await, 200);
    let mut other = claims("ivy");
    other["iss"] = json!("https://evil.test");
    let before = backend.count();
    for token in [
        mint_with(Algorithm::RS256, &key, &other, Some("rsa-1")),
        token("ivy", RSA1, "rsa-1"), // no iss at all
    ] {
        assert_eq!(status(&gate, &token).await, 401);
    }
    backend.assert_untouched(before);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_with_another_issuer_than_jwt_issuer_is_one_line() {
    let provider = Provider::start(Answer::keys(json!([jwk("rsa-1", "rsa-1")]))).await;
    *provider.issuer.lock().unwrap() = "https://elsewhere.test".into();
    let e = open_error(jwks_config(&format!(
        "oidc_discovery_url = \"{}\"\nissuer = \"https://idp.test\"",
        provider.discovery_url()
    )))
    .await;
    assert!(
        e.starts_with("config error: jwt.oidc_discovery_url: "),
        "{e}"
    );
    assert!(
        e.contains("\"https://elsewhere.test\" is not jwt.issuer \"https://idp.test\""),
        "{e}"
    );
    assert_eq!(
        provider.fetches(),
        0,
        "the key set of a wrong issuer was fetched"
    );
}

/// A CA and a `localhost` server certificate it signed: (CA PEM, acceptor).
fn test_ca() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_provider_with_a_private_ca_is_trusted_through_jwks_ca_file_only() {
    let (ca_pem, acceptor) = test_ca();
    let provider =
        Provider::start_with(Answer::keys(json!([jwk("rsa-1", "rsa-1")])), Some(acceptor)).await;
    let url = format!("https://localhost:{}/jwks.json", provider.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    // Without the CA file, the webpki roots do not know the test CA: start refused.
    let e = open_error(jwks_config(&format!("jwks_url = \"{url}\""))).await;
    assert!(
        e.starts_with("config error: jwt.jwks_url: https://localhost:"),
        "{e}"
    );
    assert!(e.contains("TLS handshake"), "{e}");
    assert_eq!(provider.fetches(), 0);

    let backend = Backend::start().await;
    let config = jwks_config(&format!(
        "jwks_url = \"{url}\"\njwks_ca_file = \"{}\"",
        ca_file.display()
    ));
    let gate = Gate::start_config(&backend, config).await;
    assert_eq!(provider.fetches(), 1);
    assert_eq!(status(&gate, &token("jo", RSA1, "rsa-1")).await, 200);
}

#[test]
fn key_urls_must_be_https_or_loopback_http() {
    let load = |url: &str| {
        let text = jwks_config(&format!("jwks_url = \"{url}\""))
            .to_string()
            .replace("{backend}", "127.0.0.1:9")
            .replace("{db}", "/tmp/x.db");
        Config::from_toml(&text, std::path::Path::new(".")).map(|_| ())
    };
    assert!(load("https://idp.example/jwks").is_ok());
    assert!(load("http://127.0.0.1:8080/jwks").is_ok());
    assert!(load("http://[::1]:8080/jwks").is_ok());
    assert!(load("http://localhost/jwks").is_ok());
    for bad in [
        "http://idp.example/jwks",
        "ftp://idp.example/jwks",
        "idp.example",
    ] {
        let e = load(bad).unwrap_err();
        assert_eq!(e.key, "jwt.jwks_url", "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_fetches_the_key_set_as_a_start_would() {
    let provider = Provider::start(Answer::keys(json!([
        jwk("rsa-1", "rsa-1"),
        jwk("rsa-2", "rsa-2")
    ])))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start().await;
    let path = provider_config(&provider, "").write(dir.path(), backend.addr);
    let out = tokio::task::spawn_blocking(move || run(&["check-config"], &path))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("jwt: RS256 with a JWK set of 2 key(s)"),
        "{stdout}"
    );
    assert_eq!(provider.fetches(), 1);

    let port = closed_port().await;
    let path = jwks_config(&format!("jwks_url = \"http://127.0.0.1:{port}/jwks.json\""))
        .write(dir.path(), backend.addr);
    let out = tokio::task::spawn_blocking(move || run(&["check-config"], &path))
        .await
        .unwrap();
    assert_one_line_error(
        "check-config",
        &out,
        &[
            "config error: jwt.jwks_url: http://127.0.0.1:",
            "cannot connect",
        ],
    );
}
