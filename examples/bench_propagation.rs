//! The timing half of `bench/propagation.sh`: how long after a revocation is acknowledged
//! by one process does another tokengate refuse the token (SPEC §9)?
//!
//! For each of `--count` revocations:
//!
//! 1. mint a fresh HS256 token (its own user) and register it with `POST /admin/tokens`
//!    on `--register-admin` (the admin listener; 201, the session id is read from the
//!    JSON body's `session.id`);
//! 2. warm it on `--check` (the proxy that must refuse it): GET `--path` until 200, then
//!    `--warm-extra` more GETs, so that a verdict cache, when there is one, holds it;
//! 3. after a random pause of 0..`--jitter-ms` (so that revocations fall at random
//!    moments of the proxies' feed poll), revoke it, by one of two doors:
//!    - `--revoke logout --logout-proxy ADDR`: `POST /logout` with the token on another
//!      proxy; the clock starts when its 204 arrives;
//!    - `--revoke cli --tokengate BIN --config CFG`: `tokengate tokens revoke --session ID`
//!      as a separate process; the clock starts when it has exited 0;
//! 4. GET `--path` on `--check` with the token back-to-back, on one keep-alive
//!    connection (hyper-util's client), until 401; the time from the acknowledgement
//!    to the arrival of that 401 is the sample. A revocation not refused within
//!    `--timeout-ms` counts as a timeout.
//!
//! Prints progress on stderr and one tab-separated result line on stdout:
//! `label n p50_ms p99_ms max_ms mean_ms timeouts stale_200s_total stale_200s_max`
//! (stale 200s: answers that still let the token through after the acknowledgement);
//! `--samples FILE` also writes every sample.
//!
//! ```text
//! cargo run --release --example bench_propagation -- --label pg --count 1000 \
//!   --secret "$SECRET" --admin-token "$ADMIN" --register-admin 127.0.0.1:18211 \
//!   --check 127.0.0.1:18212 --revoke logout --logout-proxy 127.0.0.1:18210
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Door {
    /// POST /logout on another proxy (--logout-proxy).
    Logout,
    /// `tokengate tokens revoke --session ID` (--tokengate, --config).
    Cli,
}

