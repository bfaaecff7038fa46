//! tokengate in-process ([`Gate`]) from a TOML config template ([`DEFAULT_CONFIG`]),
//! on port-0 listeners with a real SQLite file in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use tokengate::app::App;
use tokengate::config::Config;

use super::backend::Backend;
use super::tokens::key_path;

/// The default config: HS256 with [`SECRET`], JSON capture on `/login`, header capture
/// on `/login-header`, cookie capture on `/login-cookie`, `/login-fail` and
/// `/big-login` captured too, `/public/*` and `/healthz` public.
pub const DEFAULT_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 5

[upstream]
url = "http://{backend}"
timeout_seconds = 1

[jwt]
algorithms = ["HS256"]
secret = "test-secret-0123456789abcdef0123456789"
leeway_seconds = 5

[[capture]]
path = "/login"
from = "json:/access_token"

[[capture]]
path = "/login-header"
from = "header:X-Access-Token"

[[capture]]
path = "/login-cookie"
from = "cookie:access_token"

[[capture]]
path = "/login-fail"
from = "json:/access_token"

[[capture]]
path = "/big-login"
from = "json:/access_token"

[store]
sqlite_path = "{db}"
strategy = "{strategy}"

[routes]
public = ["/healthz", "/public/*"]

[forward]
claim_headers = { email = "X-User-Email" }
"#;

/// [`DEFAULT_CONFIG`] (allowlist) with `lines` set in its `[section]` (see
/// [`GateConfig::set`]).
pub fn config_with(section: &str, lines: &str) -> String {
    GateConfig::default().set(section, lines).to_string()
}

/// A config built from a template ([`DEFAULT_CONFIG`] by default) by naming what a test
/// changes, edited as TOML rather than as text: a change cannot silently miss.
///
/// - [`set`](GateConfig::set) writes keys into a section, replacing or adding them
///   (a misspelt key or section is then refused by tokengate itself, whose config
///   denies unknown fields);
/// - [`remove`](GateConfig::remove) and [`replace_sections`](GateConfig::replace_sections)
///   panic when what they remove or replace is not in the template;
/// - [`add`](GateConfig::add) merges a TOML document: `[[capture]]` entries are
///   appended, tables merged key by key.
///
/// The `{backend}`, `{db}` and `{keys}` placeholders stay in the values until
/// [`Gate::start_config`] (or [`GateConfig::write`]) fills them in.
#[derive(Clone, Debug)]
pub struct GateConfig {
    table: toml::Table,
}

impl Default for GateConfig {
    /// [`DEFAULT_CONFIG`] with the allowlist strategy.
    fn default() -> GateConfig {
        GateConfig::parse(&DEFAULT_CONFIG.replace("{strategy}", "allowlist"))
    }
}

impl std::fmt::Display for GateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&toml::to_string(&self.table).expect("a TOML table serialises"))
    }
}

impl GateConfig {
    /// A config from any template text (valid TOML).
    pub fn parse(text: &str) -> GateConfig {
        GateConfig {
            table: parse_toml(text),
        }
    }

    /// `store.strategy`.
    pub fn strategy(self, strategy: &str) -> GateConfig {
        self.set(
            "store",
            &format!("strategy = {}", toml::Value::from(strategy)),
        )
    }

    /// Sets `lines` (`key = value` lines of TOML) in `[section]` (dotted for a nested
    /// table: `jwt.jwks`), replacing the keys it already has and adding the others;
    /// the section is created when the template has none (`[cache]`, `[admin]`, ...).
    pub fn set(mut self, section: &str, lines: &str) -> GateConfig {
        let table = self.section(section, true);
        for (key, value) in parse_toml(lines) {
            table.insert(key, value);
        }
        self
    }

    /// Removes `key` from `[section]`; panics when the template has no such key.
    pub fn remove(mut self, section: &str, key: &str) -> GateConfig {
        let removed = self.section(section, false).remove(key);
        assert!(
            removed.is_some(),
            "the config has no {section}.{key} to remove:\n{self}"
        );
        self
    }

    /// Replaces whole sections by those of `text` (a TOML document, e.g. a `[jwt]`
    /// section); panics when the template has no section of that name.
    pub fn replace_sections(mut self, text: &str) -> GateConfig {
        for (name, value) in parse_toml(text) {
            let old = self.table.insert(name.clone(), value);
            assert!(
                old.is_some(),
                "the config has no [{name}] to replace:\n{self}"
            );
        }
        self
    }

    /// Merges a TOML document: arrays of tables (`[[capture]]`) are appended to the
    /// template's, tables are [`set`](GateConfig::set) key by key, other keys replaced.
    pub fn add(mut self, text: &str) -> GateConfig {
        for (name, value) in parse_toml(text) {
            match (self.table.get_mut(&name), value) {
                (Some(toml::Value::Array(old)), toml::Value::Array(new)) => old.extend(new),
                (Some(toml::Value::Table(old)), toml::Value::Table(new)) => old.extend(new),
                (_, value) => {
                    self.table.insert(name, value);
                }
            }
        }
        self
    }

    /// The PostgreSQL store at `url` instead of the SQLite file.
    pub fn postgres(self, url: &str) -> GateConfig {
        self.remove("store", "sqlite_path").set(
            "store",
            &format!(
                "backend = \"postgres\"\npostgres_url = {}",
                toml::Value::from(url)
            ),
        )
    }

