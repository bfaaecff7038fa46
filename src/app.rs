//! The shared state of a running tokengate: built once at start, then immutable.
//!
//! One `Arc<App>` holds the validated config, the strategy bound to its store, the
//! revocation door, the verdict cache, the pooled upstream client, the header policy
//! and the metrics. Mutable state lives only in the store, and in the cache that the
//! revocation feed keeps exact (STYLE §6).

use std::sync::Arc;

use crate::cache::{CacheSettings, VerdictCache};
use crate::config::Config;
use crate::feed::FeedReader;
use crate::metrics::Metrics;
use crate::proxy::{HeaderPolicy, Upstream};
use crate::revocations::Revocations;
use crate::store::{self, SharedStore, StoreError};
use crate::strategy::Strategy;

/// Everything a request handler needs.
pub struct App {
    /// The validated configuration (with loaded keys).
    pub config: Config,
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

impl App {
    /// Opens the store named by the config and builds the shared state.
    pub async fn open(config: Config) -> Result<Arc<App>, StoreError> {
        let store = store::open(&config.store.backend).await?;
        Ok(App::with_store(config, store))
    }

    /// Builds the shared state around an already opened store.
    pub fn with_store(config: Config, store: SharedStore) -> Arc<App> {
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(VerdictCache::new(
            CacheSettings {
                enabled: config.cache.enabled,
                max_entries: config.cache.max_entries,
                max_staleness: config.cache.max_staleness,
                leeway: config.verifier.leeway(),
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
