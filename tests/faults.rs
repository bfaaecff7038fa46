//! Fault survival: the real `tokengate` binary, run as a child process, under the
//! failures an operator meets (SPEC §5 "store unreachable (fail closed)", §7 "a
//! revocation is on disk before it is answered, and survives a crash").
//!
//! - **kill -9** during a stream of logins and logouts: after a restart on the same
//!   database, every acknowledged logout (204) is still a 401, and every acknowledged
//!   capture (200) whose logout was never attempted still passes.
//! - **Broken stores**, each at start (non-zero exit, one clear line on stderr, no panic)
//!   and while running (a 503 with `Retry-After`, never a forward, never a 2xx for a
//!   revocation that was not stored): an unreadable file, a read-only directory, a
//!   corrupt file, a full disk.
//! - **A CLI revocation racing 200 requests**: nothing that starts after
//!   `tokengate tokens revoke --user` has returned may pass: with the verdict cache off,
//!   from the very next request; with it on, once `cache.max_staleness_ms` has passed
//!   (SPEC §9), even though every token is warm in the cache.
//!
//! The tests run as root in CI containers, where `chmod` does not bite: the unreadable
//! file case then runs the binary as an unprivileged uid, and the read-only directory
//! uses a read-only bind mount or `chattr +i`. A case that cannot be set up says so with
//! an `eprintln!` ("SKIPPED: ...") instead of passing silently.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

