//! Configuration: the TOML file (SPEC §4) turned once into a validated [`Config`].
//!
//! Two layers, as in ripgrep and pingora: `raw` mirrors the file with serde
//! (`deny_unknown_fields`, defaults as `DEFAULT_*` consts), and [`Config::from_raw`]
//! turns it into parsed types (`SocketAddr`, `Uri`, `Duration`, `HeaderName`, loaded
//! keys). Every problem is found here, at load, and reported with the key's full dotted
//! name, so that nothing on the request path ever has to second-guess the config.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;

use crate::capture::CaptureSource;
use crate::extract::TokenSource;
use crate::jwt::keys::{
    check_key_url, io_reason, trim_trailing_newline, KeySource, Provider, Remote,
    MIN_HMAC_SECRET_BYTES,
};
use crate::jwt::VerifierSettings;
use crate::rules::{Rule, Rules};
use crate::strategy::StrategyKind;

/// Default public listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin listener (loopback only: it carries the admin API).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default drain time after SIGTERM / Ctrl-C.
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 25;
/// `server.header_read_timeout_seconds`: from accept to the first request head, and
/// for every HTTP/1.1 request head.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// `server.idle_timeout_seconds`: from a connection's latest request to its close.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 60;
/// `server.max_connections`: open client connections of the public listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `server.http2_max_streams`: concurrent streams one HTTP/2 connection may open.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 100;
/// The largest `server.http2_max_streams` accepted.
pub const MAX_HTTP2_STREAMS: u32 = 1000;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 5;
/// Default time allowed for the upstream response head.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECONDS: u64 = 60;
/// Default JWKS refresh interval.
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;
/// `jwt.jwks_min_refetch_seconds`: the least time between two fetches asked for by tokens.
pub const DEFAULT_JWKS_MIN_REFETCH_SECONDS: u64 = 5;
/// `jwt.jwks_fetch_timeout_seconds`: one fetch of the key set, connect to last byte.
pub const DEFAULT_JWKS_FETCH_TIMEOUT_SECONDS: u64 = 3;
/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Default claim naming the user.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Default SQLite file.
pub const DEFAULT_SQLITE_PATH: &str = "tokengate.db";
/// Default interval of the background prune.
pub const DEFAULT_PRUNE_INTERVAL_SECONDS: u64 = 300;
/// `store.revocation_log_days`: how long feed rows are kept as the audit trail.
pub const DEFAULT_REVOCATION_LOG_DAYS: u64 = 30;
/// `store.idle_timeout_seconds`: 0, off (SPEC §13). (`server.idle_timeout_seconds` is
/// another thing: idle connections.)
pub const DEFAULT_STORE_IDLE_TIMEOUT_SECONDS: u64 = 0;
/// The longest `store.idle_timeout_seconds` accepted (a year).
pub const MAX_STORE_IDLE_TIMEOUT_SECONDS: u64 = 365 * 86_400;
/// `store.max_sessions_per_user`: 0, unlimited (SPEC §13).
pub const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 0;
/// The largest `store.max_sessions_per_user` accepted.
pub const MAX_SESSIONS_PER_USER: u32 = 10_000;
/// `cache.enabled`
pub const DEFAULT_CACHE_ENABLED: bool = true;
/// `cache.max_entries`
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 100_000;
/// `cache.max_staleness_ms`
pub const DEFAULT_CACHE_MAX_STALENESS_MS: u64 = 100;
/// `cache.feed_poll_ms`
pub const DEFAULT_CACHE_FEED_POLL_MS: u64 = 25;
/// The largest `cache.max_entries` accepted (about 1 KiB each, so a few GiB).
pub const MAX_CACHE_ENTRIES: u64 = 10_000_000;
/// The largest `cache.max_staleness_ms` / `cache.feed_poll_ms` accepted: a bound of
/// minutes would no longer be a revocation guarantee worth the name.
pub const MAX_CACHE_MILLIS: u64 = 60_000;
/// Default logout route.
pub const DEFAULT_LOGOUT: &str = "/logout";
/// Default logout-all route.
pub const DEFAULT_LOGOUT_ALL: &str = "/logout-all";
/// Default sessions route.
pub const DEFAULT_SESSIONS: &str = "/sessions";
/// `routes.backchannel_logout`: off (OIDC Back-Channel Logout, SPEC §13).
pub const DEFAULT_BACKCHANNEL_LOGOUT: &str = "";
/// Default identity header.
pub const DEFAULT_USER_HEADER: &str = "X-User-Id";
/// Default environment variable holding the admin token.
pub const DEFAULT_ADMIN_TOKEN_ENV: &str = "TOKENGATE_ADMIN_TOKEN";

/// A configuration problem: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Full dotted name of the key, e.g. `jwt.algorithms`; empty for the file itself.
    pub key: String,
    /// What is wrong, in one line.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config error: {}", self.problem)
        } else {
            write!(f, "config error: {}: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file as written, before validation.
///
/// Field names are the keys of SPEC §4, documented in `config/tokengate.toml`.
#[allow(missing_docs)]
pub mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    /// The whole file.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RawConfig {
        pub server: Server,
        pub upstream: Upstream,
        pub jwt: Jwt,
        pub token: Token,
        pub capture: Vec<Capture>,
        pub store: Store,
        pub routes: Routes,
        pub forward: Forward,
        pub admin: Admin,
        pub cache: Cache,
        pub rules: Vec<Rule>,
    }

    /// One `[[rules]]` entry. The lists are optional so that an empty one, which can
    /// only be a mistake, is told from a missing one.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        pub path: String,
        pub methods: Option<Vec<String>>,
        pub scopes: Option<Vec<String>>,
        pub claims: Option<BTreeMap<String, String>>,
    }

    /// `[cache]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Cache {
        pub enabled: bool,
        pub max_entries: u64,
        pub max_staleness_ms: u64,
        pub feed_poll_ms: u64,
    }

    impl Default for Cache {
        fn default() -> Self {
            Cache {
                enabled: DEFAULT_CACHE_ENABLED,
                max_entries: DEFAULT_CACHE_MAX_ENTRIES,
                max_staleness_ms: DEFAULT_CACHE_MAX_STALENESS_MS,
                feed_poll_ms: DEFAULT_CACHE_FEED_POLL_MS,
            }
        }
    }

    /// `[server]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Server {
        pub listen: String,
        pub admin_listen: String,
        pub shutdown_grace_seconds: u64,
        pub http2_max_streams: u32,
        pub header_read_timeout_seconds: u64,
        pub idle_timeout_seconds: u64,
        pub max_connections: usize,
        pub watch_config: bool,
        pub tls_cert_file: Option<PathBuf>,
        pub tls_key_file: Option<PathBuf>,
        pub tls_client_ca_file: Option<PathBuf>,
    }

    impl Default for Server {
        fn default() -> Self {
            Server {
                listen: DEFAULT_LISTEN.into(),
                admin_listen: DEFAULT_ADMIN_LISTEN.into(),
                shutdown_grace_seconds: DEFAULT_SHUTDOWN_GRACE_SECONDS,
                http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
                header_read_timeout_seconds: DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
                idle_timeout_seconds: DEFAULT_IDLE_TIMEOUT_SECONDS,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                watch_config: false,
                tls_cert_file: None,
                tls_key_file: None,
                tls_client_ca_file: None,
            }
        }
    }

    /// `[upstream]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Upstream {
        pub url: Option<String>,
        pub connect_timeout_seconds: u64,
        pub timeout_seconds: u64,
        pub ca_file: Option<PathBuf>,
        pub tls_server_name: Option<String>,
    }

    impl Default for Upstream {
        fn default() -> Self {
            Upstream {
                url: None,
                connect_timeout_seconds: DEFAULT_CONNECT_TIMEOUT_SECONDS,
                timeout_seconds: DEFAULT_UPSTREAM_TIMEOUT_SECONDS,
                ca_file: None,
                tls_server_name: None,
            }
        }
    }

    /// `[jwt]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Jwt {
        pub algorithms: Vec<String>,
        pub secret: Option<String>,
        pub secret_file: Option<PathBuf>,
        pub secret_env: Option<String>,
        pub public_key_file: Option<PathBuf>,
        pub jwks_file: Option<PathBuf>,
        pub jwks_url: Option<String>,
        pub jwks_refresh_seconds: u64,
        pub jwks_min_refetch_seconds: u64,
        pub jwks_fetch_timeout_seconds: u64,
        pub jwks_ca_file: Option<PathBuf>,
        pub oidc_discovery_url: Option<String>,
        pub issuer: Option<String>,
        pub audience: Vec<String>,
        pub leeway_seconds: u64,
        pub user_claim: String,
        pub required_claims: BTreeMap<String, String>,
        pub required_typ: Option<String>,
    }

    impl Default for Jwt {
        fn default() -> Self {
            Jwt {
                algorithms: Vec::new(),
                secret: None,
                secret_file: None,
                secret_env: None,
                public_key_file: None,
                jwks_file: None,
                jwks_url: None,
                jwks_refresh_seconds: DEFAULT_JWKS_REFRESH_SECONDS,
                jwks_min_refetch_seconds: DEFAULT_JWKS_MIN_REFETCH_SECONDS,
                jwks_fetch_timeout_seconds: DEFAULT_JWKS_FETCH_TIMEOUT_SECONDS,
                jwks_ca_file: None,
                oidc_discovery_url: None,
                issuer: None,
                audience: Vec::new(),
                leeway_seconds: DEFAULT_LEEWAY_SECONDS,
                user_claim: DEFAULT_USER_CLAIM.into(),
                required_claims: BTreeMap::new(),
                required_typ: None,
            }
        }
    }

    /// `[token]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Token {
        pub sources: Vec<String>,
    }

    impl Default for Token {
        fn default() -> Self {
            Token {
                sources: vec!["header:Authorization".into(), "cookie:access_token".into()],
            }
        }
    }

    /// One `[[capture]]` entry.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Capture {
        pub path: String,
        #[serde(default = "default_capture_method")]
        pub method: String,
        pub from: String,
        pub refresh_token: Option<String>,
        pub presents: Option<String>,
    }

    fn default_capture_method() -> String {
        "POST".into()
    }

    /// `[store]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Store {
        pub backend: String,
        pub strategy: String,
        pub sqlite_path: PathBuf,
        pub postgres_url: Option<String>,
        pub postgres_ca_file: Option<PathBuf>,
        pub prune_interval_seconds: u64,
        pub revocation_log_days: u64,
        pub idle_timeout_seconds: u64,
        pub max_sessions_per_user: u32,
    }

    impl Default for Store {
        fn default() -> Self {
            Store {
                backend: "sqlite".into(),
                strategy: "allowlist".into(),
                sqlite_path: DEFAULT_SQLITE_PATH.into(),
                postgres_url: None,
                postgres_ca_file: None,
                prune_interval_seconds: DEFAULT_PRUNE_INTERVAL_SECONDS,
                revocation_log_days: DEFAULT_REVOCATION_LOG_DAYS,
                idle_timeout_seconds: DEFAULT_STORE_IDLE_TIMEOUT_SECONDS,
                max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            }
        }
    }

    /// `[routes]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Routes {
        pub logout: String,
        pub logout_all: String,
        pub sessions: String,
        pub public: Vec<String>,
        pub forward_auth: String,
        pub revoke: String,
        pub backchannel_logout: String,
    }

    impl Default for Routes {
        fn default() -> Self {
            Routes {
                logout: DEFAULT_LOGOUT.into(),
                logout_all: DEFAULT_LOGOUT_ALL.into(),
                sessions: DEFAULT_SESSIONS.into(),
                public: Vec::new(),
                forward_auth: String::new(),
                revoke: String::new(),
                backchannel_logout: DEFAULT_BACKCHANNEL_LOGOUT.into(),
            }
        }
    }

    /// `[forward]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Forward {
        pub user_header: String,
        pub claim_headers: BTreeMap<String, String>,
        pub pass_authorization: bool,
        pub trusted_proxies: Vec<String>,
    }

    impl Default for Forward {
        fn default() -> Self {
            Forward {
                user_header: DEFAULT_USER_HEADER.into(),
                claim_headers: BTreeMap::new(),
                pass_authorization: true,
                trusted_proxies: Vec::new(),
            }
        }
    }

    /// `[admin]`
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Admin {
        pub token_env: Option<String>,
        pub token_file: Option<PathBuf>,
    }
}