    /// Writes the config, for `backend` and with its database at `dir/tokengate.db`, to
    /// `dir/tokengate.toml` (for the binary); returns that path.
    pub fn write(&self, dir: &Path, backend: SocketAddr) -> PathBuf {
        self.write_at(dir, backend, &dir.join("tokengate.db"))
    }

    /// [`GateConfig::write`] with the database at `db`.
    pub fn write_at(&self, dir: &Path, backend: SocketAddr, db: &Path) -> PathBuf {
        let text = fill(&self.to_string(), backend, db);
        let path = dir.join("tokengate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The table at a dotted path, created (when `create`) if missing.
    fn section(&mut self, path: &str, create: bool) -> &mut toml::Table {
        let mut table = &mut self.table;
        for name in path.split('.') {
            if !table.contains_key(name) {
                assert!(create, "the config has no [{path}]");
                table.insert(name.to_string(), toml::Value::Table(toml::Table::new()));
            }
            table = match table.get_mut(name) {
                Some(toml::Value::Table(t)) => t,
                other => panic!("{path}: {name} is not a table: {other:?}"),
            };
        }
        table
    }
}

fn parse_toml(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("not a TOML document: {e}\n{text}"))
}

/// The upstream of a config whose test starts no backend (the discard port: nothing
/// listens there).
pub const NO_BACKEND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

/// `text` with the `{backend}`, `{db}` and `{keys}` placeholders filled in.
pub fn fill(text: &str, backend: SocketAddr, db: &Path) -> String {
    text.replace("{backend}", &backend.to_string())
        .replace("{db}", &db.display().to_string())
        .replace("{keys}", &key_path("").display().to_string())
}

/// A running tokengate.
pub struct Gate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    pub dir: Arc<tempfile::TempDir>,
    config: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gate {
    /// tokengate with [`DEFAULT_CONFIG`] (allowlist) in front of `backend`.
    pub async fn start(backend: &Backend) -> Gate {
        Gate::start_config(backend, &GateConfig::default()).await
    }

    /// tokengate with the default config and another strategy.
    pub async fn start_strategy(backend: &Backend, strategy: &str) -> Gate {
        Gate::start_config(backend, &GateConfig::default().strategy(strategy)).await
    }

    /// tokengate with a config (a [`GateConfig`] or a text); `{backend}`, `{db}` and
    /// `{keys}` are filled in.
    pub async fn start_config(backend: &Backend, config: impl std::fmt::Display) -> Gate {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = config
            .to_string()
            .replace("{backend}", &backend.addr.to_string())
            .replace("{keys}", &key_path("").display().to_string());
        Gate::launch(dir, config).await
    }

    async fn launch(dir: Arc<tempfile::TempDir>, config: String) -> Gate {
        let text = config.replace(
            "{db}",
            &dir.path().join("tokengate.db").display().to_string(),
        );
        let config_parsed = Config::from_toml(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let app = App::open(config_parsed)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = public.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tokengate::server::run(
            app.clone(),
            public,
            admin,
            async move {
                let _ = stopped.await;
            },
        ));
        Gate {
            addr,
            admin: admin_addr,
            app,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of a path on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tokengate.db")
    }

    /// Stops tokengate gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Stops this tokengate and starts a new one on the same database and config.
    pub async fn restart(mut self) -> Gate {
        self.stop().await;
        let dir = self.dir.clone();
        let config = self.config.clone();
        Gate::launch(dir, config).await
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Gate {
    /// Registers a signed token in the store, verified as the gate verifies (as
    /// `tokens add` would), and returns it.
    pub async fn admit(&self, token: String) -> String {
        let verified = self.app.policy().verifier.verify(&token).unwrap();
        self.app
            .strategy
            .admit(&verified, Default::default())
            .await
            .unwrap();
        token
    }

    /// [`Gate::admit`] of an HS256 token for `user` with `extra` claims.
    pub async fn admit_claims(&self, user: &str, extra: serde_json::Value) -> String {
        let mut c = super::tokens::claims(user);
        for (k, v) in extra.as_object().expect("extra claims are an object") {
            c[k] = v.clone();
        }
        self.admit(super::tokens::mint(&c)).await
    }

    /// The session id of a token, read from the SQLite store by the hash of its
    /// signing input.
    pub fn session_id_of(&self, token: &str) -> String {
        use sha2::{Digest, Sha256};
        let input = &token[..token.rfind('.').unwrap()];
        let hash = Sha256::digest(input.as_bytes()).to_vec();
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        conn.query_row(
            "SELECT session_id FROM valid_token WHERE token_hash = ?1",
            [hash],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// The rows of the SQLite store's `revocation_log`, in order, as (kind, user,
    /// session id, by).
    pub fn feed(&self) -> Vec<(String, String, Option<String>, String)> {
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        let mut stmt = conn
            .prepare("SELECT kind, user_id, session_id, by FROM revocation_log ORDER BY seq")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    }
}

/// The number of rows in a table of the gate's database.
pub fn rows(gate: &Gate, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(gate.db_path()).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

impl Gate {
    /// tokengate with the default config and `strategy`, on the PostgreSQL store at
    /// `postgres_url` (e.g. a [`PgSchema::url`]; several gates on one URL are replicas),
    /// with the verdict cache off: every request reads the store.
    pub async fn start_pg_uncached(backend: &Backend, strategy: &str, postgres_url: &str) -> Gate {
        let config = GateConfig::default()
            .strategy(strategy)
            .postgres(postgres_url)
            .set("cache", "enabled = false");
        Gate::start_config(backend, &config).await
    }
}