/// Time from an acknowledged revocation to its refusal by another tokengate.
#[derive(Debug, Parser)]
struct Args {
    /// Name of the scenario, first field of the result line.
    #[arg(long)]
    label: String,
    /// How many revocations.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// The HS256 secret the proxies verify with.
    #[arg(long)]
    secret: String,
    /// The admin API token.
    #[arg(long, env = "TOKENGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Admin listener that registers the tokens (POST /admin/tokens).
    #[arg(long)]
    register_admin: SocketAddr,
    /// Public listener of the proxy that must refuse the revoked token.
    #[arg(long)]
    check: SocketAddr,
    /// How the token is revoked.
    #[arg(long, value_enum)]
    revoke: Door,
    /// Public listener of the proxy that answers POST /logout (--revoke logout).
    #[arg(long)]
    logout_proxy: Option<SocketAddr>,
    /// The tokengate binary (--revoke cli).
    #[arg(long)]
    tokengate: Option<PathBuf>,
    /// The config the CLI uses (--revoke cli): the same store as the proxy.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Protected path to GET.
    #[arg(long, default_value = "/api/propagation")]
    path: String,
    /// GETs after the first 200 while warming.
    #[arg(long, default_value_t = 2)]
    warm_extra: usize,
    /// Give up on one revocation after this long.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Wait a random 0..N ms before each revocation, so that revocations fall at random
    /// moments of the proxies' feed poll instead of locking onto its period.
    #[arg(long, default_value_t = 50)]
    jitter_ms: u64,
    /// Also write every sample here: `index ms stale_200s refused`, one per line.
    #[arg(long)]
    samples: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Sample {
    ms: f64,
    stale: usize,
    refused: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.revoke {
        Door::Logout if args.logout_proxy.is_none() => {
            bail!("--revoke logout needs --logout-proxy")
        }
        Door::Cli if args.tokengate.is_none() || args.config.is_none() => {
            bail!("--revoke cli needs --tokengate and --config")
        }
        _ => {}
    }
    let key = EncodingKey::from_secret(args.secret.as_bytes())?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let run = hex::encode(rand::random::<[u8; 4]>());
    let timeout = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();

    let mut samples = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let claims = Claims {
            sub: format!("prop-{run}-{i}"),
            iat: now,
            exp: now + 3600,
            jti: format!("{run}-{i}"),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)?;

        // 1. register
        let (status, body) = send(
            &client,
            Method::POST,
            args.register_admin,
            "/admin/tokens",
            Some(&args.admin_token),
            Bytes::from(token.clone()),
        )
        .await?;
        if status != StatusCode::CREATED {
            bail!(
                "POST /admin/tokens answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let session_id = serde_json::from_slice::<serde_json::Value>(&body)?
            .pointer("/session/id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .context("POST /admin/tokens: no session.id in the answer")?;

        // 2. warm on the checking proxy
        let warm_deadline = Instant::now() + timeout;
        loop {
            let (status, _) = get(&client, args.check, &args.path, &token).await?;
            if status == StatusCode::OK {
                break;
            }
            if Instant::now() > warm_deadline {
                bail!(
                    "a registered token is still refused ({status}) on {} after {timeout:?}",
                    args.check
                );
            }
        }
        for _ in 0..args.warm_extra {
            let (status, _) = get(&client, args.check, &args.path, &token).await?;
            if status != StatusCode::OK {
                bail!("warming: a live token got {status}");
            }
        }

        // A revocation comes at a random moment: without this, each iteration would
        // start a fixed time after the previous refusal, itself just after a feed poll,
        // and every sample would measure the same phase of the poll period.
        if args.jitter_ms > 0 {
            std::thread::sleep(Duration::from_micros(rand::random_range(
                0..args.jitter_ms * 1000,
            )));
        }

        // 3. revoke; `acked` is when the revoking process said it was done
        let acked = match args.revoke {
            Door::Logout => {
                let proxy = args.logout_proxy.expect("checked");
                let (status, body) = send(
                    &client,
                    Method::POST,
                    proxy,
                    "/logout",
                    Some(&token),
                    Bytes::new(),
                )
                .await?;
                let acked = Instant::now();
                if status != StatusCode::NO_CONTENT {
                    bail!(
                        "POST /logout answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                acked
            }
            Door::Cli => {
                let out = std::process::Command::new(args.tokengate.as_ref().expect("checked"))
                    .arg("tokens")
                    .arg("revoke")
                    .arg("--session")
                    .arg(&session_id)
                    .arg("--config")
                    .arg(args.config.as_ref().expect("checked"))
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .context("run tokengate tokens revoke")?;
                let acked = Instant::now();
                if !out.status.success() {
                    bail!(
                        "tokengate tokens revoke --session {session_id}: {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                acked
            }
        };

        // 4. back-to-back GETs on the other proxy until 401
        let mut stale = 0;
        let sample = loop {
            let (status, _) = get(&client, args.check, &args.path, &token).await?;
            let elapsed = acked.elapsed();
            match status {
                StatusCode::UNAUTHORIZED => {
                    break Sample {
                        ms: elapsed.as_secs_f64() * 1e3,
                        stale,
                        refused: true,
                    };
                }
                StatusCode::OK => stale += 1,
                other => bail!("while waiting for the refusal: {other}"),
            }
            if elapsed > timeout {
                break Sample {
                    ms: elapsed.as_secs_f64() * 1e3,
                    stale,
                    refused: false,
                };
            }
        };
        samples.push(sample);
        if (i + 1) % 100 == 0 || i + 1 == args.count {
            eprintln!(
                "bench_propagation: {}: {}/{} revocations ({:.1} s)",
                args.label,
                i + 1,
                args.count,
                started.elapsed().as_secs_f64()
            );
        }
    }

    if let Some(path) = &args.samples {
        let mut text = String::new();
        for (i, s) in samples.iter().enumerate() {
            text.push_str(&format!("{i} {:.3} {} {}\n", s.ms, s.stale, s.refused));
        }
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    }
    let mut ms: Vec<f64> = samples.iter().map(|s| s.ms).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let timeouts = samples.iter().filter(|s| !s.refused).count();
    let stale_total: usize = samples.iter().map(|s| s.stale).sum();
    let stale_max = samples.iter().map(|s| s.stale).max().unwrap_or(0);
    println!(
        "{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\t{}",
        args.label,
        samples.len(),
        pct(0.50),
        pct(0.99),
        ms[ms.len() - 1],
        mean,
        timeouts,
        stale_total,
        stale_max
    );
    Ok(())
}

async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> anyhow::Result<(StatusCode, Bytes)> {
    send(client, Method::GET, addr, path, Some(token), Bytes::new()).await
}

async fn send(
    client: &HttpClient,
    method: Method,
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = bearer {
        builder = builder.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        builder = builder.header(CONTENT_TYPE, "text/plain");
    }
    let response = client
        .request(builder.body(Full::new(body))?)
        .await
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    let status = response.status();
    // Read the whole body, so that the connection goes back to the pool.
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
