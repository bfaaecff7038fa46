//! The shared state of a running tokengate: built once at start, then immutable.
//!
//! One `Arc<App>` holds the validated config, the verifier over the loaded keys, the
//! strategy bound to its store, the revocation door, the verdict cache, the pooled
//! upstream client, the header policy and the metrics. Mutable state lives only in the store, and in the cache that the
//! revocation feed keeps exact (STYLE §6).

use std::sync::Arc;

use crate::cache::{CacheSettings, VerdictCache};
use crate::config::Config;
use crate::feed::FeedReader;
use crate::jwt::{KeyError, Keys, Verifier};
use crate::metrics::Metrics;
use crate::proxy::{HeaderPolicy, Upstream};
use crate::revocations::Revocations;
use crate::store::{self, SharedStore, StoreError};
use crate::strategy::Strategy;

/// Everything a request handler needs.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Verifies tokens against the loaded keys and `[jwt]`'s rules.
    pub verifier: Verifier,
    /// What "live" means, bound to the store.
    pub strategy: Strategy,
    /// The one way to revoke, list sessions and prune.
    pub revocations: Revocations,
    /// Positive verdicts by token, kept exact by the feed.
    pub cache: Arc<VerdictCache>,
    /// The backend.
    pub upstream: Upstream,
    /// Header rules from `[forward]`.
    pub headers: HeaderPolicy,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
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
    /// The store could not be opened.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl App {
    /// Loads the keys, opens the store named by the config and builds the shared state.
    pub async fn open(config: Config) -> Result<Arc<App>, OpenError> {
        App::open_with(config, KeyLoading::Load).await
    }

    /// [`App::open`], reading the keys or not.
    pub async fn open_with(config: Config, keys: KeyLoading) -> Result<Arc<App>, OpenError> {
        let verifier = verifier(&config, keys)?;
        let store = store::open(&config.store.backend).await?;
        Ok(App::with_store(config, verifier, store))
    }

    /// Builds the shared state around loaded keys and an already opened store.
    pub fn with_store(config: Config, verifier: Verifier, store: SharedStore) -> Arc<App> {
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(VerdictCache::new(
            CacheSettings {
                enabled: config.cache.enabled,
                max_entries: config.cache.max_entries,
                max_staleness: config.cache.max_staleness,
                leeway: verifier.leeway(),
            },
            metrics.cache_hits.clone(),
            metrics.cache_misses.clone(),
        ));
        let strategy = Strategy::new(config.store.strategy, store);
        let retention = config.store.revocation_log_retention.as_millis();
        Arc::new(App {
            revocations: Revocations::new(
                strategy.clone(),
                cache.clone(),
                metrics.clone(),
                i64::try_from(retention).unwrap_or(i64::MAX),
            ),
            strategy,
            cache,
            upstream: Upstream::new(&config.upstream),
            headers: HeaderPolicy::new(&config.forward),
            metrics,
            verifier,
            config,
        })
    }

    /// The feed reader that keeps this process's cache exact; `None` when the cache is
    /// off (then nothing needs it).
    pub fn feed_reader(&self) -> Option<FeedReader> {
        self.cache.enabled().then(|| {
            FeedReader::new(
                self.strategy.store().clone(),
                self.cache.clone(),
                self.metrics.clone(),
                self.config.cache.feed_poll,
            )
        })
    }
}

/// The verifier of `config`'s `[jwt]`, its keys read or not.
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
