//! The shared state of a running tokengate, in two parts.
//!
//! One `Arc<App>` holds what is built once at start: the strategy bound to its store,
//! the revocation door, the verdict cache, the backend connection pool and the metrics.
//! Beside it, the [`Policy`]: the validated config, the verifier over the loaded keys
//! and the header rules. A reload ([`App::reload`], SPEC §11) builds a new policy from
//! the file and swaps it in atomically; a request takes the policy once, when it
//! arrives ([`App::policy`]), and keeps it to its end. Mutable state lives only in the
//! store, and in the cache that the revocation feed keeps exact (STYLE §6).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::{CacheSettings, VerdictCache};
use crate::config::{Config, ConfigError};
use crate::feed::{FeedReader, Invalidation};
use crate::idle::IdleSessions;
use crate::jwt::{KeyError, Keys, Verifier};
use crate::metrics::Metrics;
use crate::proxy::{HeaderPolicy, Upstream};
use crate::revocations::Revocations;
use crate::store::{self, SharedStore, StoreError};
use crate::strategy::Strategy;
use crate::transport::{Tls, TlsError};
use crate::tunnel::Tunnels;

/// What a reload may change: the config, the keys it names, the header rules, the
/// listener's certificates.
#[derive(Debug)]
pub struct Policy {
    /// The validated configuration (its restart-only keys as at start).
    pub config: Config,
    /// Verifies tokens against the loaded keys and `[jwt]`'s rules.
    pub verifier: Verifier,
    /// Header rules from `[forward]`.
    pub headers: HeaderPolicy,
    /// The public listener's TLS (`server.tls_*`), certificates as last read.
    pub tls: Option<Tls>,
}

/// Everything a request handler needs.
pub struct App {
    policy: ArcSwap<Policy>,
    /// What "live" means, bound to the store.
    pub strategy: Strategy,
    /// The one way to revoke, list sessions and prune.
    pub revocations: Revocations,
    /// Positive verdicts by token, kept exact by the feed.
    pub cache: Arc<VerdictCache>,
    /// The backend.
    pub upstream: Upstream,
    /// Open tunnels, closed when their token dies (SPEC §12).
    pub tunnels: Arc<Tunnels>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The last uses of sessions, when `store.idle_timeout_seconds` is on (SPEC §13).
    pub idle: Option<Arc<IdleSessions>>,
}

/// Whether a process reads the verification keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLoading {
    /// Read them: for everything that verifies tokens.
    Load,
    /// Read nothing, for the subcommands that only touch the store (`tokens list`,
    /// `tokens revoke`, `prune`): the verifier then refuses every token.
    Skip,
}