/// The validated configuration every other module works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[jwt]`: the rules and where the keys come from (read by [`crate::jwt::keys`]).
    pub jwt: JwtConfig,
    /// `[token]`: where a request's token is read from, in order.
    pub token_sources: Vec<TokenSource>,
    /// `[[capture]]`
    pub capture: Vec<CaptureRoute>,
    /// `[store]`
    pub store: StoreConfig,
    /// `[routes]`
    pub routes: RoutesConfig,
    /// `[forward]`
    pub forward: ForwardConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[cache]`
    pub cache: CacheConfig,
    /// `[[rules]]`, in file order.
    pub rules: Rules,
}

/// `[jwt]`, parsed.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// What a token must satisfy.
    pub settings: VerifierSettings,
    /// Where the keys come from.
    pub source: KeySource,
}

/// `[cache]`, parsed (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Whether verdicts are cached.
    pub enabled: bool,
    /// The most verdicts held.
    pub max_entries: usize,
    /// The longest a verdict may be acted on without the feed read up to date.
    pub max_staleness: Duration,
    /// How often the feed is read (the fallback poll on PostgreSQL).
    pub feed_poll: Duration,
}

/// `[server]`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// Health, readiness, metrics and the admin API.
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Concurrent streams per HTTP/2 connection, and so the backend connections one
    /// client connection can hold at once (SPEC §10).
    pub http2_max_streams: u32,
    /// From accept to the first request head, and for every HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// From a connection's latest request to its graceful close when no other starts
    /// (an HTTP/1.1 connection waiting for its next head is also held to
    /// `header_read_timeout`, the shorter by default).
    pub idle_timeout: Duration,
    /// Open client connections of the public listener; past it, new ones are closed.
    pub max_connections: usize,
    /// Reload when the config file (or a file it names) changes, as on SIGHUP.
    pub watch_config: bool,
    /// HTTPS on the public listener (SPEC §12).
    pub tls: Option<ServerTls>,
}

/// `server.tls_*`: the public listener's certificate, and the CA of client certificates
/// when they are required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `server.tls_cert_file`: the certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// `server.tls_key_file`: its private key, PEM.
    pub key_file: PathBuf,
    /// `server.tls_client_ca_file`: clients must present a certificate signed by one of
    /// these CAs (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// `[upstream]`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The backend: scheme and authority only.
    pub url: Uri,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed until the whole response head arrives; 504 past it.
    pub timeout: Duration,
    /// `upstream.ca_file`: for an https backend, the CA certificates trusted instead of
    /// the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// `upstream.tls_server_name`: the name the backend's certificate must carry, when
    /// not the URL's host.
    pub tls_server_name: Option<String>,
}

/// One capture route (SPEC §2).
#[derive(Debug, Clone)]
pub struct CaptureRoute {
    /// Exact request path.
    pub path: String,
    /// Request method.
    pub method: Method,
    /// Where the issued token is in the response.
    pub from: CaptureSource,
    /// Where the response carries a refresh token issued with it, if it does
    /// (`refresh_token`, SPEC §15).
    pub refresh_token: Option<CaptureSource>,
    /// Where the request presents a refresh token, on a refresh route (`presents`): the
    /// route then forwards only a live refresh token.
    pub presents: Option<CaptureSource>,
}

/// Which database holds the store.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// A local SQLite file (one pod).
    Sqlite(PathBuf),
    /// A PostgreSQL server shared by replicas.
    Postgres(String),
}

/// `[store]`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// The database.
    pub backend: StoreBackend,
    /// What "live" means.
    pub strategy: StrategyKind,
    /// Interval of the background prune.
    pub prune_interval: Duration,
    /// How long feed rows are kept.
    pub revocation_log_retention: Duration,
    /// A session unused for this long is revoked (`None`: never; allowlist only).
    pub idle_timeout: Option<Duration>,
    /// The most sessions one user may hold; a login beyond it ends the user's oldest
    /// (`None`: unlimited; allowlist only).
    pub max_sessions_per_user: Option<u32>,
}

/// A public route pattern: an exact path, or a prefix (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Matches this path only.
    Exact(String),
    /// Matches every path starting with this prefix.
    Prefix(String),
}

impl PathPattern {
    /// Whether `path` (raw, as received) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// `[routes]`, parsed.
#[derive(Debug, Clone)]
pub struct RoutesConfig {
    /// Revokes the token used.
    pub logout: String,
    /// Revokes every token of the caller.
    pub logout_all: String,
    /// The caller's sessions; `None` when disabled.
    pub sessions: Option<String>,
    /// Forwarded without authentication.
    pub public: Vec<PathPattern>,
    /// Answers an ingress's authorization subrequest (SPEC §13); `None` when off.
    pub forward_auth: Option<String>,
    /// RFC 7009 token revocation; `None` when off.
    pub revoke: Option<String>,
    /// Where an identity provider posts OIDC back-channel logout tokens; `None` when
    /// disabled (SPEC §13).
    pub backchannel_logout: Option<String>,
}

/// `[forward]`, parsed.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Carries the user claim to the backend.
    pub user_header: HeaderName,
    /// More claims to pass on: (claim, header).
    pub claim_headers: Vec<(String, HeaderName)>,
    /// Keep the `Authorization` header for the backend.
    pub pass_authorization: bool,
    /// Peers whose `X-Forwarded-*` are kept and appended to.
    pub trusted_proxies: Vec<IpNet>,
}

/// `[admin]`, parsed.
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// The bearer token of the admin API; `None` turns the API off.
    pub token: Option<String>,
    /// `admin.token_file`, when the token came from a file.
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret itself.
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl Config {
    /// Reads, parses and validates a config file (key files are named, not read: see
    /// [`crate::jwt::keys`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
            )
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::from_raw(parse_raw(&text)?, base)
    }

    /// Parses and validates config text; relative file paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        Config::from_raw(parse_raw(text)?, base)
    }

    /// Validates the raw file, keys loaded.
    pub fn from_raw(raw: raw::RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let server = ServerConfig {
            listen: parse_addr("server.listen", &raw.server.listen)?,
            admin_listen: parse_addr("server.admin_listen", &raw.server.admin_listen)?,
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_seconds),
            header_read_timeout: match raw.server.header_read_timeout_seconds {
                n @ 1..=300 => Duration::from_secs(n),
                _ => {
                    return Err(ConfigError::new(
                        "server.header_read_timeout_seconds",
                        "must be between 1 and 300",
                    ))
                }
            },
            idle_timeout: match raw.server.idle_timeout_seconds {
                n @ 1..=3600 => Duration::from_secs(n),
                _ => {
                    return Err(ConfigError::new(
                        "server.idle_timeout_seconds",
                        "must be between 1 and 3600",
                    ))
                }
            },
            max_connections: match raw.server.max_connections {
                0 => {
                    return Err(ConfigError::new(
                        "server.max_connections",
                        "must be at least 1",
                    ))
                }
                n => n,
            },
            watch_config: raw.server.watch_config,
            tls: server_tls(&raw.server, base)?,
            http2_max_streams: match raw.server.http2_max_streams {
                n @ 1..=MAX_HTTP2_STREAMS => n,
                _ => {
                    return Err(ConfigError::new(
                        "server.http2_max_streams",
                        format!("must be between 1 and {MAX_HTTP2_STREAMS}"),
                    ))
                }
            },
        };
        let upstream = upstream(&raw.upstream, base)?;
        let jwt = jwt(&raw.jwt, base)?;
        let token_sources = token_sources(&raw.token.sources)?;
        let capture = raw
            .capture
            .iter()
            .enumerate()
            .map(|(i, c)| capture_route(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        // Only the first of two entries for one route would ever be used.
        for (i, c) in capture.iter().enumerate() {
            if let Some(j) = capture[..i]
                .iter()
                .position(|d| d.path == c.path && d.method == c.method)
            {
                return Err(ConfigError::new(
                    format!("capture[{i}].path"),
                    format!(
                        "{} {} is already capture[{j}]; one entry per route (use refresh_token for a second token)",
                        c.method, c.path
                    ),
                ));
            }
        }
        let store = store(&raw.store, base)?;
        let routes = routes(&raw.routes, &capture)?;
        let forward = forward(&raw.forward)?;
        let admin = admin(&raw.admin, base)?;
        let cache = cache(&raw.cache)?;
        let rules = rules(&raw.rules, &routes, &capture)?;
        Ok(Config {
            rules,
            server,
            upstream,
            jwt,
            token_sources,
            capture,
            store,
            routes,
            forward,
            admin,
            cache,
        })
    }

    /// For a reload: the keys of `new` that differ from `self` but take effect only at
    /// a restart (the listeners, the store, the verdict cache, the backend connection
    /// pool), and `new` with those kept at their current values. Everything else
    /// (`[jwt]`, `[token]`, `[[capture]]`, `[routes]`, `[forward]`, `[admin]`, and the
    /// certificate files of `server.tls_*`) is reloaded.
    pub fn keep_restart_only(&self, mut new: Config) -> (Config, Vec<&'static str>) {
        let mut changed = Vec::new();
        let mut note = |name: &'static str, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        let (a, b) = (&self.server, &new.server);
        note("server.listen", a.listen != b.listen);
        note("server.admin_listen", a.admin_listen != b.admin_listen);
        note(
            "server.shutdown_grace_seconds",
            a.shutdown_grace != b.shutdown_grace,
        );
        note(
            "server.http2_max_streams",
            a.http2_max_streams != b.http2_max_streams,
        );
        note(
            "server.header_read_timeout_seconds",
            a.header_read_timeout != b.header_read_timeout,
        );
        note(
            "server.idle_timeout_seconds",
            a.idle_timeout != b.idle_timeout,
        );
        note(
            "server.max_connections",
            a.max_connections != b.max_connections,
        );
        note("server.watch_config", a.watch_config != b.watch_config);
        // The certificate files are reloaded; turning HTTPS on or off is not.
        let tls = if a.tls.is_some() == b.tls.is_some() {
            b.tls.clone()
        } else {
            note("server.tls_cert_file", true);
            a.tls.clone()
        };
        let (a, b) = (&self.upstream, &new.upstream);
        note("upstream.url", a.url != b.url);
        note(
            "upstream.connect_timeout_seconds",
            a.connect_timeout != b.connect_timeout,
        );
        note("upstream.timeout_seconds", a.timeout != b.timeout);
        note("upstream.ca_file", a.ca_file != b.ca_file);
        note(
            "upstream.tls_server_name",
            a.tls_server_name != b.tls_server_name,
        );
        let (a, b) = (&self.store, &new.store);
        let postgres = matches!(b.backend, StoreBackend::Postgres(_));
        note(
            "store.backend",
            std::mem::discriminant(&a.backend) != std::mem::discriminant(&b.backend),
        );
        if a.backend != b.backend
            && std::mem::discriminant(&a.backend) == std::mem::discriminant(&b.backend)
        {
            note(
                if postgres {
                    "store.postgres_url"
                } else {
                    "store.sqlite_path"
                },
                true,
            );
        }
        note("store.strategy", a.strategy != b.strategy);
        note(
            "store.prune_interval_seconds",
            a.prune_interval != b.prune_interval,
        );
        note(
            "store.revocation_log_days",
            a.revocation_log_retention != b.revocation_log_retention,
        );
        note(
            "store.idle_timeout_seconds",
            a.idle_timeout != b.idle_timeout,
        );
        note(
            "store.max_sessions_per_user",
            a.max_sessions_per_user != b.max_sessions_per_user,
        );
        note("cache", self.cache != new.cache);
        new.server = ServerConfig {
            tls,
            ..self.server.clone()
        };
        new.upstream = self.upstream.clone();
        new.store = self.store.clone();
        new.cache = self.cache;
        (new, changed)
    }

    /// Files the config names (for `server.watch_config`): key material and the
    /// admin token file.
    pub fn named_files(&self) -> Vec<PathBuf> {
        use crate::jwt::keys::KeySource;
        let mut files = Vec::new();
        match &self.jwt.source {
            KeySource::SecretFile(p) | KeySource::PublicKeyFile(p) | KeySource::JwksFile(p) => {
                files.push(p.clone())
            }
            KeySource::Remote(r) => files.extend(r.fallback.iter().chain(&r.ca_file).cloned()),
            KeySource::Secret(_) | KeySource::SecretEnv(_) => {}
        }
        files.extend(self.admin.token_file.iter().cloned());
        if let Some(tls) = &self.server.tls {
            files.push(tls.cert_file.clone());
            files.push(tls.key_file.clone());
            files.extend(tls.client_ca_file.iter().cloned());
        }
        files
    }

    /// A short human summary, printed by `check-config`; `keys` says what the loaded
    /// keys are.
    pub fn summary(&self, keys: &str) -> String {
        let store = self.store.backend.to_string();
        let captures: Vec<String> = self
            .capture
            .iter()
            .map(|c| format!("{} {} ({})", c.method, c.path, c.from))
            .collect();
        format!(
            "listen {} (admin {}) -> upstream {}\n\
             jwt: {} with {}\n\
             store: {}, strategy {}\n\
             cache: {}\n\
             capture: {}\n\
             public routes: {}\n\
             rules: {}\n\
             forward-auth: {}, RFC 7009 revocation: {}\n\
             identity header: {}{}\n\
             admin API: {}{}",
            self.server.listen,
            self.server.admin_listen,
            self.upstream.url,
            self.jwt
                .settings
                .algorithms
                .iter()
                .map(|a| crate::jwt::algorithm_name(*a))
                .collect::<Vec<_>>()
                .join(", "),
            keys,
            store,
            self.store.strategy,
            if self.cache.enabled {
                format!(
                    "on, {} entries, revocations seen within {} ms",
                    self.cache.max_entries,
                    self.cache.max_staleness.as_millis()
                )
            } else {
                "off (the store is read on every request)".into()
            },
            if captures.is_empty() {
                "none".into()
            } else {
                captures.join(", ")
            },
            self.routes.public.len(),
            self.rules.len(),
            self.routes.forward_auth.as_deref().unwrap_or("off"),
            self.routes.revoke.as_deref().unwrap_or("off"),
            self.forward.user_header,
            if self.forward.claim_headers.is_empty() {
                String::new()
            } else {
                format!(" (+{} claim headers)", self.forward.claim_headers.len())
            },
            if self.admin.token.is_some() {
                "on"
            } else {
                "off (no admin token)"
            },
            self.session_summary(),
        )
    }

    /// The summary lines of the session features that are on (SPEC §13), each starting
    /// with a line break; empty when all are off.
    fn session_summary(&self) -> String {
        let mut lines = String::new();
        if let Some(path) = &self.routes.backchannel_logout {
            lines.push_str(&format!(
                "\nback-channel logout: POST {path} (OIDC logout tokens, signed by the jwt keys)"
            ));
        }
        if let Some(timeout) = self.store.idle_timeout {
            lines.push_str(&format!(
                "\nidle sessions: revoked after {} s unused (last use written every {} s)",
                timeout.as_secs(),
                crate::idle::interval_for(timeout).as_secs()
            ));
        }
        if let Some(max) = self.store.max_sessions_per_user {
            lines.push_str(&format!(
                "\nsessions per user: at most {max} (a login beyond it ends the oldest)"
            ));
        }
        lines
    }
}

/// Parses TOML into the raw layer, naming the full dotted key on any error.
pub fn parse_raw(text: &str) -> Result<raw::RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("", toml_message(text, &e)))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(key, toml_message(text, e.inner()))
    })
}

/// The first line of a toml error, without its source excerpt, with its line number.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e
        .message()
        .trim()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{msg} (line {line})")
        }
        None => msg,
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{value:?} is not an address like 127.0.0.1:8080"),
        )
    })
}

fn nonzero(key: &str, seconds: u64) -> Result<Duration, ConfigError> {
    if seconds == 0 {
        return Err(ConfigError::new(key, "must be at least 1 second"));
    }
    Ok(Duration::from_secs(seconds))
}

fn upstream(raw: &raw::Upstream, base: &Path) -> Result<UpstreamConfig, ConfigError> {
    let key = "upstream.url";
    let text = raw
        .url
        .as_deref()
        .ok_or_else(|| ConfigError::new(key, "is required"))?;
    let url: Uri = text
        .parse()
        .map_err(|_| ConfigError::new(key, format!("{text:?} is not a URL")))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(ConfigError::new(
                key,
                format!("scheme {other:?} is not supported; use http:// or https://"),
            ))
        }
        None => {
            return Err(ConfigError::new(
                key,
                format!("{text:?} needs a scheme, e.g. http://127.0.0.1:3000"),
            ))
        }
    }
    if url.authority().is_none() {
        return Err(ConfigError::new(key, format!("{text:?} has no host")));
    }
    let https = url.scheme_str() == Some("https");
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ConfigError::new(
            key,
            "credentials in the URL are not supported",
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        // The request path is forwarded as received; a base path would make the proxy and
        // the backend disagree on what was asked for.
        return Err(ConfigError::new(
            key,
            "must not have a path or query (the request path is forwarded as is)",
        ));
    }
    Ok(UpstreamConfig {
        url,
        connect_timeout: nonzero(
            "upstream.connect_timeout_seconds",
            raw.connect_timeout_seconds,
        )?,
        timeout: nonzero("upstream.timeout_seconds", raw.timeout_seconds)?,
        ca_file: match (&raw.ca_file, https) {
            (Some(p), true) => Some(base.join(p)),
            (Some(_), false) => {
                return Err(ConfigError::new(
                    "upstream.ca_file",
                    "is used only with an https:// upstream.url",
                ))
            }
            (None, _) => None,
        },
        tls_server_name: match (&raw.tls_server_name, https) {
            (Some(name), true) => Some(name.clone()),
            (Some(_), false) => {
                return Err(ConfigError::new(
                    "upstream.tls_server_name",
                    "is used only with an https:// upstream.url",
                ))
            }
            (None, _) => None,
        },
    })
}

/// `server.tls_*`: both files or neither; a client CA only with them.
fn server_tls(raw: &raw::Server, base: &Path) -> Result<Option<ServerTls>, ConfigError> {
    match (&raw.tls_cert_file, &raw.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls {
            cert_file: base.join(cert),
            key_file: base.join(key),
            client_ca_file: raw.tls_client_ca_file.as_ref().map(|p| base.join(p)),
        })),
        (None, None) if raw.tls_client_ca_file.is_some() => Err(ConfigError::new(
            "server.tls_client_ca_file",
            "needs server.tls_cert_file and server.tls_key_file",
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            "server.tls_key_file",
            "is required with server.tls_cert_file",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "server.tls_cert_file",
            "is required with server.tls_key_file",
        )),
    }
}

/// The fetch settings of a remote key set.
fn remote(raw: &raw::Jwt, base: &Path, provider: Provider) -> Result<Remote, ConfigError> {
    let seconds = |key: &str, n: u64, range: std::ops::RangeInclusive<u64>| {
        if range.contains(&n) {
            Ok(Duration::from_secs(n))
        } else {
            Err(ConfigError::new(
                key,
                format!("must be between {} and {}", range.start(), range.end()),
            ))
        }
    };
    Ok(Remote {
        provider,
        fallback: raw.jwks_file.as_ref().map(|p| base.join(p)),
        refresh: seconds(
            "jwt.jwks_refresh_seconds",
            raw.jwks_refresh_seconds,
            30..=86_400,
        )?,
        min_refetch: seconds(
            "jwt.jwks_min_refetch_seconds",
            raw.jwks_min_refetch_seconds,
            1..=3600,
        )?,
        fetch_timeout: seconds(
            "jwt.jwks_fetch_timeout_seconds",
            raw.jwks_fetch_timeout_seconds,
            1..=60,
        )?,
        ca_file: raw.jwks_ca_file.as_ref().map(|p| base.join(p)),
    })
}

fn jwt(raw: &raw::Jwt, base: &Path) -> Result<JwtConfig, ConfigError> {
    if raw.algorithms.is_empty() {
        return Err(ConfigError::new(
            "jwt.algorithms",
            "is required, e.g. [\"HS256\"]",
        ));
    }
    let mut algorithms = Vec::new();
    for name in &raw.algorithms {
        let alg = crate::jwt::parse_algorithm(name).ok_or_else(|| {
            ConfigError::new(
                "jwt.algorithms",
                format!("{name:?} is not supported (HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"),
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    let hmac = algorithms
        .iter()
        .filter(|a| crate::jwt::is_hmac(**a))
        .count();
    if hmac != 0 && hmac != algorithms.len() {
        return Err(ConfigError::new(
            "jwt.algorithms",
            "mixes HMAC (HS*) with public-key algorithms; one family of keys only",
        ));
    }
    let secret_keys = [
        raw.secret.is_some(),
        raw.secret_file.is_some(),
        raw.secret_env.is_some(),
    ];
    // jwks_file beside jwks_url is the fallback set, not a second source.
    let public_keys = [
        raw.public_key_file.is_some(),
        raw.jwks_file.is_some() && raw.jwks_url.is_none(),
        raw.jwks_url.is_some(),
        raw.oidc_discovery_url.is_some(),
    ];
    let n_secret = secret_keys.iter().filter(|x| **x).count();
    let n_public = public_keys.iter().filter(|x| **x).count();
    const ONE_OF: &str = "set exactly one of secret, secret_file, secret_env, public_key_file, jwks_file, jwks_url (with jwks_file as its fallback), oidc_discovery_url";
    if n_secret > 0 && n_public > 0 {
        return Err(ConfigError::new(
            "jwt",
            format!("mixes an HMAC secret with public keys; {ONE_OF}"),
        ));
    }
    if n_secret + n_public > 1 {
        return Err(ConfigError::new("jwt", ONE_OF));
    }
    if raw.jwks_ca_file.is_some() && raw.jwks_url.is_none() && raw.oidc_discovery_url.is_none() {
        return Err(ConfigError::new(
            "jwt.jwks_ca_file",
            "is used only with jwt.jwks_url or jwt.oidc_discovery_url",
        ));
    }
    let first = algorithms[0];
    // Named here, read by jwt::keys (at start, check-config and reload), so that the
    // commands that only touch the store need no key material.
    let source = if hmac > 0 {
        if let Some(s) = &raw.secret {
            if s.len() < MIN_HMAC_SECRET_BYTES {
                return Err(ConfigError::new(
                    "jwt.secret",
                    format!(
                        "the HMAC secret is {} bytes; at least {MIN_HMAC_SECRET_BYTES} are required (RFC 7518 §3.2)",
                        s.len()
                    ),
                ));
            }
            KeySource::Secret(s.as_bytes().to_vec())
        } else if let Some(p) = &raw.secret_file {
            KeySource::SecretFile(base.join(p))
        } else if let Some(var) = &raw.secret_env {
            KeySource::SecretEnv(var.clone())
        } else {
            return Err(ConfigError::new(
                "jwt.algorithms",
                format!("{first:?} needs jwt.secret, jwt.secret_file or jwt.secret_env"),
            ));
        }
    } else if let Some(p) = &raw.public_key_file {
        KeySource::PublicKeyFile(base.join(p))
    } else if let Some(url) = &raw.jwks_url {
        let url = check_key_url(url).map_err(|e| ConfigError::new("jwt.jwks_url", e))?;
        KeySource::Remote(remote(raw, base, Provider::Jwks(url))?)
    } else if let Some(url) = &raw.oidc_discovery_url {
        let url = check_key_url(url).map_err(|e| ConfigError::new("jwt.oidc_discovery_url", e))?;
        KeySource::Remote(remote(raw, base, Provider::Discovery(url))?)
    } else if let Some(p) = &raw.jwks_file {
        KeySource::JwksFile(base.join(p))
    } else {
        return Err(ConfigError::new(
            "jwt.algorithms",
            format!("{first:?} needs jwt.public_key_file, jwt.jwks_file, jwt.jwks_url or jwt.oidc_discovery_url"),
        ));
    };
    if raw.user_claim.is_empty() {
        return Err(ConfigError::new("jwt.user_claim", "must not be empty"));
    }
    if raw.issuer.as_deref() == Some("") {
        return Err(ConfigError::new(
            "jwt.issuer",
            "must not be empty (remove the key to skip the check)",
        ));
    }
    if raw.audience.iter().any(|a| a.is_empty()) {
        return Err(ConfigError::new(
            "jwt.audience",
            "must not contain an empty string",
        ));
    }
    if raw.leeway_seconds > 300 {
        return Err(ConfigError::new(
            "jwt.leeway_seconds",
            "more than 300 seconds of clock skew is not accepted",
        ));
    }
    for (claim, value) in &raw.required_claims {
        let key = format!("jwt.required_claims.{claim}");
        if claim.is_empty() || value.is_empty() {
            return Err(ConfigError::new(
                key,
                "needs a claim name and a non-empty value",
            ));
        }
        if claim == &raw.user_claim || ["exp", "nbf", "iat"].contains(&claim.as_str()) {
            return Err(ConfigError::new(
                key,
                "names a claim tokengate already checks (jwt.user_claim, exp, nbf, iat)",
            ));
        }
    }
    let required_typ = match raw.required_typ.as_deref().map(str::trim) {
        Some("") => {
            return Err(ConfigError::new(
                "jwt.required_typ",
                "must name a type, e.g. \"at+jwt\" (RFC 9068)",
            ))
        }
        other => other.map(str::to_owned),
    };
    Ok(JwtConfig {
        source,
        settings: VerifierSettings {
            algorithms,
            issuer: raw.issuer.clone(),
            audience: raw.audience.clone(),
            leeway: raw.leeway_seconds,
            user_claim: raw.user_claim.clone(),
            required_claims: raw
                .required_claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            required_typ,
        },
    })
}

fn token_sources(raw: &[String]) -> Result<Vec<TokenSource>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "token.sources",
            "needs at least one source, e.g. \"header:Authorization\"",
        ));
    }
    raw.iter()
        .map(|s| TokenSource::parse(s).map_err(|e| ConfigError::new("token.sources", e)))
        .collect()
}

fn capture_route(index: usize, raw: &raw::Capture) -> Result<CaptureRoute, ConfigError> {
    let key = |k: &str| format!("capture[{index}].{k}");
    check_route_path(&key("path"), &raw.path)?;
    let method = Method::from_bytes(raw.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
        ConfigError::new(
            key("method"),
            format!("{:?} is not an HTTP method", raw.method),
        )
    })?;
    let from = CaptureSource::parse(&raw.from).map_err(|e| ConfigError::new(key("from"), e))?;
    let optional = |name: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| CaptureSource::parse(t).map_err(|e| ConfigError::new(key(name), e)))
            .transpose()
    };
    let refresh_token = optional("refresh_token", &raw.refresh_token)?;
    let presents = optional("presents", &raw.presents)?;
    if let Some(CaptureSource::Json(pointer)) = &presents {
        if pointer.is_empty() {
            return Err(ConfigError::new(
                key("presents"),
                "json: needs a pointer to the field that holds the refresh token",
            ));
        }
    }
    if refresh_token.as_ref() == Some(&from) {
        return Err(ConfigError::new(
            key("refresh_token"),
            "must differ from capture.from: one place cannot hold both tokens",
        ));
    }
    Ok(CaptureRoute {
        path: raw.path.clone(),
        method,
        from,
        refresh_token,
        presents,
    })
}

/// A configured route must be a plain absolute path, so that it can be compared with
/// the raw request path byte for byte.
fn check_route_path(key: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return Err(ConfigError::new(key, format!("{path:?} must start with /")));
    }
    if path.contains(['?', '#', '%', '\\', ' ']) || crate::gate::path_is_unsafe(path) {
        return Err(ConfigError::new(
            key,
            format!("{path:?} must be a plain path (no query, %-escapes or dot segments)"),
        ));
    }
    Ok(())
}

/// `store.postgres_ca_file` as libpq's `sslrootcert` parameter of the URL (where the
/// store reads it, as from a URL given with it).
fn with_root_certificate(url: &str, ca: &Path) -> Result<String, ConfigError> {
    let key = "store.postgres_ca_file";
    if url.contains("sslrootcert=") {
        return Err(ConfigError::new(
            key,
            "store.postgres_url already names sslrootcert; set one of them",
        ));
    }
    let path = ca
        .to_str()
        .filter(|p| {
            !p.chars()
                .any(|c| c.is_whitespace() || c == '\'' || c == '&')
        })
        .ok_or_else(|| ConfigError::new(key, "must be a path without spaces, quotes or '&'"))?;
    Ok(if url.contains("://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslrootcert={}", path.replace('%', "%25"))
    } else {
        format!("{url} sslrootcert={path}")
    })
}

fn store(raw: &raw::Store, base: &Path) -> Result<StoreConfig, ConfigError> {
    let strategy: StrategyKind = raw
        .strategy
        .parse()
        .map_err(|e: String| ConfigError::new("store.strategy", e))?;
    if raw.postgres_ca_file.is_some() && raw.backend != "postgres" {
        return Err(ConfigError::new(
            "store.postgres_ca_file",
            "is used only with backend = \"postgres\"",
        ));
    }
    let backend = match raw.backend.as_str() {
        "sqlite" => {
            if raw.sqlite_path.as_os_str().is_empty() {
                return Err(ConfigError::new("store.sqlite_path", "must not be empty"));
            }
            StoreBackend::Sqlite(base.join(&raw.sqlite_path))
        }
        "postgres" => {
            let url = raw.postgres_url.clone().ok_or_else(|| {
                ConfigError::new(
                    "store.postgres_url",
                    "is required for backend = \"postgres\"",
                )
            })?;
            let url = match &raw.postgres_ca_file {
                Some(ca) => with_root_certificate(&url, &base.join(ca))?,
                None => url,
            };
            // Checked here so that a typo fails at load; the message never repeats the
            // URL, which may hold a password.
            crate::store::postgres::parse_url(&url)
                .map_err(|e| ConfigError::new("store.postgres_url", e))?;
            StoreBackend::Postgres(url)
        }
        other => {
            return Err(ConfigError::new(
                "store.backend",
                format!("{other:?} is not one of sqlite, postgres"),
            ))
        }
    };
    Ok(StoreConfig {
        backend,
        strategy,
        prune_interval: nonzero("store.prune_interval_seconds", raw.prune_interval_seconds)?,
        revocation_log_retention: {
            let days = raw.revocation_log_days;
            if !(1..=3650).contains(&days) {
                return Err(ConfigError::new(
                    "store.revocation_log_days",
                    "must be between 1 and 3650",
                ));
            }
            Duration::from_secs(days * 86_400)
        },
        idle_timeout: match raw.idle_timeout_seconds {
            0 => None,
            n if n > MAX_STORE_IDLE_TIMEOUT_SECONDS => {
                return Err(ConfigError::new(
                    "store.idle_timeout_seconds",
                    format!("must be at most {MAX_STORE_IDLE_TIMEOUT_SECONDS} (0 to turn it off)"),
                ))
            }
            n => Some(allowlist_only(
                "store.idle_timeout_seconds",
                strategy,
                Duration::from_secs(n),
            )?),
        },
        max_sessions_per_user: match raw.max_sessions_per_user {
            0 => None,
            n if n > MAX_SESSIONS_PER_USER => {
                return Err(ConfigError::new(
                    "store.max_sessions_per_user",
                    format!("must be at most {MAX_SESSIONS_PER_USER} (0 for no limit)"),
                ))
            }
            n => Some(allowlist_only("store.max_sessions_per_user", strategy, n)?),
        },
    })
}

/// A session feature's value, refused under a strategy that keeps no sessions.
fn allowlist_only<T>(key: &str, strategy: StrategyKind, value: T) -> Result<T, ConfigError> {
    if strategy != StrategyKind::Allowlist {
        return Err(ConfigError::new(
            key,
            format!(
                "needs strategy = \"allowlist\": the {strategy} strategy keeps no sessions (set 0 to turn it off)"
            ),
        ));
    }
    Ok(value)
}

/// `[cache]`: the bound must leave room for at least one poll, and every value must be
/// one a revocation guarantee can rest on.
fn cache(raw: &raw::Cache) -> Result<CacheConfig, ConfigError> {
    let millis = |key: &str, value: u64| {
        if !(1..=MAX_CACHE_MILLIS).contains(&value) {
            return Err(ConfigError::new(
                key,
                format!("must be between 1 and {MAX_CACHE_MILLIS} milliseconds"),
            ));
        }
        Ok(Duration::from_millis(value))
    };
    let max_staleness = millis("cache.max_staleness_ms", raw.max_staleness_ms)?;
    let feed_poll = millis("cache.feed_poll_ms", raw.feed_poll_ms)?;
    if raw.max_staleness_ms < raw.feed_poll_ms {
        return Err(ConfigError::new(
            "cache.max_staleness_ms",
            format!(
                "{} is less than cache.feed_poll_ms ({}): the cache would never be current",
                raw.max_staleness_ms, raw.feed_poll_ms
            ),
        ));
    }
    if raw.max_entries == 0 && raw.enabled {
        return Err(ConfigError::new(
            "cache.max_entries",
            "must be at least 1 when cache.enabled = true",
        ));
    }
    if raw.max_entries > MAX_CACHE_ENTRIES {
        return Err(ConfigError::new(
            "cache.max_entries",
            format!("must be at most {MAX_CACHE_ENTRIES}"),
        ));
    }
    Ok(CacheConfig {
        enabled: raw.enabled,
        max_entries: usize::try_from(raw.max_entries).unwrap_or(usize::MAX),
        max_staleness,
        feed_poll,
    })
}

fn routes(raw: &raw::Routes, capture: &[CaptureRoute]) -> Result<RoutesConfig, ConfigError> {
    check_route_path("routes.logout", &raw.logout)?;
    check_route_path("routes.logout_all", &raw.logout_all)?;
    if raw.logout == raw.logout_all {
        return Err(ConfigError::new(
            "routes.logout_all",
            "must differ from routes.logout",
        ));
    }
    let sessions = if raw.sessions.is_empty() {
        None
    } else {
        check_route_path("routes.sessions", &raw.sessions)?;
        if raw.sessions == raw.logout || raw.sessions == raw.logout_all {
            return Err(ConfigError::new(
                "routes.sessions",
                "must differ from the logout routes",
            ));
        }
        Some(raw.sessions.trim_end_matches('/').to_string())
    };
    let public = raw
        .public
        .iter()
        .enumerate()
        .map(|(i, p)| path_pattern(&format!("routes.public[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()?;
    let optional = |key: &str, path: &str| -> Result<Option<String>, ConfigError> {
        if path.is_empty() {
            return Ok(None);
        }
        check_route_path(key, path)?;
        Ok(Some(path.trim_end_matches('/').to_string()).filter(|p| !p.is_empty()))
    };
    let forward_auth = optional("routes.forward_auth", &raw.forward_auth)?;
    let revoke = optional("routes.revoke", &raw.revoke)?;
    let backchannel_logout = optional("routes.backchannel_logout", &raw.backchannel_logout)?;
    // Our own routes must never be shadowed by an unauthenticated one, nor by another.
    let own: Vec<(&str, &str)> = [
        ("routes.logout", Some(raw.logout.as_str())),
        ("routes.logout_all", Some(raw.logout_all.as_str())),
        ("routes.sessions", sessions.as_deref()),
        ("routes.forward_auth", forward_auth.as_deref()),
        ("routes.revoke", revoke.as_deref()),
        ("routes.backchannel_logout", backchannel_logout.as_deref()),
    ]
    .into_iter()
    .filter_map(|(key, path)| path.map(|p| (key, p)))
    .collect();
    for (i, (key, route)) in own.iter().enumerate() {
        if let Some((other, _)) = own[..i].iter().find(|(_, r)| r == route) {
            return Err(ConfigError::new(
                *key,
                format!("{route} is already {other}"),
            ));
        }
    }
    // Forward-auth answers every path under its route (Envoy's path_prefix).
    if let Some(fa) = &forward_auth {
        let under = format!("{fa}/");
        if let Some((key, route)) = own.iter().find(|(_, r)| r.starts_with(&under)) {
            return Err(ConfigError::new(
                *key,
                format!("{route} is under routes.forward_auth ({fa}), which answers every path below it"),
            ));
        }
    }
    let own: Vec<&str> = own.into_iter().map(|(_, route)| route).collect();
    for route in &own {
        if public.iter().any(|p| p.matches(route)) {
            return Err(ConfigError::new(
                "routes.public",
                format!("would make {route} public"),
            ));
        }
        if capture.iter().any(|c| c.path == *route) {
            return Err(ConfigError::new(
                "capture",
                format!("{route} is a tokengate route and cannot be captured"),
            ));
        }
    }
    Ok(RoutesConfig {
        logout: raw.logout.clone(),
        logout_all: raw.logout_all.clone(),
        sessions,
        public,
        forward_auth,
        revoke,
        backchannel_logout,
    })
}

/// A route pattern as written: an exact path, or a prefix ending in `*`.
fn path_pattern(key: &str, text: &str) -> Result<PathPattern, ConfigError> {
    match text.strip_suffix('*') {
        Some(prefix) => {
            check_route_path(key, prefix)?;
            Ok(PathPattern::Prefix(prefix.to_string()))
        }
        None => {
            check_route_path(key, text)?;
            Ok(PathPattern::Exact(text.to_string()))
        }
    }
}

/// The methods a rule may name: those tokengate forwards (`CONNECT` is refused first).
const RULE_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

/// `[[rules]]` (SPEC §13), checked as a whole: every path, method, scope and claim, and
/// no rule that could never match (behind a public, captured or tokengate route, or
/// behind an earlier rule that covers every request it would).
fn rules(
    raw: &[raw::Rule],
    routes: &RoutesConfig,
    capture: &[CaptureRoute],
) -> Result<Rules, ConfigError> {
    let mut out: Vec<Rule> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = |field: &str| format!("rules[{i}].{field}");
        let path = path_pattern(&key("path"), &r.path)?;
        let methods = r
            .methods
            .as_deref()
            .map(|list| rule_methods(i, list))
            .transpose()?;
        let scopes = rule_scopes(i, r.scopes.as_deref())?;
        let claims = rule_claims(i, r.claims.as_ref())?;
        let never = |why: String| {
            Err(ConfigError::new(
                key("path"),
                format!("can never match: {why}"),
            ))
        };
        let own = [
            Some(routes.logout.as_str()),
            Some(routes.logout_all.as_str()),
            routes.forward_auth.as_deref(),
            routes.revoke.as_deref(),
            routes.backchannel_logout.as_deref(),
        ];
        if let PathPattern::Exact(p) = &path {
            let sessions = routes
                .sessions
                .as_deref()
                .is_some_and(|s| p == s || p.starts_with(&format!("{s}/")));
            if sessions || own.contains(&Some(p.as_str())) {
                return never(format!(
                    "{p} is a tokengate route, answered by tokengate itself"
                ));
            }
            let captured = capture.iter().filter(|c| c.path == *p);
            let captured: Vec<&Method> = captured.map(|c| &c.method).collect();
            if let Some(methods) = &methods {
                if methods.iter().all(|m| captured.contains(&m)) {
                    return never(format!("{p} is a capture route, forwarded without a token"));
                }
            }
        }
        if let Some(k) = routes.public.iter().position(|p| covers(p, &path)) {
            return never(format!(
                "routes.public[{k}] makes every path it covers public (no token to check)"
            ));
        }
        let rule = Rule::new(path, methods, scopes, claims);
        if let Some(j) = out.iter().position(|earlier| {
            covers(&earlier.path, &rule.path)
                && match (&earlier.methods, &rule.methods) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
                }
        }) {
            return never(format!(
                "rules[{j}] comes first and covers every request it would"
            ));
        }
        out.push(rule);
    }
    Ok(Rules::new(out))
}

/// `rules[i].methods`: upper-case methods that tokengate forwards, at least one.
fn rule_methods(i: usize, list: &[String]) -> Result<Vec<Method>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            format!("rules[{i}].methods"),
            "names no method; leave it out to cover every method",
        ));
    }
    let mut methods: Vec<Method> = Vec::new();
    for (j, m) in list.iter().enumerate() {
        let method = RULE_METHODS
            .contains(&m.as_str())
            .then(|| Method::from_bytes(m.as_bytes()).ok())
            .flatten();
        let Some(method) = method else {
            let upper = m.to_ascii_uppercase();
            let hint = if RULE_METHODS.contains(&upper.as_str()) {
                format!("methods are upper case: {upper}")
            } else {
                format!("one of {}", RULE_METHODS.join(", "))
            };
            return Err(ConfigError::new(
                format!("rules[{i}].methods[{j}]"),
                format!("{m:?} is not a method a rule can cover ({hint})"),
            ));
        };
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    Ok(methods)
}

/// `rules[i].scopes`: RFC 6749 §3.3 scope tokens (`1*( %x21 / %x23-5B / %x5D-7E )`);
/// absent is none required, empty is a mistake.
fn rule_scopes(i: usize, list: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.is_empty() {
        return Err(ConfigError::new(
            format!("rules[{i}].scopes"),
            "names no scope; leave it out to require none",
        ));
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    };
    if let Some((j, scope)) = list.iter().enumerate().find(|(_, s)| !token(s)) {
        return Err(ConfigError::new(
            format!("rules[{i}].scopes[{j}]"),
            format!("{scope:?} is not a scope (RFC 6749 §3.3: printable ASCII without spaces, '\"' or '\\')"),
        ));
    }
    Ok(list.to_vec())
}

/// `rules[i].claims`: names with non-empty values; absent is none required, empty is a
/// mistake.
fn rule_claims(
    i: usize,
    map: Option<&BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.is_empty() {
        return Err(ConfigError::new(
            format!("rules[{i}].claims"),
            "names no claim; leave it out to require none",
        ));
    }
    if let Some((name, _)) = map.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
        return Err(ConfigError::new(
            format!("rules[{i}].claims.{name}"),
            "a claim needs a name and a non-empty value",
        ));
    }
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Whether every path `inner` matches is matched by `outer`.
fn covers(outer: &PathPattern, inner: &PathPattern) -> bool {
    match (outer, inner) {
        (PathPattern::Exact(a), PathPattern::Exact(b)) => a == b,
        (PathPattern::Exact(_), PathPattern::Prefix(_)) => false,
        (PathPattern::Prefix(a), PathPattern::Exact(b) | PathPattern::Prefix(b)) => {
            b.starts_with(a.as_str())
        }
    }
}

/// Headers the proxy owns or that frame the message: never usable as identity headers.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "set-cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "x-request-id",
];

fn identity_header(key: &str, name: &str) -> Result<HeaderName, ConfigError> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(key, format!("{name:?} is not a valid header name")))?;
    if RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(ConfigError::new(
            key,
            format!("{name} cannot carry identity"),
        ));
    }
    Ok(header)
}

fn forward(raw: &raw::Forward) -> Result<ForwardConfig, ConfigError> {
    let user_header = identity_header("forward.user_header", &raw.user_header)?;
    let mut claim_headers: Vec<(String, HeaderName)> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    seen.insert(
        crate::proxy::normalize_header_name(user_header.as_str()),
        "forward.user_header".into(),
    );
    for (claim, header) in &raw.claim_headers {
        let key = format!("forward.claim_headers.{claim}");
        let name = identity_header(&key, header)?;
        if let Some(other) = seen.insert(
            crate::proxy::normalize_header_name(name.as_str()),
            key.clone(),
        ) {
            return Err(ConfigError::new(
                key,
                format!("{header} is already used by {other}"),
            ));
        }
        claim_headers.push((claim.clone(), name));
    }
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "forward.trusted_proxies",
                        format!("{p:?} is not an IP or CIDR"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(ForwardConfig {
        user_header,
        claim_headers,
        pass_authorization: raw.pass_authorization,
        trusted_proxies,
    })
}

fn admin(raw: &raw::Admin, base: &Path) -> Result<AdminConfig, ConfigError> {
    if raw.token_env.is_some() && raw.token_file.is_some() {
        return Err(ConfigError::new(
            "admin",
            "set token_env or token_file, not both",
        ));
    }
    let token = if let Some(p) = &raw.token_file {
        let path = base.join(p);
        let bytes = std::fs::read(&path).map_err(|e| {
            ConfigError::new(
                "admin.token_file",
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
            )
        })?;
        let token = String::from_utf8(trim_trailing_newline(bytes))
            .map_err(|_| ConfigError::new("admin.token_file", "is not UTF-8"))?;
        Some(token)
    } else {
        let var = raw.token_env.as_deref().unwrap_or(DEFAULT_ADMIN_TOKEN_ENV);
        std::env::var(var).ok()
    };
    if token.as_deref() == Some("") {
        return Err(ConfigError::new(
            if raw.token_file.is_some() {
                "admin.token_file"
            } else {
                "admin.token_env"
            },
            "the admin token is empty",
        ));
    }
    Ok(AdminConfig {
        token,
        token_file: raw.token_file.as_ref().map(|p| base.join(p)),
    })
}

impl fmt::Display for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreBackend::Sqlite(p) => write!(f, "sqlite {}", p.display()),
            StoreBackend::Postgres(url) => {
                write!(f, "postgres {}", crate::store::postgres::redacted(url))
            }
        }
    }
}

impl fmt::Debug for StoreBackend {
    // The URL may hold a password: debug output shows the redacted form only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("."))
    }

    fn minimal(extra: &str) -> String {
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n{extra}"
        )
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let c = load(&minimal("")).unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.server.admin_listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(25));
        assert_eq!(c.server.http2_max_streams, DEFAULT_HTTP2_MAX_STREAMS);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.upstream.timeout, Duration::from_secs(60));
        assert_eq!(c.store.strategy, StrategyKind::Allowlist);
        assert_eq!(
            c.store.backend,
            StoreBackend::Sqlite(PathBuf::from("./tokengate.db"))
        );
        assert_eq!(c.routes.logout, "/logout");
        assert_eq!(c.routes.sessions.as_deref(), Some("/sessions"));
        assert_eq!(c.forward.user_header.as_str(), "x-user-id");
        assert!(c.forward.pass_authorization);
        assert_eq!(c.token_sources.len(), 2);
    }

    #[test]
    fn rules_are_parsed_in_file_order() {
        let c = load(&minimal(
            r#"
[[rules]]
path = "/admin/health"
[[rules]]
path = "/admin/*"
methods = ["POST", "DELETE"]
scopes = ["admin:write"]
claims = { role = "admin" }
"#,
        ))
        .unwrap();
        assert_eq!(c.rules.len(), 2);
        let rule = c.rules.iter().nth(1).unwrap();
        assert_eq!(rule.path, PathPattern::Prefix("/admin/".into()));
        assert_eq!(rule.methods, Some(vec![Method::POST, Method::DELETE]));
        assert_eq!(rule.scopes, ["admin:write"]);
        assert_eq!(rule.claims, [("role".to_string(), "admin".to_string())]);
        assert!(load(&minimal("")).unwrap().rules.is_empty());
    }

    #[test]
    fn a_rule_that_is_malformed_or_can_never_match_is_refused_by_its_key() {
        for (rules, key, needle) in [
            ("path = \"api\"", "rules[0].path", "must start with /"),
            ("path = \"/a/../b\"", "rules[0].path", "plain path"),
            (
                "path = \"/a\"\nscopes = []",
                "rules[0].scopes",
                "names no scope",
            ),
            (
                "path = \"/a\"\nscopes = [\"a b\"]",
                "rules[0].scopes[0]",
                "not a scope",
            ),
            (
                "path = \"/a\"\nscopes = [\"\"]",
                "rules[0].scopes[0]",
                "not a scope",
            ),
            (
                "path = \"/a\"\nmethods = []",
                "rules[0].methods",
                "names no method",
            ),
            (
                "path = \"/a\"\nmethods = [\"GET\", \"get\"]",
                "rules[0].methods[1]",
                "upper case: GET",
            ),
            (
                "path = \"/a\"\nmethods = [\"FETCH\"]",
                "rules[0].methods[0]",
                "not a method",
            ),
            (
                "path = \"/a\"\nmethods = [\"CONNECT\"]",
                "rules[0].methods[0]",
                "not a method",
            ),
            (
                "path = \"/a\"\nclaims = {}",
                "rules[0].claims",
                "names no claim",
            ),
            (
                "path = \"/a\"\nclaims = { role = \"\" }",
                "rules[0].claims.role",
                "non-empty",
            ),
            (
                "path = \"/a\"\nscope = [\"x\"]",
                "rules[0].scope",
                "unknown field",
            ),
            ("path = \"/logout\"", "rules[0].path", "tokengate route"),
            (
                "path = \"/sessions/abc\"",
                "rules[0].path",
                "tokengate route",
            ),
            (
                "path = \"/static/img\"",
                "rules[0].path",
                "routes.public[0]",
            ),
            ("path = \"/static/*\"", "rules[0].path", "routes.public[0]"),
            (
                "path = \"/login\"\nmethods = [\"POST\"]",
                "rules[0].path",
                "capture route",
            ),
        ] {
            let text = minimal(&format!(
                "[routes]\npublic = [\"/static/*\"]\n[[capture]]\npath = \"/login\"\nfrom = \"json:/t\"\n[[rules]]\n{rules}"
            ));
            let e = load(&text).unwrap_err();
            assert_eq!(e.key, key, "{rules}: {e}");
            assert!(e.to_string().contains(needle), "{rules}: {e}");
        }
        // A rule behind an earlier one that covers all it would.
        for (first, second) in [
            ("path = \"/a/*\"", "path = \"/a/b\""),
            ("path = \"/a/*\"", "path = \"/a/b/*\"\nmethods = [\"GET\"]"),
            (
                "path = \"/a\"\nmethods = [\"GET\", \"POST\"]",
                "path = \"/a\"\nmethods = [\"POST\"]",
            ),
        ] {
            let e = load(&minimal(&format!(
                "[[rules]]\n{first}\n[[rules]]\n{second}"
            )))
            .unwrap_err();
            assert_eq!(e.key, "rules[1].path", "{e}");
            assert!(e.to_string().contains("rules[0] comes first"), "{e}");
        }
        // Narrower first, broader after: both can match.
        let ok = "[[rules]]\npath = \"/a/b\"\n[[rules]]\npath = \"/a/*\"\n[[rules]]\npath = \"/a/*\"\nmethods = [\"GET\"]";
        assert!(load(&minimal(
            &ok.replace("\n[[rules]]\npath = \"/a/*\"\nmethods = [\"GET\"]", "")
        ))
        .is_ok());
        let e = load(&minimal(ok)).unwrap_err();
        assert_eq!(e.key, "rules[2].path");
        let ok = "[[rules]]\npath = \"/a\"\nmethods = [\"GET\"]\n[[rules]]\npath = \"/a\"";
        assert!(load(&minimal(ok)).is_ok());
        let ok = "[[capture]]\npath = \"/login\"\nfrom = \"json:/t\"\n[[rules]]\npath = \"/login\"";
        assert!(load(&minimal(ok)).is_ok(), "GET /login is not captured");
    }

    #[test]
    fn optional_routes_are_off_by_default_and_distinct_from_the_others() {
        let c = load(&minimal("")).unwrap();
        assert_eq!(c.routes.forward_auth, None);
        assert_eq!(c.routes.revoke, None);
        let c = load(&minimal(
            "[routes]\nforward_auth = \"/_tokengate/auth\"\nrevoke = \"/oauth/revoke\"",
        ))
        .unwrap();
        assert_eq!(c.routes.forward_auth.as_deref(), Some("/_tokengate/auth"));
        assert_eq!(c.routes.revoke.as_deref(), Some("/oauth/revoke"));
        for (routes, key) in [
            ("revoke = \"/logout\"", "routes.revoke"),
            ("forward_auth = \"/sessions\"", "routes.forward_auth"),
            ("forward_auth = \"auth\"", "routes.forward_auth"),
            ("revoke = \"/a?b\"", "routes.revoke"),
            ("revoke = \"/r\"\npublic = [\"/*\"]", "routes.public"),
        ] {
            let e = load(&minimal(&format!("[routes]\n{routes}"))).unwrap_err();
            assert_eq!(e.key, key, "{routes}: {e}");
        }
    }

    #[test]
    fn the_cache_takes_the_documented_defaults() {
        let c = load(&minimal("")).unwrap();
        let expected = CacheConfig {
            enabled: true,
            max_entries: 100_000,
            max_staleness: Duration::from_millis(100),
            feed_poll: Duration::from_millis(25),
        };
        assert_eq!(c.cache, expected);
        assert_eq!(
            c.store.revocation_log_retention,
            Duration::from_secs(30 * 86_400)
        );
        let off = load(&minimal("[cache]\nenabled = false\nmax_entries = 0")).unwrap();
        assert!(!off.cache.enabled);
    }

    #[test]
    fn connection_limits_are_bounded() {
        for (line, key) in [
            ("http2_max_streams = 0", "server.http2_max_streams"),
            ("http2_max_streams = 1001", "server.http2_max_streams"),
            (
                "header_read_timeout_seconds = 0",
                "server.header_read_timeout_seconds",
            ),
            (
                "header_read_timeout_seconds = 301",
                "server.header_read_timeout_seconds",
            ),
            ("max_connections = 0", "server.max_connections"),
            ("idle_timeout_seconds = 0", "server.idle_timeout_seconds"),
            ("idle_timeout_seconds = 3601", "server.idle_timeout_seconds"),
        ] {
            let e = load(&minimal(&format!("[server]\n{line}"))).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let c = load(&minimal("[server]\nhttp2_max_streams = 8")).unwrap();
        assert_eq!(c.server.http2_max_streams, 8);
    }

    #[test]
    fn cache_values_that_break_the_bound_are_refused_by_key() {
        for (cache, key, problem) in [
            (
                "max_staleness_ms = 20\nfeed_poll_ms = 25",
                "cache.max_staleness_ms",
                "less than cache.feed_poll_ms",
            ),
            ("max_entries = 0", "cache.max_entries", "at least 1"),
            ("max_entries = 20000000", "cache.max_entries", "at most"),
            (
                "max_staleness_ms = 0",
                "cache.max_staleness_ms",
                "between 1 and",
            ),
            (
                "max_staleness_ms = 600000",
                "cache.max_staleness_ms",
                "between 1 and",
            ),
            ("feed_poll_ms = 0", "cache.feed_poll_ms", "between 1 and"),
            ("feed_pol_ms = 25", "cache.feed_pol_ms", "unknown field"),
            ("max_entries = -1", "cache.max_entries", ""),
        ] {
            let e = load(&minimal(&format!("[cache]\n{cache}"))).unwrap_err();
            assert_eq!(e.key, key, "{cache}: {e}");
            assert!(e.problem.contains(problem), "{cache}: {e}");
        }
        for days in ["0", "5000"] {
            let e = load(&minimal(&format!("[store]\nrevocation_log_days = {days}"))).unwrap_err();
            assert_eq!(e.key, "store.revocation_log_days", "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_dotted_name() {
        let e = load(&minimal("[forward]\nuser_headr = \"X-User\"")).unwrap_err();
        assert_eq!(e.key, "forward.user_headr", "{e}");
        let e = load(&minimal(
            "[[capture]]\npath = \"/login\"\nfrom = \"json:/t\"\nfrm = 1",
        ))
        .unwrap_err();
        assert!(e.key.starts_with("capture"), "{e}");
        assert!(e.to_string().contains("frm"), "{e}");
        let e = load(&minimal("[nope]\na = 1")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn upstream_url_is_required() {
        let e =
            load("[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"0123456789abcdef0123456789abcdef\"")
                .unwrap_err();
        assert_eq!(e.key, "upstream.url");
    }

    #[test]
    fn short_hmac_secret_is_refused() {
        let text = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"short\"";
        let e = load(text).unwrap_err();
        assert_eq!(e.key, "jwt.secret");
        assert!(e.problem.contains("at least 32"), "{e}");
    }

    #[test]
    fn hmac_without_a_secret_names_the_keys_to_set() {
        let text = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"HS256\"]";
        let e = load(text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config error: jwt.algorithms: HS256 needs jwt.secret, jwt.secret_file or jwt.secret_env"
        );
    }

    #[test]
    fn mixing_key_families_is_refused() {
        let e = load(&minimal("public_key_file = \"k.pem\"")).unwrap_err();
        assert_eq!(e.key, "jwt");
        let text = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"HS256\", \"RS256\"]";
        assert_eq!(load(text).unwrap_err().key, "jwt.algorithms");
    }

    #[test]
    fn missing_key_file_is_one_clear_line() {
        // The file is named by the config and read with the keys.
        let text = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent/pub.pem\"";
        let config = load(text).unwrap();
        let e = crate::app::verifier(&config, crate::app::KeyLoading::Load).unwrap_err();
        let e = crate::app::OpenError::from(e).to_string();
        assert_eq!(
            e,
            "config error: jwt.public_key_file: cannot read /nonexistent/pub.pem: no such file"
        );
    }

    #[test]
    fn unknown_algorithm_and_none_are_refused() {
        for alg in ["none", "HS1", "hs256"] {
            let text = format!(
                "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"{alg}\"]\nsecret = \"{SECRET}\""
            );
            assert_eq!(load(&text).unwrap_err().key, "jwt.algorithms", "{alg}");
        }
    }

    #[test]
    fn public_routes_cannot_shadow_tokengate_routes() {
        let e = load(&minimal("[routes]\npublic = [\"/*\"]")).unwrap_err();
        assert_eq!(e.key, "routes.public");
    }

    #[test]
    fn the_backchannel_logout_route_is_off_by_default_and_checked_when_set() {
        let c = load(&minimal("")).unwrap();
        assert_eq!(c.routes.backchannel_logout, None);
        assert!(!c.summary("k").contains("back-channel"));
        let c = load(&minimal("[routes]\nbackchannel_logout = \"/bcl\"")).unwrap();
        assert_eq!(c.routes.backchannel_logout.as_deref(), Some("/bcl"));
        assert!(c.summary("k").contains("back-channel logout: POST /bcl"));
        for (extra, key) in [
            ("[routes]\nbackchannel_logout = \"bcl\"", "routes.backchannel_logout"),
            ("[routes]\nbackchannel_logout = \"/a/../b\"", "routes.backchannel_logout"),
            ("[routes]\nbackchannel_logout = \"/logout\"", "routes.backchannel_logout"),
            ("[routes]\nbackchannel_logout = \"/sessions\"", "routes.backchannel_logout"),
            (
                "[routes]\nbackchannel_logout = \"/idp/bcl\"\npublic = [\"/idp/*\"]",
                "routes.public",
            ),
            (
                "[routes]\nbackchannel_logout = \"/bcl\"\n[[capture]]\npath = \"/bcl\"\nfrom = \"json:/t\"",
                "capture",
            ),
        ] {
            let e = load(&minimal(extra)).unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
        }
    }

    #[test]
    fn the_session_policies_are_off_by_default_bounded_and_restart_only() {
        let c = load(&minimal("")).unwrap();
        assert_eq!(
            (c.store.idle_timeout, c.store.max_sessions_per_user),
            (None, None)
        );
        let on = load(&minimal(
            "[store]\nidle_timeout_seconds = 900\nmax_sessions_per_user = 5",
        ))
        .unwrap();
        assert_eq!(on.store.idle_timeout, Some(Duration::from_secs(900)));
        assert_eq!(on.store.max_sessions_per_user, Some(5));
        let summary = on.summary("k");
        assert!(
            summary.contains(
                "idle sessions: revoked after 900 s unused (last use written every 60 s)"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("sessions per user: at most 5"),
            "{summary}"
        );
        // `[store]` takes effect at a restart: a reload names the keys and keeps them.
        let (kept, changed) = c.keep_restart_only(on);
        assert_eq!(
            changed,
            ["store.idle_timeout_seconds", "store.max_sessions_per_user"]
        );
        assert_eq!(kept.store.idle_timeout, None);
        for (line, key) in [
            (
                "idle_timeout_seconds = 40000000",
                "store.idle_timeout_seconds",
            ),
            (
                "max_sessions_per_user = 10001",
                "store.max_sessions_per_user",
            ),
            ("max_sessions_per_user = -1", "store.max_sessions_per_user"),
            (
                "strategy = \"user-status\"\nidle_timeout_seconds = 60",
                "store.idle_timeout_seconds",
            ),
        ] {
            let e = load(&minimal(&format!("[store]\n{line}"))).unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
        }
        // Off is off under every strategy.
        let text =
            "[store]\nstrategy = \"denylist\"\nidle_timeout_seconds = 0\nmax_sessions_per_user = 0";
        assert!(load(&minimal(text)).is_ok());
    }

    #[test]
    fn route_paths_must_be_plain() {
        for bad in ["logout", "/a/../logout", "/%6cogout", "/a?b"] {
            let e = load(&minimal(&format!("[routes]\nlogout = \"{bad}\""))).unwrap_err();
            assert_eq!(e.key, "routes.logout", "{bad}");
        }
    }

    #[test]
    fn reserved_headers_cannot_carry_identity() {
        let e = load(&minimal("[forward]\nuser_header = \"Authorization\"")).unwrap_err();
        assert_eq!(e.key, "forward.user_header");
        let e = load(&minimal(
            "[forward]\nclaim_headers = { email = \"X-User-Id\" }",
        ))
        .unwrap_err();
        assert_eq!(e.key, "forward.claim_headers.email");
        let e = load(&minimal(
            "[forward]\nclaim_headers = { email = \"X_User_Id\" }",
        ))
        .unwrap_err();
        assert_eq!(
            e.key, "forward.claim_headers.email",
            "the _ spelling is the same header"
        );
    }

    #[test]
    fn upstream_must_be_plain_http_without_a_path() {
        for bad in ["127.0.0.1:3000", "http://x/api", "https://x/api", "ftp://x"] {
            let text = minimal("").replace("http://127.0.0.1:3000", bad);
            assert_eq!(load(&text).unwrap_err().key, "upstream.url", "{bad}");
        }
    }

    #[test]
    fn capture_sources_parse() {
        let c = load(&minimal(
            "[[capture]]\npath = \"/login\"\nfrom = \"json:/access_token\"\n[[capture]]\npath = \"/refresh\"\nmethod = \"post\"\nfrom = \"cookie:access_token\"",
        ))
        .unwrap();
        assert_eq!(c.capture.len(), 2);
        assert_eq!(c.capture[1].method, Method::POST);
        let e = load(&minimal(
            "[[capture]]\npath = \"/login\"\nfrom = \"body:x\"",
        ))
        .unwrap_err();
        assert_eq!(e.key, "capture[0].from");
    }

    #[test]
    fn trusted_proxies_take_ips_and_cidrs() {
        let c = load(&minimal(
            "[forward]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]",
        ))
        .unwrap();
        assert_eq!(c.forward.trusted_proxies.len(), 2);
        let e = load(&minimal("[forward]\ntrusted_proxies = [\"nope\"]")).unwrap_err();
        assert_eq!(e.key, "forward.trusted_proxies");
    }

    #[test]
    fn postgres_ca_file_becomes_the_urls_sslrootcert() {
        let store = |extra: &str| minimal(&format!("[store]\nbackend = \"postgres\"\n{extra}"));
        let c = load(&store(
            "postgres_url = \"postgres://tg@db/t?sslmode=verify-full\"\npostgres_ca_file = \"/etc/db-ca.pem\"",
        ))
        .unwrap();
        assert_eq!(
            c.store.backend,
            StoreBackend::Postgres(
                "postgres://tg@db/t?sslmode=verify-full&sslrootcert=/etc/db-ca.pem".into()
            )
        );
        let e = load(&store(
            "postgres_url = \"postgres://tg@db/t?sslrootcert=/a.pem\"\npostgres_ca_file = \"/b.pem\"",
        ))
        .unwrap_err();
        assert_eq!(e.key, "store.postgres_ca_file");
    }

    #[test]
    fn postgres_backend_needs_a_valid_url_and_never_echoes_its_password() {
        let store = |extra: &str| minimal(&format!("[store]\nbackend = \"postgres\"\n{extra}"));
        let url = "postgres://tg:hunter2@db.internal:5432/tokens";
        let c = load(&store(&format!("postgres_url = \"{url}\""))).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres(url.into()));
        assert_eq!(load(&store("")).unwrap_err().key, "store.postgres_url");
        for bad in [
            "postgres://tg:hunter2@db.internal:notaport/tokens",
            "postgres://tg:hunter2@db.internal/tokens?sslmode=sometimes",
        ] {
            let e = load(&store(&format!("postgres_url = \"{bad}\""))).unwrap_err();
            assert_eq!(e.key, "store.postgres_url", "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
