//! The soak driver of `bench/soak.sh`: a backend that issues tokens, and a load that
//! mixes logins, authenticated requests, logouts and CLI revocations against a running
//! tokengate for minutes, checking the one promise that matters on every request: a
//! token whose revocation was acknowledged is never served again.
//!
//! ```text
//! soak backend HOST:PORT SECRET
//! soak drive --proxy HOST:PORT --pid PID --tokengate BIN --config FILE
//!            [--seconds 600] [--rate N | --rate-share 0.8] [--report-seconds 30]
//!            [--staleness-ms 100]
//! soak drive --proxy HOST:PORT --plain PATH [--bearer TOKEN] --rate N [--seconds S]
//! ```
//!
//! With `--plain`, the driver is only an open-loop load at a fixed rate: every tick a
//! GET of PATH (with the bearer token, if given) that must answer 200, and latency
//! quantiles (what `bench/hop.sh` uses for the latency a proxy adds at a given rate,
//! which a closed loop such as wrk's cannot show). Latency counts from the moment a tick
//! is handed to its connection's queue: a request waiting behind a slow answer counts
//! that wait (no coordinated omission); ticks are dealt every millisecond.
//!
//! `drive` first measures the proxy's maximum rate (closed loop, 64 connections, 10 s
//! of authenticated GETs), then runs open loop at `--rate-share` of it (or at `--rate`).
//! Each request tick is one of: a login (1 in 100) whose captured token joins the live
//! set; a logout (1 in 100) of a live token, which moves it to the revoked set when
//! answered 204; a request with a revoked token (1 in 20), which must be refused with
//! 401; otherwise a GET with a live token, which must pass with 200 (or 401 if that
//! token's revocation started meanwhile). Logins and logouts balance, so the live set,
//! and with it the proxy's verdict cache, stays the same size: RSS must stay flat.
//! Every 5 s a CLI revocation runs: three fresh logins of a user used for nothing else,
//! then `tokengate tokens revoke --user` in a child process; when it exits 0 the three
//! tokens are revoked. A logout is checked from its 204 on; a CLI revocation from
//! `--staleness-ms` after its exit (the verdict cache's bound for revocations made by
//! another process, SPEC §9).
//!
//! Every `--report-seconds` it prints one line: requests and rate in the interval,
//! p50/p99 latency, unexpected answers, violations, the proxy's RSS and open fds (from
//! /proc/PID). At the end, a summary; the exit code is 1 when there was any error or
//! violation, or when the RSS of the last report is more than 20% above the first
//! after warm-up.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Connections the load holds to the proxy, as wrk -c64 does.
const CONNECTIONS: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.first().map(String::as_str) {
        Some("backend") if args.len() == 3 => {
            runtime.block_on(backend(&args[1], args[2].clone()));
            0
        }
        Some("drive") => match Drive::parse(&args[1..]) {
            Ok(drive) => runtime.block_on(drive.run()),
            Err(e) => {
                eprintln!("soak: {e}");
                2
            }
        },
        _ => {
            eprintln!("soak: usage: soak backend HOST:PORT SECRET | soak drive --proxy HOST:PORT --pid PID --tokengate BIN --config FILE [...]");
            2
        }
    };
    std::process::exit(code);
}

// --- the backend ------------------------------------------------------------------------

/// Serves `POST /login` (an HS256 token for `{"user": ...}`, valid an hour) and answers
/// 200 to everything else.
async fn backend(addr: &str, secret: String) {
    let addr: SocketAddr = addr.parse().expect("soak backend: HOST:PORT");
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("soak backend: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    let key = Arc::new(EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let key = key.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(key.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    key: Arc<EncodingKey>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let login = request.method() == Method::POST && request.uri().path() == "/login";
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !login {
        return Ok(Response::new(Full::new(Bytes::from_static(
            b"{\"ok\":true}\n",
        ))));
    }
    let user = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["user"].as_str().map(String::from))
        .unwrap_or_else(|| "nobody".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": user, "iat": now, "exp": now + 3600,
        "jti": format!("{:016x}", rand::random::<u64>()),
    });
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let body = serde_json::json!({ "access_token": token }).to_string();
    Ok(Response::new(Full::new(Bytes::from(body))))
}

