//! The `tokengate` binary as a user runs it: start-up errors are one clear line with a
//! non-zero exit, `serve` drains on SIGTERM and exits 0, and the `tokens` and `prune`
//! subcommands act on the database of a running proxy.

mod common;
use common::*;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The default `cache.max_staleness_ms`: how long a running proxy may take to honour a
/// revocation made by the CLI.
const CACHE_BOUND: Duration = Duration::from_millis(100);

/// The revocation audit line a command wrote (JSON: stderr is not a terminal).
fn audit_line(out: &Output) -> Value {
    stderr_lines(out)
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "revoked")
        .unwrap_or_else(|| panic!("no audit line in {:#?}", stderr_lines(out)))
}

#[tokio::test]
async fn check_config_accepts_a_good_file_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), NO_BACKEND);
    let out = run(&["check-config"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OK") && text.contains("HS256") && text.contains("allowlist"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_key_is_one_line_naming_the_dotted_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = GateConfig::default()
        .remove("server", "shutdown_grace_seconds")
        .set("server", "shutdown_grace_second = 5")
        .write(dir.path(), NO_BACKEND);
    for command in ["check-config", "serve"] {
        assert_one_line_error(
            command,
            &run(&[command], &config),
            &["config error: server.shutdown_grace_second"],
        );
    }
}

#[tokio::test]
async fn a_missing_config_file_is_one_line() {
    let out = run(
        &["check-config"],
        std::path::Path::new("/nonexistent/tokengate.toml"),
    );
    assert_one_line_error(
        "check-config",
        &out,
        &["cannot read /nonexistent/tokengate.toml"],
    );
}

#[tokio::test]
async fn a_missing_key_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = GateConfig::default()
        .remove("jwt", "secret")
        .set(
            "jwt",
            "algorithms = [\"RS256\"]\npublic_key_file = \"keys/missing.pem\"",
        )
        .write(dir.path(), NO_BACKEND);
    assert_one_line_error(
        "serve",
        &run(&["serve"], &config),
        &["config error: jwt.public_key_file: cannot read"],
    );
}

#[tokio::test]
async fn an_unwritable_database_path_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_at(
        dir.path(),
        NO_BACKEND,
        std::path::Path::new("/nonexistent-dir/tokengate.db"),
    );
    assert_one_line_error(
        "serve",
        &run(&["serve"], &config),
        &["/nonexistent-dir/tokengate.db"],
    );
}

