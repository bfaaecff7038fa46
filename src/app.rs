//! The shared state of a running tokengate: built once at start, then immutable.
//!
//! One `Arc<App>` holds the validated config, the strategy bound to its store, the
//! pooled upstream client, the header policy and the metrics. Mutable state lives only
//! in the store (STYLE §6).

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{HeaderPolicy, Upstream};
use crate::store::{self, SharedStore, StoreError};
use crate::strategy::Strategy;

/// Everything a request handler needs.
pub struct App {
    /// The validated configuration (with loaded keys).
    pub config: Config,
    /// What "live" means, bound to the store.
    pub strategy: Strategy,
    /// The backend.
    pub upstream: Upstream,
    /// Header rules from `[forward]`.
    pub headers: HeaderPolicy,
    /// Counters and histograms.
    pub metrics: Metrics,
}

impl App {
    /// Opens the store named by the config and builds the shared state.
    pub async fn open(config: Config) -> Result<Arc<App>, StoreError> {
        let store = store::open(&config.store.backend).await?;
        Ok(App::with_store(config, store))
    }

    /// Builds the shared state around an already opened store.
    pub fn with_store(config: Config, store: SharedStore) -> Arc<App> {
        Arc::new(App {
            strategy: Strategy::new(config.store.strategy, store),
            upstream: Upstream::new(&config.upstream),
            headers: HeaderPolicy::new(&config.forward),
            metrics: Metrics::new(),
            config,
        })
    }
}
