//! Forward-auth (SPEC §13): tokengate as the authorization service of an ingress.
//!
//! First each header convention against tokengate directly (Traefik's
//! `X-Forwarded-Method`/`-Uri`, nginx's `X-Original-Method`/`-URI`, Envoy's path under
//! the route): tokengate answers, never forwards. Then Debian's nginx running the
//! shipped `deploy/forward-auth/nginx.conf` in front of a real backend, with tokengate
//! as its `auth_request` service: a revoked token is refused through nginx and the
//! backend sees nothing. Without nginx on the machine that test says so and passes,
//! unless `TOKENGATE_REQUIRE_NGINX=1` (set by `.ci/run`, which installs nginx).

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

const ROUTE: &str = "/_tokengate/auth";

fn config() -> GateConfig {
    GateConfig::default()
        .set("routes", &format!("forward_auth = \"{ROUTE}\""))
        .add("[[rules]]\npath = \"/admin/*\"\nclaims = { role = \"admin\" }")
}

/// Asks tokengate about `method path` in one of the three conventions.
async fn ask_about(
    gate: &Gate,
    convention: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let url = match convention {
        "traefik" => {
            headers.push(("x-forwarded-method", method));
            headers.push(("x-forwarded-uri", path));
            gate.url(ROUTE)
        }
        "nginx" => {
            headers.push(("x-original-method", method));
            headers.push(("x-original-uri", path));
            gate.url(ROUTE)
        }
        "envoy" => gate.url(&format!("{ROUTE}{path}")),
        other => panic!("{other}"),
    };
    let verb = if convention == "envoy" { method } else { "GET" };
    send(verb, &url, &headers, "").await
}

#[tokio::test]
async fn each_convention_gets_the_identity_in_the_response_and_nothing_is_forwarded() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, config()).await;
    let token = login(&gate, "alice").await;
    let before = backend.count();
    for convention in ["traefik", "nginx", "envoy"] {
        let r = ask_about(&gate, convention, "POST", "/orders/7?x=1", Some(&token)).await;
        assert_eq!(r.status, 200, "{convention}: {:?}", r.body);
        assert_eq!(
            r.header("x-user-id").as_deref(),
            Some("alice"),
            "{convention}"
        );
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    }
    backend.assert_untouched_because(before, "forward-auth answers");
}

#[tokio::test]
async fn each_convention_refuses_like_the_proxy_would() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, config()).await;
    let user = gate.admit_claims("dave", json!({"role": "user"})).await;
    let admin = gate.admit_claims("root", json!({"role": "admin"})).await;
    let before = backend.count();
    for convention in ["traefik", "nginx", "envoy"] {
        let r = ask_about(&gate, convention, "GET", "/api/x", None).await;
        assert_refusal(&r, 401);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"tokengate\"")
        );
        let r = ask_about(&gate, convention, "GET", "/api/x", Some("not-a-jwt")).await;
        assert_refusal(&r, 401);
        // [[rules]] apply to the original request.
        let r = ask_about(&gate, convention, "DELETE", "/admin/users", Some(&user)).await;
        assert_refusal(&r, 403);
        assert_eq!(r.json()["error"], "insufficient_scope");
        let r = ask_about(&gate, convention, "DELETE", "/admin/users", Some(&admin)).await;
        assert_eq!(r.status, 200, "{convention}");
        assert!(
            r.header("x-user-id").is_none() || r.header("x-user-id").as_deref() == Some("root")
        );
        // Public and captured routes: allowed, no identity.
        for (method, path) in [("GET", "/public/page"), ("POST", "/login")] {
            let r = ask_about(&gate, convention, method, path, None).await;
            assert_eq!(r.status, 200, "{convention} {method} {path}");
            assert!(r.header("x-user-id").is_none());
        }
    }
    // A dot-segment in the original URI (the ingress passes it raw).
    let r = ask_about(&gate, "nginx", "GET", "/public/../admin/x", Some(&user)).await;
    assert_refusal(&r, 400);
    let r = send(
        "GET",
        &gate.url(ROUTE),
        &[("x-original-uri", "/a"), ("x-original-uri", "/b")],
        "",
    )
    .await;
    assert_refusal(&r, 400);
    backend.assert_untouched(before);
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_forward_auth() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, config()).await;
    let token = login(&gate, "alice").await;
    let r = ask_about(&gate, "traefik", "GET", "/api/x", Some(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(post_with(&gate.url("/logout"), &token).await.status, 204);
    let r = ask_about(&gate, "traefik", "GET", "/api/x", Some(&token)).await;
    assert_refusal(&r, 401);
}

/// Debian's nginx running a config file, stopped when dropped.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (a SIGKILL would leave them
    /// running, holding the port); SIGKILL only if it does not go.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// nginx with the shipped forward-auth example, pointed at `gate` and `backend`;
    /// `None` when nginx is not installed (and not required).
    async fn start(gate: &Gate, backend: &Backend) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(binary) = binary else {
            assert!(
                std::env::var("TOKENGATE_REQUIRE_NGINX").as_deref() != Ok("1"),
                "nginx is required (TOKENGATE_REQUIRE_NGINX=1) but not installed"
            );
            eprintln!("nginx is not installed: the nginx forward-auth test is skipped");
            return None;
        };
        let example = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/forward-auth/nginx.conf"),
        )
        .unwrap();
        let port = closed_port().await;
        let conf = example
            .replace("127.0.0.1:3000", &backend.addr.to_string())
            .replace("127.0.0.1:8080", &gate.addr.to_string())
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        assert_ne!(
            conf, example,
            "the example names the addresses the test replaces"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let globals = format!("daemon off; pid {}/nginx.pid;", dir.path().display());
        let child = Command::new(binary)
            .args(["-e", "stderr", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", &globals])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited at start: {status}");
            }
            assert!(std::time::Instant::now() < deadline, "nginx did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(nginx)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front_refuses_a_revoked_token() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, config()).await;
    let Some(nginx) = Nginx::start(&gate, &backend).await else {
        return;
    };
    let token = gate.admit_claims("alice", json!({})).await;
    let bearer = format!("Bearer {token}");

    // No token: nginx answers tokengate's 401, with its challenge; nothing forwarded.
    let before = backend.count();
    let r = get(&nginx.url("/api/orders"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"tokengate\"")
    );
    backend.assert_untouched(before);

    // A live token: forwarded by nginx with tokengate's identity, never the client's.
    let r = get(
        &nginx.url("/api/orders?page=2"),
        &[("authorization", &bearer), ("x-user-id", "admin")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = backend.last();
    assert_eq!(seen.uri, "/api/orders?page=2");
    assert_eq!(seen.all("x-user-id"), ["alice"]);

    // A public route: forwarded without identity, and without the client's copy.
    let r = get(&nginx.url("/public/page"), &[("x-user-id", "admin")]).await;
    assert_eq!(r.status, 200);
    assert!(backend.last().all("x-user-id").is_empty());

    // [[rules]] through nginx: 403 with the challenge.
    let before = backend.count();
    let r = get(&nginx.url("/admin/users"), &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
    backend.assert_untouched(before);

    // Logout through nginx (proxied to tokengate), then the same token is refused.
    let r = send(
        "POST",
        &nginx.url("/logout"),
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    let before = backend.count();
    let r = get(&nginx.url("/api/orders"), &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));
    backend.assert_untouched_because(before, "a revoked token through nginx");
}