/// The uid (and gid) the unreadable-file case runs the binary as.
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// A counter from the `/metrics` of the admin listener at `admin` (0 when the series
/// does not exist yet).
async fn metric(client: &HttpClient, admin: SocketAddr, series: &str) -> u64 {
    let url = format!("http://{admin}/metrics");
    let r = request(client, "GET", &url, None, "").await.unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request; a transport failure (refused, reset, timeout) is an `Err`, not a panic.
async fn request(
    client: &HttpClient,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> Result<Reply, String> {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let work = async {
        let response = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Logs `user` in through the proxy; the token when the backend answered 200.
async fn try_login(client: &HttpClient, served: &Served, user: &str) -> Result<String, String> {
    let body = json!({ "user": user }).to_string();
    let r = request(client, "POST", &served.url("/login"), None, &body).await?;
    if r.status != 200 {
        return Err(format!("login answered {}", r.status));
    }
    Ok(r.json()["access_token"].as_str().unwrap().to_string())
}

async fn status_of(client: &HttpClient, served: &Served, token: &str) -> u16 {
    request(client, "GET", &served.url("/api"), Some(token), "")
        .await
        .unwrap()
        .status
        .as_u16()
}

// ---------------------------------------------------------------------------------------
// Guards
// ---------------------------------------------------------------------------------------

/// A mount point, unmounted (lazily, so even when busy) on drop.
struct Mount(PathBuf);

impl Mount {
    /// Runs `mount args... dir`; the error text when mounting is not permitted here.
    fn new(args: &[&str], dir: &Path) -> Result<Mount, String> {
        let out = Command::new("mount")
            .args(args)
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Mount(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `mount -o remount,bind,ro` on this mount point.
    fn remount_ro(&self) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&self.0)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Files made immutable with `chattr +i`, made mutable again on drop.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn new() -> Immutable {
        Immutable(Vec::new())
    }

    /// `chattr +i path`; the error text when it is not possible here.
    fn add(&mut self, path: &Path) -> Result<(), String> {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run chattr: {e}"))?;
        if out.status.success() {
            self.0.push(path.to_path_buf());
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn release(&mut self) {
        for path in self.0.drain(..).rev() {
            let _ = Command::new("chattr").arg("-i").arg(&path).status();
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.release();
    }
}

/// The database and its WAL companions.
fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// Creates the database (schema included) with a short-lived CLI run.
fn create_db(config: &Path, uid: Option<u32>) {
    let out = run_cli(&["prune"], config, uid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Probing a running proxy whose store was broken
// ---------------------------------------------------------------------------------------

/// Sends requests to a proxy whose store may be broken and checks the fail-closed rules
/// on each answer; remembers what must hold once the store is repaired.
struct Probe<'a> {
    case: &'static str,
    /// The public and admin addresses of the proxy under test.
    addr: SocketAddr,
    admin: SocketAddr,
    backend: &'a Backend,
    client: HttpClient,
    /// A 401 for a live token is acceptable (a corrupt file may lose rows).
    allow_401: bool,
    /// Status counts, for the report.
    seen: HashMap<String, usize>,
    /// Tokens whose logout answered 204: they must stay refused.
    revoked: Vec<String>,
    /// Tokens captured after the breakage, and whether `/metrics` counted them stored.
    captured: Vec<(String, bool)>,
}

impl<'a> Probe<'a> {
    /// A probe of a store just broken. It first lets `cache.max_staleness_ms` pass: until
    /// then a verdict cached before the breakage may still be acted on (SPEC §9); after
    /// it, a store that cannot be read has stopped the feed too, and every request
    /// goes to the store.
    async fn new(case: &'static str, served: &Served, backend: &'a Backend) -> Probe<'a> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Probe {
            case,
            addr: served.addr,
            admin: served.admin,
            backend,
            client: client(),
            allow_401: false,
            seen: HashMap::new(),
            revoked: Vec::new(),
            captured: Vec::new(),
        }
    }

    fn note(&mut self, what: &str, status: u16) {
        *self.seen.entry(format!("{what} {status}")).or_default() += 1;
    }

    fn assert_503(&self, what: &str, r: &Reply) {
        assert!(
            r.header("retry-after").is_some(),
            "{}: {what}: a 503 without Retry-After: {:?}",
            self.case,
            r.headers
        );
        assert_refusal(r, 503);
    }

    /// A protected request with a token that was live before the breakage: forwarded
    /// (200, the backend saw it) or refused with 503 (the backend did not).
    async fn protected(&mut self, token: &str) -> u16 {
        let before = self.backend.count();
        let r = request(
            &self.client,
            "GET",
            &format!("http://{}/api", self.addr),
            Some(token),
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("{}: protected request failed: {e}", self.case));
        let after = self.backend.count();
        let status = r.status.as_u16();
        self.note("protected", status);
        match status {
            200 => assert_eq!(
                after,
                before + 1,
                "{}: a 200 the backend never saw",
                self.case
            ),
            503 => {
                self.assert_503("protected", &r);
                assert_eq!(after, before, "{}: a 503 was forwarded", self.case);
            }
            401 if self.allow_401 => {
                assert_eq!(after, before, "{}: a 401 was forwarded", self.case)
            }
            other => panic!(
                "{}: protected request answered {other}: {}",
                self.case,
                String::from_utf8_lossy(&r.body)
            ),
        }
        status
    }

    /// `POST /logout`: 204 (then the token must stay refused) or 503; never forwarded.
    async fn logout(&mut self, token: &str) -> u16 {
        let before = self.backend.count();
        let r = request(
            &self.client,
            "POST",
            &format!("http://{}/logout", self.addr),
            Some(token),
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("{}: logout failed: {e}", self.case));
        self.backend.assert_untouched_because(
            before,
            &format!("{}: a logout reached the backend", self.case),
        );
        let status = r.status.as_u16();
        self.note("logout", status);
        match status {
            204 => {
                // Acknowledged: refused from now on (a 503 is a refusal too).
                let before = self.backend.count();
                let again = request(
                    &self.client,
                    "GET",
                    &format!("http://{}/api", self.addr),
                    Some(token),
                    "",
                )
                .await
                .unwrap();
                assert!(
                    matches!(again.status.as_u16(), 401 | 503),
                    "{}: a token passed after its logout answered 204",
                    self.case
                );
                self.backend.assert_untouched(before);
                self.revoked.push(token.to_string());
            }
            503 => self.assert_503("logout", &r),
            401 if self.allow_401 => {}
            other => panic!(
                "{}: logout answered {other}: {}",
                self.case,
                String::from_utf8_lossy(&r.body)
            ),
        }
        status
    }

    /// A login through the capture route: the backend's 200 goes back unchanged, and
    /// `/metrics` says whether the token was stored or not.
    async fn login(&mut self, user: &str) {
        let stored = metric(&self.client, self.admin, STORED).await;
        let failed = metric(&self.client, self.admin, STORE_ERROR).await;
        let body = json!({ "user": user }).to_string();
        let url = format!("http://{}/login", self.addr);
        let r = request(&self.client, "POST", &url, None, &body)
            .await
            .unwrap_or_else(|e| panic!("{}: login: {e}", self.case));
        assert_eq!(
            r.status, 200,
            "{}: login: the backend's answer must go back",
            self.case
        );
        let token = r.json()["access_token"].as_str().unwrap().to_string();
        let stored_now = metric(&self.client, self.admin, STORED).await - stored;
        let failed_now = metric(&self.client, self.admin, STORE_ERROR).await - failed;
        assert_eq!(
            stored_now + failed_now,
            1,
            "{}: a capture must be counted once as stored or as a store error",
            self.case
        );
        self.note(
            if stored_now == 1 {
                "capture stored"
            } else {
                "capture store_error"
            },
            200,
        );
        self.captured.push((token, stored_now == 1));
    }

    /// After the store is repaired (and the proxy restarted): every 204 is still a
    /// revocation, every capture counted stored passes, every one counted failed does not.
    async fn verify(&self, served: &Served) {
        let client = client();
        for token in &self.revoked {
            assert_eq!(
                status_of(&client, served, token).await,
                401,
                "{}: a logout answered 204 but the token passes",
                self.case
            );
        }
        for (token, stored) in &self.captured {
            let status = status_of(&client, served, token).await;
            if *stored {
                assert_eq!(
                    status, 200,
                    "{}: a capture counted stored is not in the store",
                    self.case
                );
            } else {
                // The proxy logged "capture failed: the token was not stored" and counted
                // captures{result="store_error"}: the token must indeed not pass.
                assert_eq!(
                    status, 401,
                    "{}: a capture counted as a store error (and logged \"the token was \
                     not stored\") is live in the store",
                    self.case
                );
            }
        }
    }

    fn report(&self) {
        let mut seen: Vec<_> = self.seen.iter().collect();
        seen.sort();
        eprintln!("{}: answers while broken: {seen:?}", self.case);
    }
}

const STORED: &str = "tokengate_captures_total{result=\"stored\"}";
const STORE_ERROR: &str = "tokengate_captures_total{result=\"store_error\"}";

// ---------------------------------------------------------------------------------------
// 1. kill -9 during logins and logouts
// ---------------------------------------------------------------------------------------

/// What the clients were told before the crash.
#[derive(Default)]
struct Acked {
    /// Captured (200), logout never attempted: must pass after the restart.
    live: Vec<String>,
    /// Logout answered 204: must be refused after the restart.
    dead: Vec<String>,
    /// Logout sent, no answer (the crash): either is fine.
    in_doubt: Vec<String>,
    /// Answers that should never happen on a healthy store.
    unexpected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_login_or_logout() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), backend.addr);
    let mut served = Served::start(&config);
    let url = served.url("");

    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (acked, stop, in_flight, url) =
                (acked.clone(), stop.clone(), in_flight.clone(), url.clone());
            tokio::spawn(async move {
                let client = client();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let body = json!({ "user": format!("user{task}") }).to_string();
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let login =
                        request(&client, "POST", &format!("{url}/login"), None, &body).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let token = match login {
                        Ok(r) if r.status == 200 => {
                            r.json()["access_token"].as_str().unwrap().to_string()
                        }
                        Ok(r) => {
                            acked
                                .lock()
                                .unwrap()
                                .unexpected
                                .push(format!("login answered {}", r.status));
                            continue;
                        }
                        // The crash: this token was never acknowledged.
                        Err(_) => continue,
                    };
                    if i % 2 == 1 {
                        acked.lock().unwrap().live.push(token);
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let logout =
                        request(&client, "POST", &format!("{url}/logout"), Some(&token), "").await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut acked = acked.lock().unwrap();
                    match logout {
                        Ok(r) if r.status == 204 => acked.dead.push(token),
                        Ok(r) => acked
                            .unexpected
                            .push(format!("logout answered {}", r.status)),
                        Err(_) => acked.in_doubt.push(token),
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = in_flight.load(Ordering::SeqCst);
    served.kill9();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "kill -9 with {busy} requests in flight: {} live, {} revoked, {} logouts in doubt",
        acked.live.len(),
        acked.dead.len(),
        acked.in_doubt.len()
    );
    assert!(
        acked.unexpected.is_empty(),
        "answers before the crash: {:?}",
        acked.unexpected
    );
    assert!(
        !acked.live.is_empty() && !acked.dead.is_empty(),
        "the load produced no acknowledged login or logout"
    );

    // Restart on the same database: the crash left a WAL that must be recovered.
    let served = Served::start(&config);
    let url = served.url("/api");
    let check = |tokens: Vec<String>, expected: u16| {
        let url = url.clone();
        tokio::spawn(async move {
            let client = client();
            let mut wrong = Vec::new();
            for token in tokens {
                let r = request(&client, "GET", &url, Some(&token), "")
                    .await
                    .unwrap();
                if r.status != expected {
                    wrong.push(format!("{} instead of {expected}", r.status));
                }
            }
            wrong
        })
    };
    let mut checks = Vec::new();
    for chunk in acked.dead.chunks(64) {
        checks.push(check(chunk.to_vec(), 401));
    }
    for chunk in acked.live.chunks(64) {
        checks.push(check(chunk.to_vec(), 200));
    }
    let mut wrong = Vec::new();
    for c in checks {
        wrong.extend(c.await.unwrap());
    }
    assert!(
        wrong.is_empty(),
        "after kill -9 and a restart, {} acknowledged outcomes were lost: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------
// 2. Broken stores
// ---------------------------------------------------------------------------------------

/// Whether this process can open `path` for reading even though its mode forbids it.
fn permissions_do_not_bite(path: &Path) -> bool {
    std::fs::File::open(path).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_database_file() {
    let case = "unreadable file";
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let config = write_config_at(dir.path(), backend.addr, &db);
    create_db(&config, None);

    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let mut uid = None;
    if permissions_do_not_bite(&db) {
        // Root ignores the mode: run tokengate as an unprivileged uid, for which it bites.
        let own = |p: &Path| std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY));
        if own(dir.path()).is_err() || own(&db).is_err() || own(&config).is_err() {
            eprintln!("SKIPPED {case}: running as root, and cannot hand the files to uid {NOBODY}");
            return;
        }
        let probe = run_cli(&["check-config"], &config, Some(NOBODY));
        if !probe.status.success() {
            eprintln!(
                "SKIPPED {case}: running as root (chmod does not bite) and tokengate cannot run as uid {NOBODY}: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return;
        }
        eprintln!("{case}: running as root, so tokengate runs as uid {NOBODY} here");
        uid = Some(NOBODY);
    }

    // At start.
    let out = run_cli(&["serve"], &config, uid);
    assert_one_line_error(case, &out, &[&db.display().to_string()]);
    // A CLI revocation on that file fails the same way: no silent success.
    let out = run_cli(&["tokens", "revoke", "--user", "alice"], &config, uid);
    assert_one_line_error(case, &out, &[&db.display().to_string()]);

    // While running. Descriptors already open do not care about a mode change, but
    // SQLite opens the WAL of each connection on its first read, so a reader that had
    // not read yet now fails: each answer is either right or a 503, never a guess.
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut served = Served::start_as(&config, uid);
    let client = client();
    let tokens = [
        try_login(&client, &served, "alice").await.unwrap(),
        try_login(&client, &served, "alice").await.unwrap(),
    ];
    for f in db_files(&db) {
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    }
    let mut probe = Probe::new(case, &served, &backend).await;
    for _ in 0..8 {
        probe.protected(&tokens[1]).await;
    }
    probe.logout(&tokens[0]).await;
    probe.login("bob").await;
    probe.login("bob").await;
    probe.report();
    // A new process cannot open the file: the CLI fails clearly.
    let out = run_cli(&["tokens", "revoke", "--user", "alice"], &config, uid);
    assert_one_line_error(case, &out, &[&db.display().to_string()]);

    served.kill9();
    for f in db_files(&db) {
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let served2 = Served::start_as(&config, uid);
    probe.verify(&served2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_directory() {
    let case = "read-only directory";
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let data_arg = data.to_str().unwrap();
    let db = data.join("tokengate.db");
    let config = write_config_at(dir.path(), backend.addr, &db);

    // At start: (a) no database yet, (b) an existing database, in a read-only directory.
    let start_failure = |what: &str| {
        let out = run_cli(&["serve"], &config, None);
        assert_one_line_error(
            &format!("{case}, {what}"),
            &out,
            &[&db.display().to_string()],
        );
    };
    let ro = Mount::new(&["--bind", data_arg], &data).and_then(|m| m.remount_ro().map(|_| m));
    match ro {
        Ok(mount) => {
            eprintln!("{case}: using a read-only bind mount");
            start_failure("no database yet");
            drop(mount);
            create_db(&config, None);
            let mount = Mount::new(&["--bind", data_arg], &data).unwrap();
            mount.remount_ro().unwrap();
            start_failure("existing database");
            drop(mount);
        }
        Err(e) => {
            let mut frozen = Immutable::new();
            if let Err(e2) = frozen.add(&data) {
                eprintln!(
                    "SKIPPED {case} at start: no read-only bind mount ({e}) and no chattr +i ({e2})"
                );
            } else {
                eprintln!("{case}: no read-only bind mount ({e}); using chattr +i");
                start_failure("no database yet");
                frozen.release();
                create_db(&config, None);
                for f in db_files(&db).iter().chain([&data]) {
                    frozen.add(f).unwrap();
                }
                start_failure("existing database");
                frozen.release();
            }
        }
    }

    // While running. A read-only remount is refused while tokengate holds the file open
    // for writing (EBUSY), so the directory, the database and its WAL are made immutable
    // instead: every write fails, reads still work. The `-shm` file is left alone: it is
    // SQLite's shared memory, mapped into the process, and an immutable mapping faults
    // (SIGBUS) on its first write, which no real read-only directory does.
    let mut served = Served::start(&config);
    let client = client();
    let tokens = [
        try_login(&client, &served, "alice").await.unwrap(),
        try_login(&client, &served, "alice").await.unwrap(),
        try_login(&client, &served, "alice").await.unwrap(),
    ];
    let mut frozen = Immutable::new();
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    for f in db_files(&db).iter().filter(|f| **f != shm).chain([&data]) {
        if let Err(e) = frozen.add(f) {
            eprintln!("SKIPPED {case} while running: chattr +i is not available: {e}");
            return;
        }
    }
    let mut probe = Probe::new(case, &served, &backend).await;
    probe.protected(&tokens[0]).await;
    let status = probe.logout(&tokens[0]).await;
    assert_eq!(
        status, 503,
        "{case}: a logout cannot be stored on a read-only store"
    );
    probe.protected(&tokens[0]).await;
    probe.logout(&tokens[1]).await;
    probe.login("bob").await;
    probe.login("bob").await;
    assert!(
        probe.captured.iter().all(|(_, stored)| !stored),
        "{case}: a capture was counted stored on a read-only store"
    );
    // `tokens revoke` on the read-only store fails clearly, and does not claim success.
    let out = run_cli(&["tokens", "revoke", "--user", "alice"], &config, None);
    assert!(
        out.stdout.is_empty(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_one_line_error(
        &format!("{case}, tokens revoke"),
        &out,
        &[&db.display().to_string()],
    );
    probe.report();
    assert!(
        !served.log_lines("store unavailable").is_empty(),
        "{case}: the refusals were not logged"
    );

    served.kill9();
    frozen.release();
    let served2 = Served::start(&config);
    probe.verify(&served2).await;
    // The refused logout did not happen: its token still passes.
    assert_eq!(status_of(&client, &served2, &tokens[2]).await, 200);
}

/// Overwrites the first bytes of a file through a separate handle.
fn scribble(path: &Path, at: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_file() {
    let case = "corrupt file";
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let config = write_config_at(dir.path(), backend.addr, &db);

    // At start: garbage where the database should be.
    std::fs::write(&db, "this is not a database\n".repeat(200)).unwrap();
    let out = run_cli(&["serve"], &config, None);
    assert_one_line_error(case, &out, &[&db.display().to_string()]);
    std::fs::remove_file(&db).unwrap();

    // While running.
    let served = Served::start(&config);
    let client = client();
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(try_login(&client, &served, "alice").await.unwrap());
    }
    for t in &tokens {
        assert_eq!(status_of(&client, &served, t).await, 200);
    }
    // Captured, never asked for: not in the verdict cache, so the store must answer.
    // (A verdict cached before the breakage may be served while the feed can still be
    // read from pages SQLite holds: no revocation can be acknowledged by this store.)
    let mut cold = Vec::new();
    for _ in 0..2 {
        cold.push(try_login(&client, &served, "alice").await.unwrap());
    }
    // Under WAL the live pages (page 1 included) sit in the `-wal` file until a
    // checkpoint, and requests read them from there: ruining the main file's header then
    // changes nothing while running (the next checkpoint even writes page 1 back). So checkpoint first, from another
    // connection, as the proxy itself eventually would: from then on the main file is
    // what tokengate reads, and its header is ruined.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let (busy, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0, "the checkpoint was blocked");
    }
    let mut header = [0u8; 16];
    std::fs::File::open(&db)
        .unwrap()
        .read_exact(&mut header)
        .unwrap();
    assert_eq!(&header, b"SQLite format 3\0");
    scribble(&db, 0, 100);

    let mut probe = Probe::new(case, &served, &backend).await;
    probe.allow_401 = true;
    for t in &cold {
        let status = probe.protected(t).await;
        assert_ne!(status, 200, "{case}: a token passed on a corrupt store");
    }
    let status = probe.logout(&tokens[2]).await;
    assert_ne!(
        status, 204,
        "{case}: a logout answered 204 on a corrupt store"
    );
    let status = probe.protected(&cold[0]).await;
    assert_ne!(status, 200, "{case}: a token passed on a corrupt store");
    probe.report();
    drop(served);

    // And a restart on the corrupt file is a clear start-up error.
    let out = run_cli(&["serve"], &config, None);
    assert_one_line_error(
        &format!("{case}, restart"),
        &out,
        &[&db.display().to_string()],
    );
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    // Whatever is left is smaller than a block: take it byte by byte.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk() {
    let case = "disk full";
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("small");
    std::fs::create_dir(&data).unwrap();
    let mount = match Mount::new(&["-t", "tmpfs", "-o", "size=512k", "tmpfs"], &data) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED {case}: cannot mount a small tmpfs here: {e}");
            return;
        }
    };
    let db = data.join("tokengate.db");
    let config = write_config_at(dir.path(), backend.addr, &db);
    let filler = data.join("filler");

    // At start: no room for the database.
    fill(&filler);
    let out = run_cli(&["serve"], &config, None);
    assert_one_line_error(case, &out, &[&db.display().to_string()]);
    std::fs::remove_file(&filler).unwrap();
    for f in db_files(&db) {
        std::fs::remove_file(f).unwrap();
    }

    // While running.
    let mut served = Served::start(&config);
    let client = client();
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(try_login(&client, &served, "alice").await.unwrap());
    }
    fill(&filler);
    let free = Command::new("df").arg(&data).output().unwrap();
    eprintln!("{case}: {}", String::from_utf8_lossy(&free.stdout).trim());

    let mut probe = Probe::new(case, &served, &backend).await;
    for _ in 0..5 {
        probe.login("bob").await;
    }
    for t in &tokens {
        probe.protected(t).await;
    }
    probe.logout(&tokens[0]).await;
    probe.logout(&tokens[1]).await;
    probe.protected(&tokens[0]).await;
    probe.report();
    assert!(
        probe.captured.iter().any(|(_, stored)| !stored)
            || probe.seen.keys().any(|k| k.ends_with(" 503")),
        "{case}: the full disk never caused a store error (is the WAL preallocated?)"
    );

    // Crash, free the space, restart: the answers given while full must hold.
    served.kill9();
    std::fs::remove_file(&filler).unwrap();
    let served2 = Served::start(&config);
    probe.verify(&served2).await;
    drop(served2);
    drop(mount);
}

// ---------------------------------------------------------------------------------------
// 3. A CLI revocation racing live requests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_passes_after_tokens_revoke_returns_without_a_cache() {
    revoke_racing_requests("enabled = false", Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_passes_past_the_bound_after_tokens_revoke_returns_with_a_warm_cache() {
    let cache = "enabled = true\nmax_staleness_ms = 100\nfeed_poll_ms = 25";
    revoke_racing_requests(cache, Duration::from_millis(100)).await;
}

/// 200 requests with alice's tokens, the first ones while `tokens revoke --user alice`
/// runs, the others after it returned; those that start `bound` or more after it
/// returned must all be refused. `cache` is the `[cache]` section's lines.
async fn revoke_racing_requests(cache: &str, bound: Duration) {
    const TOTAL: usize = 200;
    /// Requests allowed before the CLI has returned; the rest start after it.
    const BEFORE: usize = 140;
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = GateConfig::default()
        .set("cache", cache)
        .write(dir.path(), backend.addr);
    let served = Served::start(&config);
    let client = client();
    let mut alice = Vec::new();
    for _ in 0..4 {
        alice.push(try_login(&client, &served, "alice").await.unwrap());
    }
    let bob = try_login(&client, &served, "bob").await.unwrap();
    // Twice: the second call is answered from the cache when it is on.
    for _ in 0..2 {
        for t in alice.iter().chain([&bob]) {
            assert_eq!(status_of(&client, &served, t).await, 200);
        }
    }

    // The CLI, on a thread. The instant it returned is taken after the process has
    // exited, and `done` is raised after that instant.
    let done = Arc::new(AtomicBool::new(false));
    let cli = {
        let (done, config) = (done.clone(), config.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = run_cli(&["tokens", "revoke", "--user", "alice"], &config, None);
            let returned = Instant::now();
            done.store(true, Ordering::SeqCst);
            (out, started, returned)
        })
    };

    let tickets = Arc::new(AtomicUsize::new(0));
    let alice = Arc::new(alice);
    let workers: Vec<_> = (0..20)
        .map(|w| {
            let (tickets, done, alice, url) = (
                tickets.clone(),
                done.clone(),
                alice.clone(),
                served.url("/api"),
            );
            tokio::spawn(async move {
                let http = self::client();
                let mut results = Vec::new();
                let mut waited_out_the_bound = false;
                loop {
                    let ticket = tickets.fetch_add(1, Ordering::SeqCst);
                    if ticket >= TOTAL {
                        break;
                    }
                    // Before the CLI returns: paced, and at most BEFORE of them.
                    if !done.load(Ordering::SeqCst) {
                        let waiting = Instant::now();
                        while ticket >= BEFORE && !done.load(Ordering::SeqCst) {
                            // The CLI run fails its thread after CHILD_TIMEOUT.
                            assert!(
                                waiting.elapsed() < CHILD_TIMEOUT + Duration::from_secs(5),
                                "`tokens revoke` never returned"
                            );
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(2 + (w % 5) as u64)).await;
                    } else if !waited_out_the_bound && w % 2 == 0 {
                        // Half of the workers go on at once (inside the bound, where a
                        // cached verdict may still pass); the others after it.
                        tokio::time::sleep(bound).await;
                        waited_out_the_bound = true;
                    }
                    let token = &alice[ticket % alice.len()];
                    let started = Instant::now();
                    let r = request(&http, "GET", &url, Some(token), "").await;
                    results.push((started, r.map(|r| r.status.as_u16())));
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.unwrap());
    }
    let (out, cli_started, cli_returned) = cli.join().unwrap();
    assert!(
        out.status.success(),
        "tokens revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(results.len(), TOTAL);

    let (mut after, mut during, mut passed_after) = (0, 0, Vec::new());
    for (started, status) in &results {
        let status = *status
            .as_ref()
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        assert!(status == 200 || status == 401, "unexpected status {status}");
        if *started > cli_returned + bound {
            after += 1;
            if status != 401 {
                passed_after.push(started.duration_since(cli_returned));
            }
        } else if *started >= cli_started {
            during += 1;
        }
    }
    eprintln!(
        "tokens revoke took {:?}; {during} requests started while it ran, {after} after",
        cli_returned - cli_started
    );
    assert!(
        after > 0,
        "no request started {bound:?} after the CLI returned"
    );
    assert!(
        passed_after.is_empty(),
        "{} requests started {bound:?} after `tokens revoke` returned and still passed, e.g. {:?} after",
        passed_after.len(),
        passed_after.first()
    );
    // Only alice was revoked.
    assert_eq!(status_of(&client, &served, &bob).await, 200);
}