#[tokio::test]
async fn a_port_in_use_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = GateConfig::default()
        .set("server", &format!("listen = \"{port}\""))
        .write(dir.path(), NO_BACKEND);
    assert_one_line_error(
        "serve",
        &run(&["serve"], &config),
        &[&format!("cannot listen on {port}")],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A 5 s upstream timeout, so the 3 s /slow request is in flight when SIGTERM lands.
    let config = GateConfig::default()
        .set("upstream", "timeout_seconds = 5")
        .write(dir.path(), backend.addr);
    let mut served = Served::start(&config);
    let token = mint(&claims("alice"));
    let out = run(&["tokens", "add", "--token", &token], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let url = served.url("/slow");
    let in_flight = tokio::spawn(async move { get_with(&url, &token).await });
    // Wait until the backend has the request, then signal.
    eventually(
        Duration::from_secs(10),
        "the backend has the request",
        || backend.count() > 0,
    )
    .await;
    let status = tokio::task::spawn_blocking(move || served.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        in_flight.await.unwrap().status,
        200,
        "the in-flight request must complete"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_add_list_and_revoke_act_on_a_running_proxy() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), backend.addr);
    let served = Served::start(&config);

    // add: verified like the proxy does; a forged token is refused with exit 1.
    let alice1 = mint(&claims("alice"));
    let alice2 = mint(&claims("alice"));
    let bob = mint(&claims("bob"));
    for t in [&alice1, &alice2, &bob] {
        let out = run(&["tokens", "add", "--token", t], &config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let forged = format!("{}x", &alice1[..alice1.len() - 1]);
    let out = run(&["tokens", "add", "--token", &forged], &config);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(get_with(&served.url("/api"), &alice1).await.status, 200);

    // list: a table of alice's two sessions, no raw token.
    let out = run(&["tokens", "list", "--user", "alice"], &config);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let sessions: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(sessions.len(), 2, "{table}");
    assert!(!table.contains(&alice1) && !table.contains(&alice2));

    // revoke --session: the next request with that token is refused.
    let first_session = sessions[0].split_whitespace().next().unwrap().to_string();
    let out = run(&["tokens", "revoke", "--session", &first_session], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The audit trail: who asked, which user, which session.
    let audit = String::from_utf8_lossy(&out.stderr);
    assert!(
        audit.contains("\"by\":\"cli\"")
            && audit.contains(&first_session)
            && audit.contains("\"user\":\"alice\""),
        "{audit}"
    );
    let line = audit_line(&out);
    assert_eq!(
        line["sessions"],
        serde_json::json!([first_session]),
        "{line}"
    );
    // A running proxy honours it within `cache.max_staleness_ms` (SPEC §9).
    tokio::time::sleep(CACHE_BOUND).await;
    let alive: Vec<u16> = [
        get_with(&served.url("/api"), &alice1).await,
        get_with(&served.url("/api"), &alice2).await,
    ]
    .iter()
    .map(|r| r.status.as_u16())
    .collect();
    assert_eq!(alive.iter().filter(|s| **s == 200).count(), 1, "{alive:?}");
    assert_eq!(alive.iter().filter(|s| **s == 401).count(), 1, "{alive:?}");

    // revoke --user: every token of alice is refused, bob is untouched.
    let out = run(&["tokens", "revoke", "--user", "alice"], &config);
    assert!(out.status.success());
    let audit = String::from_utf8_lossy(&out.stderr);
    assert!(
        audit.contains("logout-all") && audit.contains("\"by\":\"cli\""),
        "{audit}"
    );
    // `sessions` is a JSON array (of alice's one remaining session), not a string.
    let line = audit_line(&out);
    let ended = line["sessions"].as_array().expect("an array");
    assert_eq!(ended.len(), 1, "{line}");
    assert!(
        ended[0].is_string() && ended[0] != first_session.as_str(),
        "{line}"
    );
    tokio::time::sleep(CACHE_BOUND).await;
    let before = backend.count();
    assert_eq!(get_with(&served.url("/api"), &alice1).await.status, 401);
    assert_eq!(get_with(&served.url("/api"), &alice2).await.status, 401);
    backend.assert_untouched(before);
    assert_eq!(get_with(&served.url("/api"), &bob).await.status, 200);

    // An unknown session is an error.
    let out = run(&["tokens", "revoke", "--session", "nope"], &config);
    assert_one_line_error("tokens revoke --session nope", &out, &["no such session"]);
}

#[tokio::test]
async fn prune_deletes_expired_rows_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), NO_BACKEND);
    // A token that verifies now (within leeway of 5 s is not enough to expire it later),
    // so insert expired rows directly, as an old run would have left them.
    let out = run(&["prune"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = rusqlite::Connection::open(dir.path().join("tokengate.db")).unwrap();
    let now = now();
    for (i, exp) in [now - 10, now - 5, now + 3600].iter().enumerate() {
        conn.execute(
            "INSERT INTO valid_token (token_hash, session_id, user_id, issued_at, expires_at, created_at) VALUES (?1, ?2, 'u', ?3, ?4, ?3)",
            rusqlite::params![vec![i as u8; 32], format!("s{i}"), now - 100, exp],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO invalid_token (token_hash, user_id, expires_at) VALUES (?1, 'u', ?2)",
        rusqlite::params![vec![9u8; 32], now - 1],
    )
    .unwrap();
    let out = run(&["prune"], &config);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pruned 3 rows"), "{text}");
    let left: i64 = conn
        .query_row("SELECT count(*) FROM valid_token", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capture_failure_log_line_says_what_the_issued_token_lacks() {
    let n = now();
    for (strategy, issued, cause, message) in [
        (
            "allowlist",
            serde_json::json!({"iat": n, "exp": n + 600}),
            "the token has no string claim \"sub\" (jwt.user_claim)",
            "capture failed: the issued token does not verify",
        ),
        (
            "denylist",
            serde_json::json!({"sub": "alice", "exp": n + 600}),
            "the token has no iat, which the denylist strategy needs",
            "capture failed: the issued token cannot be used",
        ),
    ] {
        let token = mint(&issued);
        let backend = Backend::start_with(std::sync::Arc::new(move |_: &str| token.clone())).await;
        let dir = tempfile::tempdir().unwrap();
        let config = GateConfig::default()
            .strategy(strategy)
            .write(dir.path(), backend.addr);
        let served = Served::start(&config);
        let r = send("POST", &served.url("/login"), &[], "").await;
        assert_eq!(r.status, 200, "{strategy}: the login response is unchanged");
        let line = served.log_line(message).await;
        assert_eq!(line["cause"], cause, "{strategy}: {line}");
    }
}

#[tokio::test]
async fn the_store_commands_need_no_key_material_and_the_others_do() {
    // A variable no test sets, and a key file that does not exist.
    const UNSET: &str = "TOKENGATE_TEST_NEVER_SET_SECRET";
    for (source, error) in [
        (
            format!("secret_env = \"{UNSET}\""),
            format!("config error: jwt.secret_env: environment variable {UNSET} is not set"),
        ),
        (
            "secret_file = \"keys/missing\"".to_string(),
            "config error: jwt.secret_file: cannot read".to_string(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = GateConfig::default()
            .remove("jwt", "secret")
            .set("jwt", &source)
            .write(dir.path(), NO_BACKEND);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&source) && !text.contains("secret ="),
            "{text}"
        );
        for args in [
            &["prune"][..],
            &["tokens", "list", "--user", "alice"],
            &["tokens", "revoke", "--user", "alice"],
        ] {
            let out = run(args, &config);
            assert!(
                out.status.success(),
                "{args:?} with {source}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = run(&["tokens", "revoke", "--session", "nope"], &config);
        assert_one_line_error("tokens revoke --session nope", &out, &["no such session"]);
        let token = mint(&claims("alice"));
        for args in [
            &["serve"][..],
            &["check-config"],
            &["tokens", "add", "--token", &token],
        ] {
            assert_one_line_error(&format!("{args:?}"), &run(args, &config), &[&error]);
        }
    }
}

#[tokio::test]
async fn tokens_add_reads_the_token_from_standard_input_when_it_is_a_dash() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), NO_BACKEND);
    let add = |input: String| {
        let mut child = Command::new(BIN)
            .args(["tokens", "add", "--token", "-", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        wait_output(child, "tokens add --token -")
    };
    // Trimmed, as `echo "$TOKEN" |` or a file with a final newline gives it.
    let token = mint(&claims("alice"));
    let out = add(format!("  {token}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("registered session") && text.contains("alice"),
        "{text}"
    );
    let out = run(&["tokens", "list", "--user", "alice"], &config);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // Verified like any token: a forged one from stdin is refused.
    let out = add(format!("{}x\n", &token[..token.len() - 1]));
    assert_one_line_error("a forged token", &out, &["the token was refused"]);
    let out = add(String::new());
    assert_one_line_error("no token", &out, &["the token was refused"]);
}

#[tokio::test]
async fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), NO_BACKEND);
    // `prune` and `tokens revoke` log an info line; stderr is a pipe here.
    for args in [&["prune"][..], &["tokens", "revoke", "--user", "alice"]] {
        let out = output_of(
            Command::new(BIN)
                .args(args)
                .args(["--log-format", "text", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info")
                .env_remove("NO_COLOR"),
        );
        assert!(out.status.success(), "{args:?}");
        let logs = String::from_utf8_lossy(&out.stderr);
        assert!(logs.contains("INFO"), "{args:?}: no log line: {logs}");
        assert!(
            !logs.contains('\u{1b}'),
            "{args:?}: colour codes in {logs:?}"
        );
    }
}

#[test]
fn demo_help_shows_one_default_per_option_and_says_config_is_ignored() {
    for flag in ["-h", "--help"] {
        let out = output_of(Command::new(BIN).args(["demo", flag]));
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        // One block per option: its header line and the description under it.
        let mut blocks: Vec<String> = Vec::new();
        for line in help.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("--") || trimmed.starts_with("-h") || trimmed.starts_with("-V") {
                blocks.push(String::new());
            }
            if let Some(block) = blocks.last_mut() {
                block.push_str(line);
                block.push('\n');
            }
        }
        let block = |name: &str| {
            blocks
                .iter()
                .find(|b| b.trim_start().starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {help}"))
                .clone()
        };
        for option in [
            "--listen",
            "--admin-listen",
            "--backend-listen",
            "--log-format",
        ] {
            let text = block(option);
            assert_eq!(text.matches("[default:").count(), 1, "{flag}: {text}");
        }
        let config = block("--config");
        assert!(
            config.contains("Ignored") && !config.contains("[default:"),
            "{flag}: {config}"
        );
        assert!(
            help.contains("The demo ignores --config and $TOKENGATE_CONFIG"),
            "{flag}: {help}"
        );
    }
}

#[test]
fn the_audit_line_lists_no_sessions_as_an_empty_array_and_text_as_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), NO_BACKEND);
    let out = run(&["tokens", "revoke", "--user", "nobody"], &config);
    assert!(out.status.success());
    let line = audit_line(&out);
    assert_eq!(line["sessions"], serde_json::json!([]), "{line}");
    // The rest of the line is the JSON format as it was: same keys, same order.
    let raw = stderr_lines(&out)
        .into_iter()
        .find(|l| l.contains("\"message\":\"revoked\""))
        .unwrap();
    assert!(raw.starts_with("{\"timestamp\":"), "{raw}");
    assert!(raw.contains("\"sessions\":[],\"token\":\"-\""), "{raw}");
    // The text format writes the ids comma-separated.
    for token in [mint(&claims("carol")), mint(&claims("carol"))] {
        assert!(run(&["tokens", "add", "--token", &token], &config)
            .status
            .success());
    }
    let out = output_of(
        Command::new(BIN)
            .args([
                "tokens",
                "revoke",
                "--user",
                "carol",
                "--log-format",
                "text",
                "--config",
            ])
            .arg(&config)
            .env_remove("RUST_LOG"),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let list = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sessions="))
        .unwrap_or_else(|| panic!("{text}"));
    let ids: Vec<&str> = list.split(',').collect();
    assert!(
        ids.len() == 2 && ids.iter().all(|id| id.len() == 32),
        "{text}"
    );
}
