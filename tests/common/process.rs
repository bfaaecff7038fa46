//! The `tokengate` binary as a child process: config files for it, one-shot CLI runs
//! ([`run`], [`run_cli`]) with a deadline, a `serve` process ([`Served`]) and the
//! assertions on what a failed run wrote to stderr.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::gate::GateConfig;

/// The `tokengate` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokengate");

/// Longest a child process may take (to finish, to start serving, to exit after a
/// signal) before the test gives up on it.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest `tokengate serve` may take to log that it is serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes the default config (allowlist) for `backend`, with its database at
/// `dir/tokengate.db`, into `dir/tokengate.toml`; returns that path.
pub fn write_config(dir: &Path, backend: SocketAddr) -> PathBuf {
    GateConfig::default().write(dir, backend)
}

/// [`write_config`] with the database at `db`.
pub fn write_config_at(dir: &Path, backend: SocketAddr, db: &Path) -> PathBuf {
    GateConfig::default().write_at(dir, backend, db)
}

/// Runs a subcommand with `--config config` to completion, without `RUST_LOG`.
pub fn run(args: &[&str], config: &Path) -> Output {
    run_cli(args, config, None)
}

/// Runs a subcommand to completion (killed after [`CHILD_TIMEOUT`], failing the test),
/// optionally as another uid.
pub fn run_cli(args: &[&str], config: &Path, uid: Option<u32>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    wait_output(cmd.spawn().unwrap(), &format!("tokengate {args:?}"))
}

/// Runs `cmd` (stdin null, stdout and stderr captured) like [`Command::output`], but
/// killed after [`CHILD_TIMEOUT`], failing the test.
pub fn output_of(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, &format!("{cmd:?}"))
}

/// Waits for a child's exit and output (pipe what you want to read), at most
/// [`CHILD_TIMEOUT`]: a child still running then is killed and fails the test, naming
/// `what`.
pub fn wait_output(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // Our own child, by its id.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {CHILD_TIMEOUT:?}");
        }
    }
}

/// The non-blank lines a run wrote to stderr.
pub fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(String::from)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Asserts a failed run (`what` names it in the messages): non-zero exit that is not a
/// panic's 101, exactly one line on stderr, which does not say "panicked" and contains
/// one of `needles` (give one needle to require it).
pub fn assert_one_line_error(what: &str, out: &Output, needles: &[&str]) {
    let lines = stderr_lines(out);
    assert!(
        !out.status.success(),
        "{what}: expected a failure, got {:?}; stderr {lines:#?}",
        out.status
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "{what}: exit code 101 is a panic: {lines:#?}"
    );
    assert_eq!(lines.len(), 1, "{what}: expected one line, got {lines:#?}");
    assert!(!lines[0].contains("panicked"), "{what}: {}", lines[0]);
    assert!(
        needles.iter().any(|n| lines[0].contains(n)),
        "{what}: {:?} names none of {needles:?}",
        lines[0]
    );
    eprintln!("{what}: exit {:?}, stderr: {}", out.status.code(), lines[0]);
}

/// A `tokengate serve --log-format json` child process, with its public and admin
/// addresses and every line it logged. Killed (SIGKILL) on drop.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `serve` and waits (at most [`START_TIMEOUT`]) for its "tokengate serving"
    /// line, which names the bound addresses (the config asks for port 0).
    pub fn start(config: &Path) -> Served {
        Served::start_as(config, None)
    }

    /// [`Served::start`], optionally as another uid.
    pub fn start_as(config: &Path, uid: Option<u32>) -> Served {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = ChildLines::of(&mut child);
        let deadline = Instant::now() + START_TIMEOUT;
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (addr, admin) = loop {
            let Some(line) = lines.next_by(deadline, "\"tokengate serving\"") else {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "tokengate exited before serving ({status:?}): {:#?}",
                    log.lock().unwrap()
                );
            };
            log.lock().unwrap().push(line.clone());
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] == "tokengate serving" {
                break (
                    v["listen"].as_str().unwrap().parse().unwrap(),
                    v["admin"].as_str().unwrap().parse().unwrap(),
                );
            }
        };
        // Keep draining stderr (so the child never blocks on a full pipe), keeping it for
        // diagnostics and for [`Served::log_line`].
        lines.drain_into(log.clone());
        Served {
            child,
            addr,
            admin,
            log,
        }
    }

    /// The child's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL of a path on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The log lines that mention `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// The first JSON log line with this message, waiting up to 5 s for it.
    pub async fn log_line(&self, message: &str) -> Value {
        for _ in 0..250 {
            let found = self.log.lock().unwrap().iter().find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v["message"] == message)
            });
            if let Some(v) = found {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log line {message:?} in {:#?}", self.log.lock().unwrap());
    }

    /// SIGTERM, then waits for the exit (at most [`CHILD_TIMEOUT`]: a child that does
    /// not exit is killed and fails the test).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!("tokengate did not exit within {CHILD_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no final checkpoint, nothing.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill9();
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
