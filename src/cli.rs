//! The command line (SPEC §3): parsing with clap, and one function per subcommand.
//!
//! `main` parses, starts tracing and calls [`run`]; everything a subcommand does lives
//! in the library so that tests can drive it. Start-up errors are `anyhow` errors that
//! `main` prints as one line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::app::App;
use crate::app::KeyLoading;
use crate::config::Config;
use crate::revocations::RevokeError;
use crate::store::Actor;
use crate::strategy::{SessionMeta, Target};

/// tokengate: an authentication sidecar that makes JWTs revocable.
#[derive(Debug, Parser)]
#[command(name = "tokengate", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $TOKENGATE_CONFIG, else tokengate.toml]
    #[arg(
        long,
        global = true,
        env = "TOKENGATE_CONFIG",
        default_value = "tokengate.toml",
        hide_default_value = true,
        hide_env = true
    )]
    pub config: PathBuf,
    /// Log format [default: text on a terminal, json otherwise]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the main job).
    Serve,
    /// Validate the config, print a summary, exit 0 or 1.
    CheckConfig,
    /// Manage tokens and sessions in the store a running proxy uses.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Delete expired rows now.
    Prune,
    /// A runnable walkthrough: a built-in sample backend behind the proxy.
    #[command(after_help = DEMO_CONFIG_NOTE)]
    Demo(DemoArgs),
}

/// What `--config` does in the demo, shown at the end of `demo --help`.
const DEMO_CONFIG_NOTE: &str = "The demo ignores --config and $TOKENGATE_CONFIG: it runs \
with its own built-in config (a fresh random HS256 secret, a capture route on POST /login, \
a throw-away SQLite file in the temp directory that Ctrl-C deletes).";

/// `tokengate tokens ...`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List a user's live sessions (no raw tokens).
    List {
        /// The user id (the token's user claim).
        #[arg(long)]
        user: String,
    },
    /// Verify and register a token issued out of band.
    Add {
        /// The JWT, or `-` to read it from standard input (out of shell history and `ps`).
        #[arg(long)]
        token: String,
    },
    /// Revoke every token of a user, or one session.
    Revoke(RevokeArgs),
}

/// What `tokens revoke` revokes.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// Revoke every token of this user (logout-all).
    #[arg(long)]
    pub user: Option<String>,
    /// Revoke this session.
    #[arg(long)]
    pub session: Option<String>,
}

/// `tokengate demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Ignored: the demo runs with its own built-in config (see below)
    // Shadows the global `--config` for this subcommand's help (clap does not
    // propagate a global argument a subcommand defines itself).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Proxy address [default: 127.0.0.1:8080, or a free port if it is taken]
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin address [default: 127.0.0.1:0, a free port]
    #[arg(long, default_value = "127.0.0.1:0", hide_default_value = true)]
    pub admin_listen: std::net::SocketAddr,
    /// Sample backend address [default: 127.0.0.1:0, a free port]
    #[arg(long, default_value = "127.0.0.1:0", hide_default_value = true)]
    pub backend_listen: std::net::SocketAddr,
}

/// Starts tracing: `RUST_LOG` filters (default `info` for tokengate, `warn` otherwise).
pub fn init_tracing(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tokengate=info"));
    let terminal = std::io::stderr().is_terminal();
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    // Colour codes only on a terminal (where the default also honours `NO_COLOR`): a
    // file or a log collector would get them as garbage.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let builder = if terminal {
        builder
    } else {
        builder.with_ansi(false)
    };
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLists(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .try_init(),
    };
}

/// Log fields that hold a list, logged as comma-separated text (e.g. the session ids of
/// the revocation audit line, [`crate::revocations`]; ids hold no comma). A `tracing`
/// field cannot carry an array (only through `valuable`, an unstable feature), so the
/// JSON format turns these into arrays itself ([`JsonLists`]); text shows them as is.
pub const LIST_FIELDS: &[&str] = &["sessions"];

/// tracing-subscriber's JSON event format, with the [`LIST_FIELDS`] written as arrays.
struct JsonLists<F>(F);

impl<S, N, F> FormatEvent<S, N> for JsonLists<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let fields = event.metadata().fields();
        if !LIST_FIELDS.iter().any(|name| fields.field(name).is_some()) {
            return self.0.format_event(ctx, writer, event);
        }
        let mut lists = ListValues(Vec::new());
        event.record(&mut lists);
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        for (name, text) in lists.0 {
            // The inner format wrote `"name":"a,b"` (serde_json, compact); a `"` inside
            // another string is escaped, so this can only match the field itself.
            let as_text = format!("\"{name}\":{}", serde_json::Value::from(text.as_str()));
            let items: Vec<&str> = text.split(',').filter(|s| !s.is_empty()).collect();
            let as_array = format!("\"{name}\":{}", serde_json::json!(items));
            line = line.replacen(&as_text, &as_array, 1);
        }
        writer.write_str(&line)
    }
}

