//! tokengate in-process ([`Gate`]) from a TOML config template ([`DEFAULT_CONFIG`]),
//! on port-0 listeners with a real SQLite file in a temporary directory.

use std::net::SocketAddr;
use std::path::PathBuf;
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

/// [`DEFAULT_CONFIG`] (allowlist) with `lines` added to its `[section]`, or in a new
/// `[section]` at the end when it has none.
pub fn config_with(section: &str, lines: &str) -> String {
    let config = DEFAULT_CONFIG.replace("{strategy}", "allowlist");
    let header = format!("[{section}]\n");
    let lines = lines.trim_end_matches('\n');
    if config.contains(&header) {
        config.replacen(&header, &format!("{header}{lines}\n"), 1)
    } else {
        format!("{config}\n{header}{lines}\n")
    }
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
        Gate::start_config(backend, &DEFAULT_CONFIG.replace("{strategy}", "allowlist")).await
    }

    /// tokengate with the default config and another strategy.
    pub async fn start_strategy(backend: &Backend, strategy: &str) -> Gate {
        Gate::start_config(backend, &DEFAULT_CONFIG.replace("{strategy}", strategy)).await
    }

    /// tokengate with a config text; `{backend}`, `{db}` and `{keys}` are filled in.
    pub async fn start_config(backend: &Backend, config: &str) -> Gate {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = config
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
        let store = format!("backend = \"postgres\"\npostgres_url = \"{postgres_url}\"");
        let config = DEFAULT_CONFIG
            .replace("{strategy}", strategy)
            .replace("sqlite_path = \"{db}\"", &store);
        let config = format!("{config}\n[cache]\nenabled = false\n");
        Gate::start_config(backend, &config).await
    }
}