// --- the driver -------------------------------------------------------------------------

struct Drive {
    proxy: SocketAddr,
    pid: u32,
    tokengate: String,
    config: String,
    seconds: u64,
    rate: Option<u64>,
    rate_share: f64,
    report: Duration,
    staleness: Duration,
    plain: Option<Plain>,
}

/// `--plain`: one GET, the same every tick.
#[derive(Clone)]
struct Plain {
    path: String,
    bearer: Option<String>,
}

impl Drive {
    fn parse(args: &[String]) -> Result<Drive, String> {
        let mut drive = Drive {
            proxy: SocketAddr::from(([0, 0, 0, 0], 0)),
            pid: 0,
            tokengate: String::new(),
            config: String::new(),
            seconds: 600,
            rate: None,
            rate_share: 0.8,
            report: Duration::from_secs(30),
            staleness: Duration::from_millis(100),
            plain: None,
        };
        let mut bearer = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
            match flag.as_str() {
                "--proxy" => {
                    drive.proxy = value
                        .parse()
                        .map_err(|e| format!("{flag} HOST:PORT: {e}"))?
                }
                "--pid" => drive.pid = number()? as u32,
                "--tokengate" => drive.tokengate = value.clone(),
                "--config" => drive.config = value.clone(),
                "--seconds" => drive.seconds = number()?,
                "--rate" => drive.rate = Some(number()?).filter(|&r| r > 0),
                "--rate-share" => {
                    drive.rate_share = value.parse().map_err(|e| format!("{flag}: {e}"))?
                }
                "--report-seconds" => drive.report = Duration::from_secs(number()?.max(1)),
                "--staleness-ms" => drive.staleness = Duration::from_millis(number()?),
                "--plain" => {
                    drive.plain = Some(Plain {
                        path: value.clone(),
                        bearer: None,
                    })
                }
                "--bearer" => bearer = Some(value.clone()),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if let Some(plain) = &mut drive.plain {
            plain.bearer = bearer;
            if drive.proxy.port() == 0 || drive.rate.is_none() {
                return Err("--plain needs --proxy and --rate".into());
            }
            if drive.report > Duration::from_secs(drive.seconds) {
                drive.report = Duration::from_secs(drive.seconds.max(1));
            }
        } else if drive.proxy.port() == 0 || drive.pid == 0 || drive.tokengate.is_empty() {
            return Err("--proxy, --pid, --tokengate and --config are required".into());
        }
        Ok(drive)
    }

    async fn run(self) -> i32 {
        let addr = self.proxy;
        if let (Some(plain), Some(rate)) = (&self.plain, self.rate) {
            let state = Arc::new(State {
                plain: Some(plain.clone()),
                ..State::default()
            });
            return drive_open_loop(addr, &self, &state, rate).await;
        }
        let state = Arc::new(State::default());
        let mut conn = Conn::new(addr);
        for i in 0..200 {
            match login(&mut conn, &format!("u{i}")).await {
                Ok(token) => state.live.lock().unwrap().push(token),
                Err(e) => {
                    eprintln!("soak: error: cannot log in through {addr}: {e}");
                    return 1;
                }
            }
        }
        let rate = match self.rate {
            Some(rate) => rate,
            None => {
                let max = measure_max(addr, &state).await;
                let rate = (max as f64 * self.rate_share) as u64;
                println!(
                    "soak: measured maximum {max} req/s; driving {rate} req/s ({:.0}%) for {} s",
                    self.rate_share * 100.0,
                    self.seconds
                );
                rate.max(1)
            }
        };
        let driver = Arc::new(self);
        let cli = tokio::spawn(cli_revocations(addr, driver.clone(), state.clone()));
        let code = drive_open_loop(addr, &driver, &state, rate).await;
        cli.abort();
        code
    }
}

/// What the load knows, shared by its tasks.
#[derive(Default)]
struct State {
    /// `--plain`: every tick is this GET.
    plain: Option<Plain>,
    live: Mutex<Vec<String>>,
    /// Tokens taken out of the live set to be revoked: a request that picked one just
    /// before may be refused.
    retired: Mutex<HashSet<String>>,
    /// Revoked tokens and the instant from which a request with them must be refused.
    revoked: Mutex<VecDeque<(String, Instant)>>,
    counts: Counts,
    latencies: Mutex<Vec<u32>>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    logins: AtomicU64,
    logouts: AtomicU64,
    cli_revocations: AtomicU64,
    revoked_refused: AtomicU64,
    errors: AtomicU64,
    violations: AtomicU64,
    late: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl State {
    fn pick_live(&self) -> Option<String> {
        let live = self.live.lock().unwrap();
        (!live.is_empty()).then(|| live[rand::random_range(0..live.len())].clone())
    }

    fn take_live(&self) -> Option<String> {
        let mut live = self.live.lock().unwrap();
        // Keep a floor of live tokens so the mix stays a mix.
        let token = (live.len() > 100).then(|| {
            let i = rand::random_range(0..live.len());
            live.swap_remove(i)
        })?;
        self.retired.lock().unwrap().insert(token.clone());
        Some(token)
    }

    /// Takes `tokens` out of the live set, to be revoked.
    fn retire(&self, tokens: &[String]) {
        self.live.lock().unwrap().retain(|t| !tokens.contains(t));
        self.retired.lock().unwrap().extend(tokens.iter().cloned());
    }

    fn revoke(&self, token: String, from: Instant) {
        let mut revoked = self.revoked.lock().unwrap();
        revoked.push_back((token, from));
        if revoked.len() > 10_000 {
            revoked.pop_front();
        }
    }

    /// A revoked token whose refusal is due by now (one picked at random; none when
    /// that one is not due yet).
    fn pick_revoked(&self) -> Option<String> {
        let revoked = self.revoked.lock().unwrap();
        if revoked.is_empty() {
            return None;
        }
        let (token, from) = &revoked[rand::random_range(0..revoked.len())];
        (*from <= Instant::now()).then(|| token.clone())
    }

    fn error(&self, what: &str) {
        if self.counts.errors.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("soak: unexpected: {what}");
        }
    }
}

/// One keep-alive HTTP/1.1 connection to the proxy, opened again when it breaks.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "soak.example");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Full::new(body)).unwrap();
        let exchange = async {
            let sender = match &mut self.sender {
                Some(sender) if !sender.is_closed() => sender,
                _ => self.sender.insert(self.connect().await?),
            };
            sender.ready().await.map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        let result = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer in 10 s".into()));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

async fn login(conn: &mut Conn, user: &str) -> Result<String, String> {
    let body = Bytes::from(serde_json::json!({ "user": user }).to_string());
    let (status, body) = conn.send(Method::POST, "/login", None, body).await?;
    if status != StatusCode::OK {
        return Err(format!("login answered {status}"));
    }
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(String::from))
        .ok_or_else(|| "login answer without access_token".into())
}

/// Closed loop on the load's connections, authenticated GETs for 10 s: requests per
/// second.
async fn measure_max(addr: SocketAddr, state: &Arc<State>) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (state, done) = (state.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            while Instant::now() < until {
                let token = state.pick_live().unwrap();
                if let Ok((StatusCode::OK, _)) = conn
                    .send(Method::GET, "/api/max", Some(&token), Bytes::new())
                    .await
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) / 10
}

/// One request tick of the mix (see the module doc).
/// Latency counts from `due`, when the tick was handed to this connection, so that a
/// tick that waited for a free connection shows it.
async fn tick(conn: &mut Conn, state: &State, n: u64, due: Instant) {
    let slot = n % 100;
    if let Some(plain) = &state.plain {
        let token = plain.bearer.as_deref();
        match conn
            .send(Method::GET, &plain.path, token, Bytes::new())
            .await
        {
            Ok((StatusCode::OK, _)) => {}
            Ok((status, _)) => state.error(&format!("{} answered {status}", plain.path)),
            Err(e) => state.error(&format!("request: {e}")),
        }
    } else if slot == 0 {
        match login(conn, &format!("u{}", n % 1000)).await {
            Ok(token) => {
                count(&state.counts.logins);
                state.live.lock().unwrap().push(token);
            }
            Err(e) => state.error(&format!("login: {e}")),
        }
    } else if slot == 1 {
        let Some(token) = state.take_live() else {
            return;
        };
        match conn
            .send(Method::POST, "/logout", Some(&token), Bytes::new())
            .await
        {
            Ok((StatusCode::NO_CONTENT, _)) => {
                count(&state.counts.logouts);
                state.revoke(token, Instant::now());
            }
            Ok((status, _)) => state.error(&format!("logout answered {status}")),
            Err(e) => state.error(&format!("logout: {e}")),
        }
    } else if slot % 20 == 2 {
        let Some(token) = state.pick_revoked() else {
            return;
        };
        match conn
            .send(Method::GET, "/api/revoked", Some(&token), Bytes::new())
            .await
        {
            Ok((StatusCode::UNAUTHORIZED, _)) => count(&state.counts.revoked_refused),
            Ok((StatusCode::OK, _)) => {
                count(&state.counts.violations);
                eprintln!("soak: VIOLATION: a revoked token was served");
            }
            Ok((status, _)) => state.error(&format!("revoked token answered {status}")),
            Err(e) => state.error(&format!("request with a revoked token: {e}")),
        }
    } else {
        let Some(token) = state.pick_live() else {
            return;
        };
        match conn
            .send(Method::GET, "/api/soak", Some(&token), Bytes::new())
            .await
        {
            Ok((StatusCode::OK, _)) => {}
            // Its revocation started while this request was on its way.
            Ok((StatusCode::UNAUTHORIZED, _)) if state.retired.lock().unwrap().contains(&token) => {
            }
            Ok((status, _)) => state.error(&format!("live token answered {status}")),
            Err(e) => state.error(&format!("request: {e}")),
        }
    }
    count(&state.counts.requests);
    let micros = due.elapsed().as_micros().min(u32::MAX as u128) as u32;
    state.latencies.lock().unwrap().push(micros);
}

/// Every 5 s: three logins of a user nobody else uses, then `tokengate tokens revoke
/// --user` as a child process; its exit 0 revokes the three.
async fn cli_revocations(addr: SocketAddr, drive: Arc<Drive>, state: Arc<State>) {
    let mut conn = Conn::new(addr);
    for k in 0.. {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let user = format!("cli{k}");
        let mut tokens = Vec::new();
        for _ in 0..3 {
            match login(&mut conn, &user).await {
                Ok(token) => tokens.push(token),
                Err(e) => state.error(&format!("login of {user}: {e}")),
            }
        }
        // Used by the load for a while, so that their verdicts are cached.
        state.live.lock().unwrap().extend(tokens.iter().cloned());
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Out of the live set first: from here on the load does not expect a 200.
        state.retire(&tokens);
        let mut command = std::process::Command::new(&drive.tokengate);
        command.args([
            "tokens",
            "revoke",
            "--config",
            &drive.config,
            "--user",
            &user,
        ]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the CLI's waiting thread");
        match output {
            Ok(out) if out.status.success() => {
                count(&state.counts.cli_revocations);
                let from = Instant::now() + drive.staleness;
                for token in tokens {
                    state.revoke(token, from);
                }
            }
            Ok(out) => state.error(&format!(
                "tokens revoke --user {user}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => state.error(&format!("tokens revoke: {e}")),
        }
    }
}

/// Ticks at `rate` per second for `drive.seconds`, reporting as it goes. The schedule
/// does not wait for answers (open loop): ticks are dealt round-robin to the load's
/// connections, and one that finds its connection's queue full (64) is counted late and
/// dropped.
async fn drive_open_loop(addr: SocketAddr, drive: &Drive, state: &Arc<State>, rate: u64) -> i32 {
    // One queue per connection, dealt round-robin.
    let mut queues = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (queue, mut ticks) = mpsc::channel::<(u64, Instant)>(64);
        queues.push(queue);
        let state = state.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            while let Some((n, due)) = ticks.recv().await {
                tick(&mut conn, &state, n, due).await;
            }
        }));
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(drive.seconds);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next_report = start + drive.report;
    let mut last_requests = 0;
    let mut rss_samples = Vec::new();
    println!(
        "  time   requests    req/s   p50 ms   p99 ms p99.9 ms  errors  violations  RSS MiB  fds"
    );
    let mut n = 0u64;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let due = ((now - start).as_secs_f64() / period.as_secs_f64()) as u64;
        while n < due {
            // Latency counts from here: the moment the tick is handed to its connection,
            // so waiting behind a slow answer on that connection counts, but the timer's
            // millisecond granularity (ticks are dealt in 1 ms batches) does not.
            if queues[n as usize % CONNECTIONS].try_send((n, now)).is_err() {
                count(&state.counts.late);
            }
            n += 1;
        }
        if now >= next_report || now >= end {
            let requests = state.counts.requests.load(Ordering::Relaxed);
            let mut latencies = std::mem::take(&mut *state.latencies.lock().unwrap());
            latencies.sort_unstable();
            let quantile = |q: f64| {
                let i =
                    ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
                latencies.get(i).map_or(0.0, |&us| us as f64 / 1000.0)
            };
            let (rss, fds) = proc_usage(drive.pid);
            rss_samples.push(rss);
            println!(
                "{:>5.0}s {:>10} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>11} {:>8.1} {:>4}",
                (now - start).as_secs_f64(),
                requests,
                (requests - last_requests) as f64 / drive.report.as_secs_f64(),
                quantile(0.5),
                quantile(0.99),
                quantile(0.999),
                state.counts.errors.load(Ordering::Relaxed),
                state.counts.violations.load(Ordering::Relaxed),
                rss as f64 / 1024.0,
                fds,
            );
            last_requests = requests;
            next_report += drive.report;
        }
        if now >= end {
            break;
        }
    }
    // Let the queued ticks answer.
    drop(queues);
    for worker in workers {
        let _ = tokio::time::timeout(Duration::from_secs(15), worker).await;
    }
    summary(state, &rss_samples)
}