/// The text of an event's [`LIST_FIELDS`].
struct ListValues(Vec<(&'static str, String)>);

impl tracing::field::Visit for ListValues {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if LIST_FIELDS.contains(&field.name()) {
            self.0.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if LIST_FIELDS.contains(&field.name()) {
            self.0.push((field.name(), format!("{value:?}")));
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::jwt::check_crypto_provider().map_err(anyhow::Error::msg)?;
    let path = cli.config;
    match cli.command {
        Command::Demo(args) => crate::demo::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::CheckConfig => {
            let config = load(&path)?;
            // The keys are read (a provider's set fetched) too: a start would fail on them.
            let settings = config.jwt.settings.clone();
            let keys = crate::jwt::Keys::start(&config.jwt.source, settings, Default::default())
                .await
                .map_err(|e| anyhow::anyhow!("config error: {e}"))?;
            let keys = keys.current().description().to_string();
            println!("{}: OK\n{}", path.display(), config.summary(&keys));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve(load(&path)?, path).await.map(|_| ExitCode::SUCCESS),
        Command::Prune => {
            let app = open(load(&path)?, KeyLoading::Skip).await?;
            let report = app.revocations.prune().await?;
            tracing::info!(
                valid_token = report.valid_token,
                invalid_token = report.invalid_token,
                user_status = report.user_status,
                revocation_log = report.revocation_log,
                backchannel_jti = report.backchannel_jti,
                by = "cli",
                "pruned expired rows"
            );
            println!(
                "pruned {} rows (valid_token {}, invalid_token {}, user_status {}, revocation_log {}, backchannel_jti {})",
                report.total(),
                report.valid_token,
                report.invalid_token,
                report.user_status,
                report.revocation_log,
                report.backchannel_jti
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(cmd) => {
            // Only `add` verifies a token; list and revoke work on the store alone.
            let keys = match cmd {
                TokensCommand::Add { .. } => KeyLoading::Load,
                TokensCommand::List { .. } | TokensCommand::Revoke(_) => KeyLoading::Skip,
            };
            tokens(open(load(&path)?, keys).await?, cmd).await
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

async fn open(config: Config, keys: KeyLoading) -> anyhow::Result<std::sync::Arc<App>> {
    Ok(App::open_with(config, keys).await?)
}

/// `serve`: bind both listeners (so a port in use fails before anything else), then run
/// until SIGTERM or Ctrl-C, reloading `path` on SIGHUP (and on change with
/// `server.watch_config`).
pub async fn serve(config: Config, path: std::path::PathBuf) -> anyhow::Result<()> {
    let public = crate::server::bind("server.listen", config.server.listen).await?;
    let admin = crate::server::bind("server.admin_listen", config.server.admin_listen).await?;
    let app = open(config, KeyLoading::Load).await?;
    let triggers = crate::reload::Triggers::install().context("cannot handle SIGHUP")?;
    tokio::spawn(triggers.run(app.clone(), path));
    tracing::info!(
        listen = %public.local_addr()?,
        admin = %admin.local_addr()?,
        upstream = %app.policy().config.upstream.url,
        strategy = %app.policy().config.store.strategy,
        "tokengate serving"
    );
    crate::server::run(app, public, admin, crate::server::shutdown_signal()).await
}

async fn tokens(app: std::sync::Arc<App>, cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::List { user } => {
            let sessions = app.revocations.sessions(&user).await?;
            println!(
                "{:<32}  {:<20}  {:<20}  {:<15}  USER AGENT",
                "SESSION", "CREATED", "EXPIRES", "ADDRESS"
            );
            for s in &sessions {
                println!(
                    "{:<32}  {:<20}  {:<20}  {:<15}  {}",
                    s.session_id,
                    crate::timefmt::rfc3339(s.created_at),
                    crate::timefmt::rfc3339(s.expires_at),
                    s.client_addr.as_deref().unwrap_or("-"),
                    s.user_agent.as_deref().unwrap_or("-"),
                );
            }
            eprintln!("{} live session(s) for {user}", sessions.len());
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Add { token } => {
            let token = if token == "-" {
                tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
                    .await?
                    .context("cannot read the token from standard input")?
            } else {
                token
            };
            let verified = app
                .policy()
                .verifier
                .verify_fresh(token.trim())
                .await
                .context("the token was refused")?;
            let meta = SessionMeta {
                user_agent: Some("tokengate-cli".into()),
                client_addr: None,
            };
            let session = app.strategy.admit(&verified, meta).await?;
            match session {
                Some(s) => println!(
                    "registered session {} for {} (expires {})",
                    s.session_id,
                    s.user_id,
                    crate::timefmt::rfc3339(s.expires_at)
                ),
                None => println!(
                    "the token of {} verifies; the {} strategy needs no registration",
                    verified.user,
                    app.strategy.kind()
                ),
            }
            tracing::info!(user = %verified.user, token = %verified.hash.short(), by = "cli", "token registered");
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke(RevokeArgs {
            user: Some(user), ..
        }) => {
            let revoked = app
                .revocations
                .revoke(Target::User(&user), Actor::Cli)
                .await?;
            println!(
                "revoked every token of {user} ({} session(s) removed)",
                revoked.sessions.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke(RevokeArgs {
            session: Some(id), ..
        }) => {
            let target = Target::Session {
                id: &id,
                owner: None,
            };
            match app.revocations.revoke(target, Actor::Cli).await {
                Ok(revoked) => {
                    for s in &revoked.sessions {
                        println!("revoked session {} of {}", s.session_id, s.user_id);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(RevokeError::NoSuchSession) => bail!("no such session: {id}"),
                Err(e) => Err(e.into()),
            }
        }
        TokensCommand::Revoke(_) => bail!("give --user or --session"),
    }
}