/// Why a tokengate could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The keys named by `[jwt]` could not be loaded.
    #[error("config error: {0}")]
    Keys(#[from] KeyError),
    /// A certificate or CA file the config names could not be used.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

/// Why a reload kept the current policy.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The keys it names do not load.
    #[error("config error: {0}")]
    Keys(#[from] KeyError),
    /// A certificate it names does not load.
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// What a good reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// Keys that changed in the file but take effect only at a restart.
    pub needs_restart: Vec<&'static str>,
}

impl App {
    /// Loads the keys, opens the store named by the config and builds the shared state.
    pub async fn open(config: Config) -> Result<Arc<App>, OpenError> {
        App::open_with(config, KeyLoading::Load).await
    }

    /// [`App::open`], reading the keys or not. Keys from an identity provider are
    /// fetched here (SPEC §11), so a provider that cannot be reached at start is one
    /// line naming `jwt.jwks_url`.
    pub async fn open_with(config: Config, keys: KeyLoading) -> Result<Arc<App>, OpenError> {
        let metrics = Arc::new(Metrics::new());
        let settings = config.jwt.settings.clone();
        let keys = match keys {
            KeyLoading::Load => {
                Keys::start(&config.jwt.source, settings, metrics.jwks.clone()).await?
            }
            KeyLoading::Skip => Arc::new(Keys::unloaded(Arc::new(settings))),
        };
        let tls = config.server.tls.as_ref().map(Tls::load).transpose()?;
        let upstream = Upstream::new(&config.upstream)?;
        let store = store::open(&config.store.backend).await?;
        Ok(App::build(config, keys, tls, upstream, store, metrics))
    }

    /// Builds the shared state around loaded keys and an opened store.
    fn build(
        config: Config,
        keys: Arc<Keys>,
        tls: Option<Tls>,
        upstream: Upstream,
        store: SharedStore,
        metrics: Arc<Metrics>,
    ) -> Arc<App> {
        let cache = Arc::new(VerdictCache::new(
            CacheSettings {
                enabled: config.cache.enabled,
                max_entries: config.cache.max_entries,
                max_staleness: config.cache.max_staleness,
                leeway: keys.settings().leeway as i64,
            },
            metrics.cache_hits.clone(),
            metrics.cache_misses.clone(),
        ));
        let strategy = Strategy::new(config.store.strategy, store);
        let retention = config.store.revocation_log_retention.as_millis();
        let tunnels = Arc::new(Tunnels::new(metrics.tunnels_open.clone()));
        let idle = config
            .store
            .idle_timeout
            .map(|timeout| Arc::new(IdleSessions::new(timeout)));
        let policy = policy(config, keys, tls, &cache, &tunnels);
        Arc::new(App {
            revocations: Revocations::new(
                strategy.clone(),
                cache.clone(),
                tunnels.clone(),
                metrics.clone(),
                i64::try_from(retention).unwrap_or(i64::MAX),
            ),
            strategy,
            cache,
            tunnels,
            upstream,
            metrics,
            idle,
            policy: ArcSwap::from_pointee(policy),
        })
    }

    /// The policy in force now; a request takes it once and keeps it.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Whether `policy` is still the one in force (no reload since it was taken): a
    /// verdict made under an older one must not be cached.
    pub fn is_current(&self, policy: &Arc<Policy>) -> bool {
        Arc::ptr_eq(&self.policy.load(), policy)
    }

    /// Re-reads the config file at `path` and every file it names (keys, certificates), validates them as a
    /// start would (a provider's key set is fetched again), and swaps the new policy in
    /// for the requests that arrive from now on; connections stay open. On any error
    /// the current policy stays. Keys that need a restart keep their current values and
    /// are named in the result. The verdict cache starts over (verdicts depend on the
    /// keys and `[jwt]`'s rules), and every tunnel checks its token again; the metrics
    /// are kept.
    pub async fn reload(&self, path: &Path) -> Result<Reloaded, ReloadError> {
        let current = self.policy();
        let (config, needs_restart) = current.config.keep_restart_only(Config::load(path)?);
        let keys = Keys::start(
            &config.jwt.source,
            config.jwt.settings.clone(),
            self.metrics.jwks.clone(),
        )
        .await?;
        let tls = config.server.tls.as_ref().map(Tls::load).transpose()?;
        self.cache.set_leeway(keys.settings().leeway as i64);
        let policy = policy(config, keys, tls, &self.cache, &self.tunnels);
        self.policy.store(Arc::new(policy));
        self.cache.flush();
        self.tunnels.recheck(&Invalidation::All);
        Ok(Reloaded { needs_restart })
    }

    /// The feed reader that keeps this process's cache exact; `None` when the cache is
    /// off (then nothing needs it).
    pub fn feed_reader(&self) -> Option<FeedReader> {
        self.cache.enabled().then(|| {
            FeedReader::new(
                self.strategy.store().clone(),
                self.cache.clone(),
                self.tunnels.clone(),
                self.metrics.clone(),
                self.policy().config.cache.feed_poll,
            )
        })
    }
}

/// A policy over loaded keys: a provider's set is refreshed in the background for as
/// long as the policy lives, and each change of it flushes the verdict cache and has
/// every tunnel verify its token again (a verdict was given under the keys of its time:
/// a key removed, or replaced under its kid, must stop passing at once).
fn policy(
    config: Config,
    keys: Arc<Keys>,
    tls: Option<Tls>,
    cache: &Arc<VerdictCache>,
    tunnels: &Arc<Tunnels>,
) -> Policy {
    keys.on_change({
        let (cache, tunnels) = (cache.clone(), tunnels.clone());
        move || {
            cache.flush();
            tunnels.recheck(&Invalidation::All);
        }
    });
    Keys::spawn_refresh(&keys);
    Policy {
        tls,
        headers: HeaderPolicy::new(&config.forward),
        verifier: Verifier::new(keys),
        config,
    }
}

/// The verifier of `config`'s `[jwt]`, its keys read or not, for a static key source
/// (a secret or a key file; a JWKS URL is fetched by [`App::open`] and
/// [`Keys::start`]).
pub fn verifier(config: &Config, keys: KeyLoading) -> Result<Verifier, KeyError> {
    let settings = Arc::new(config.jwt.settings.clone());
    match keys {
        KeyLoading::Load => Ok(Verifier::new(Arc::new(Keys::load(
            &config.jwt.source,
            settings,
        )?))),
        KeyLoading::Skip => Ok(Verifier::new(Arc::new(Keys::unloaded(settings)))),
    }
}
