//! Changing the config of a running tokengate (SPEC §11): the real binary as a child
//! process, SIGHUP (or `server.watch_config`), requests flowing over a connection that
//! was opened before the reload.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn hangup(served: &Served) {
    let pid = served.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits (at most 10 s) until `n` log lines mention `needle`; returns the last.
async fn nth_log_line(served: &Served, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = served.log_lines(needle);
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {n}th line with {needle:?}: {:#?}",
            served.log_lines("")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One GET over an open HTTP/1.1 keep-alive connection; the status.
async fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The echo backend's answers are small: read until the head and a body of the
    // announced length are in.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

fn write(path: &Path, config: &GateConfig, backend: &Backend, dir: &Path) {
    let written = config.write(dir, backend.addr);
    assert_eq!(written, path);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_good_config_serves_the_new_routes_on_the_old_connections() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = GateConfig::default().write(dir.path(), backend.addr);
    let served = Served::start(&path);
    let mut kept = TcpStream::connect(served.addr).await.unwrap();
    assert_eq!(get_on(&mut kept, "/public/a").await, 200);
    assert_eq!(get_on(&mut kept, "/open/a").await, 401);

    let config =
        GateConfig::default().set("routes", r#"public = ["/healthz", "/public/*", "/open/*"]"#);
    write(&path, &config, &backend, dir.path());
    hangup(&served);
    let line = nth_log_line(&served, "config reloaded", 1).await;
    assert!(line.contains("SIGHUP"), "{line}");

    // The connection opened before the reload is still served, under the new routes.
    assert_eq!(get_on(&mut kept, "/open/a").await, 200);
    assert_eq!(get(&served.url("/open/b"), &[]).await.status, 200);
    let metrics = get(&format!("http://{}/metrics", served.admin), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("tokengate_config_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_bad_config_keeps_the_old_one_and_says_why_in_one_line() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = GateConfig::default().write(dir.path(), backend.addr);
    let served = Served::start(&path);
    let token = {
        let reply = send(
            "POST",
            &served.url("/login"),
            &[("content-type", "application/json")],
            bytes::Bytes::from_static(br#"{"user":"kim"}"#),
        )
        .await;
        assert_eq!(reply.status, 200);
        reply.json()["access_token"].as_str().unwrap().to_string()
    };
    for (bad, needle) in [
        (
            "[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"short\"\n",
            "config error: jwt.secret: the HMAC secret is 5 bytes",
        ),
        ("this is not toml", "config error:"),
    ] {
        let text = std::fs::read_to_string(&path).unwrap();
        let broken = if bad.starts_with("[jwt]") {
            GateConfig::parse(&text).replace_sections(bad).to_string()
        } else {
            bad.to_string()
        };
        std::fs::write(&path, &broken).unwrap();
        let n = served.log_lines("config reload refused").len() + 1;
        hangup(&served);
        let line = nth_log_line(&served, "config reload refused", n).await;
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        let error = entry["error"].as_str().unwrap();
        assert!(error.starts_with(needle), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
        // The old config, keys included, still rules.
        assert_eq!(get_with(&served.url("/api/x"), &token).await.status, 200);
        let before = backend.count();
        assert_eq!(get(&served.url("/api/x"), &[]).await.status, 401);
        backend.assert_untouched(before);
        std::fs::write(&path, text).unwrap();
    }
    let metrics = get(&format!("http://{}/metrics", served.admin), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("tokengate_config_reloads_total{result=\"error\"} 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_only_change_is_named_and_keeps_its_value() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = GateConfig::default().write(dir.path(), backend.addr);
    let served = Served::start(&path);
    let config = GateConfig::default()
        .set("server", "listen = \"127.0.0.1:1\"")
        .set("routes", r#"public = ["/healthz", "/public/*", "/open/*"]"#);
    write(&path, &config, &backend, dir.path());
    hangup(&served);
    let line = nth_log_line(&served, "need a restart", 1).await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["keys"], "server.listen", "{line}");
    // Still on the old address; the rest of the new config applies.
    assert_eq!(get(&served.url("/open/x"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_file_is_picked_up_by_watch_config_without_a_signal() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = GateConfig::default()
        .set("server", "watch_config = true")
        .replace_sections(&format!(
            "[jwt]\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\nleeway_seconds = 5\n",
            secret.display()
        ));
    let path = config.write(dir.path(), backend.addr);
    let served = Served::start(&path);
    let old = mint(&claims("lee"));
    let new = mint_hs256(SECRET_B, &claims("lee"));
    tokengate_tokens_add(&path, &old);
    assert_eq!(get_with(&served.url("/api/x"), &old).await.status, 200);

    // The secret file is replaced (as a Kubernetes Secret update would): no SIGHUP.
    std::fs::write(&secret, SECRET_B).unwrap();
    let line = nth_log_line(&served, "config reloaded", 1).await;
    assert!(line.contains("file changed"), "{line}");
    tokengate_tokens_add(&path, &new);
    assert_eq!(get_with(&served.url("/api/x"), &new).await.status, 200);
    let before = backend.count();
    assert_eq!(get_with(&served.url("/api/x"), &old).await.status, 401);
    backend.assert_untouched(before);
}

/// A second HMAC secret.
const SECRET_B: &str = "rotated-secret-0123456789abcdef012345";

fn mint_hs256(secret: &str, claims: &serde_json::Value) -> String {
    mint_with(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        claims,
        None,
    )
}

/// `tokengate tokens add` into the allowlist of the config at `path`.
fn tokengate_tokens_add(path: &Path, token: &str) {
    let out = run(&["tokens", "add", "--token", token], path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