/// The proxy's resident memory (KiB) and open file descriptors.
fn proc_usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn summary(state: &State, rss: &[u64]) -> i32 {
    let c = &state.counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak: {} requests: {} logins, {} logouts, {} CLI revocations (3 tokens each), {} requests with revoked tokens refused",
        get(&c.requests),
        get(&c.logins),
        get(&c.logouts),
        get(&c.cli_revocations),
        get(&c.revoked_refused)
    );
    println!(
        "soak: errors {}, violations (revoked token served) {}, ticks dropped as late {}",
        get(&c.errors),
        get(&c.violations),
        get(&c.late)
    );
    // Flat RSS: the last sample against the first after warm-up (the second).
    let growth = match rss {
        [_, warm, .., last] if *warm > 0 => Some(*last as f64 / *warm as f64),
        _ => None,
    };
    if let Some(growth) = growth {
        println!(
            "soak: RSS {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1}%)",
            rss[1] as f64 / 1024.0,
            rss[rss.len() - 1] as f64 / 1024.0,
            (growth - 1.0) * 100.0
        );
    }
    let grew = growth.is_some_and(|g| g > 1.2);
    if get(&c.errors) > 0 || get(&c.violations) > 0 || grew {
        println!("soak: FAILED");
        1
    } else {
        println!("soak: OK");
        0
    }
}
