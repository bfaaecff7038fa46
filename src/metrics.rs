//! Counters and histograms, rendered in the Prometheus text format on the admin
//! listener's `/metrics` (SPEC §6).
//!
//! Label values are `&'static str` chosen by the code, never taken from requests, so the
//! number of series stays bounded. The per-request counters are resolved once, on first
//! use, so a request costs no label hashing.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::jwt::keys::KeyMetrics;

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// How a request of the public listener ended: the `outcome` label of
/// `tokengate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A protected route, forwarded with a verified identity.
    Forwarded,
    /// A public route, forwarded.
    Public,
    /// `routes.logout` done.
    Logout,
    /// `routes.logout_all` done.
    LogoutAll,
    /// `routes.sessions` listed.
    Sessions,
    /// A session revoked by its owner.
    SessionRevoked,
    /// A capture route's token stored.
    Captured,
    /// A capture route's response was not 2xx: passed on, nothing stored.
    CapturePassthrough,
    /// A capture route's 2xx response held no token that could be stored.
    CaptureFailed,
    /// Refused: a bad path or an over-long target.
    BadPath,
    /// Refused: an ambiguous request head.
    BadRequest,
    /// Refused: a method the route does not take.
    MethodNotAllowed,
    /// Refused: no token.
    NoToken,
    /// Refused: a token that does not verify, or never can pass.
    InvalidToken,
    /// Refused: a verified token that is not live.
    Revoked,
    /// Refused: the store could not answer.
    StoreUnavailable,
    /// The backend did not answer in time.
    UpstreamTimeout,
    /// The backend could not be reached or failed.
    UpstreamError,
    /// A tokengate resource that does not exist.
    NotFound,
    /// Refused: a cross-site state change with a cookie token.
    CrossSite,
    /// Refused: a live token that fails its route's `[[rules]]` entry.
    InsufficientScope,
    /// A forward-auth request answered 200 (SPEC §13).
    ForwardAuth,
    /// An RFC 7009 revocation request answered 200.
    TokenRevocation,
    /// An identity provider's back-channel logout done (SPEC §13).
    BackchannelLogout,
    /// A back-channel logout refused: a malformed request or logout token, or a replay.
    BackchannelRefused,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 25] = [
        Outcome::Forwarded,
        Outcome::Public,
        Outcome::Logout,
        Outcome::LogoutAll,
        Outcome::Sessions,
        Outcome::SessionRevoked,
        Outcome::Captured,
        Outcome::CapturePassthrough,
        Outcome::CaptureFailed,
        Outcome::BadPath,
        Outcome::BadRequest,
        Outcome::MethodNotAllowed,
        Outcome::NoToken,
        Outcome::InvalidToken,
        Outcome::Revoked,
        Outcome::StoreUnavailable,
        Outcome::UpstreamTimeout,
        Outcome::UpstreamError,
        Outcome::NotFound,
        Outcome::CrossSite,
        Outcome::InsufficientScope,
        Outcome::ForwardAuth,
        Outcome::TokenRevocation,
        Outcome::BackchannelLogout,
        Outcome::BackchannelRefused,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Public => "public",
            Outcome::Logout => "logout",
            Outcome::LogoutAll => "logout_all",
            Outcome::Sessions => "sessions",
            Outcome::SessionRevoked => "session_revoked",
            Outcome::Captured => "captured",
            Outcome::CapturePassthrough => "capture_passthrough",
            Outcome::CaptureFailed => "capture_failed",
            Outcome::BadPath => "bad_path",
            Outcome::BadRequest => "bad_request",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::NoToken => "no_token",
            Outcome::InvalidToken => "invalid_token",
            Outcome::Revoked => "revoked",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamError => "upstream_error",
            Outcome::NotFound => "not_found",
            Outcome::CrossSite => "cross_site",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::ForwardAuth => "forward_auth",
            Outcome::TokenRevocation => "token_revocation",
            Outcome::BackchannelLogout => "backchannel_logout",
            Outcome::BackchannelRefused => "backchannel_refused",
        }
    }
}

/// Every metric tokengate exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    /// `requests` by [`Outcome`], each resolved on first use: a series appears once it
    /// counts something.
    by_outcome: [OnceLock<Counter>; Outcome::ALL.len()],
    latency: Histogram,
    upstream_errors: Family<Labels, Counter>,
    revocations: Family<Labels2, Counter>,
    captures: Family<Labels, Counter>,
    live_sessions: Gauge,
    /// Verdict-cache hits (SPEC §9); the cache counts into it.
    pub cache_hits: Counter,
    /// Verdict-cache misses, a bypass while the feed is not current included.
    pub cache_misses: Counter,
    cache_entries: Gauge,
    revocation_lag: Histogram,
    feed_errors: Counter,
    feed_stale: Gauge,
    /// What a key set fetched from a provider counts (SPEC §11).
    pub jwks: KeyMetrics,
    config_reloads: Family<Labels, Counter>,
    /// Open tunnels (upgraded connections, SPEC §12); the tunnel registry counts them.
    pub tunnels_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tokengate");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests on the public listener, by outcome",
            requests.clone(),
        );
        let latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "request_duration_seconds",
            "Time to the response head",
            latency.clone(),
        );
        let upstream_errors = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failures talking to the backend, by kind",
            upstream_errors.clone(),
        );
        let revocations = Family::<Labels2, Counter>::default();
        registry.register(
            "revocations",
            "Revocations made by this process, by kind and actor",
            revocations.clone(),
        );
        let captures = Family::<Labels, Counter>::default();
        registry.register(
            "captures",
            "Capture attempts on 2xx login responses, by result",
            captures.clone(),
        );
        let live_sessions = Gauge::default();
        registry.register(
            "live_sessions",
            "Unexpired allowlist rows (sessions), read from the store at each scrape",
            live_sessions.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Protected requests answered from the verdict cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Protected requests that went to the verifier and the store",
            cache_misses.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Verdicts held in the cache",
            cache_entries.clone(),
        );
        let revocation_lag = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ]);
        registry.register(
            "revocation_lag_seconds",
            "From a feed row's commit to its application by this process",
            revocation_lag.clone(),
        );
        let feed_errors = Counter::default();
        registry.register(
            "feed_errors",
            "Failed reads of the revocation feed, lost listeners, unreadable rows",
            feed_errors.clone(),
        );
        let feed_stale = Gauge::default();
        registry.register(
            "feed_stale",
            "1 while the feed is not current and cached verdicts are bypassed",
            feed_stale.clone(),
        );
        let jwks_refresh = Family::<Labels, Counter>::default();
        registry.register(
            "jwks_refresh",
            "Fetches of the identity provider's key set, by result",
            jwks_refresh.clone(),
        );
        // Both series exist from the start (a failure shows as a 0 turning 1); the
        // counters are shared handles, counted into by jwt::keys.
        // One statement each: get_or_create's read guard must be gone before the next
        // call takes the family's write lock.
        let refresh_ok = jwks_refresh.get_or_create(&[("result", "ok")]).clone();
        let refresh_error = jwks_refresh.get_or_create(&[("result", "error")]).clone();
        let jwks = KeyMetrics {
            refresh_ok,
            refresh_error,
            keys: Gauge::default(),
        };
        registry.register(
            "jwks_keys",
            "Keys in the current key set fetched from the identity provider",
            jwks.keys.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP, server.watch_config), by result",
            config_reloads.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            "tunnels_open",
            "Upgraded connections (WebSockets) tunnelled to the backend now",
            tunnels_open.clone(),
        );
        Metrics {
            tunnels_open,
            config_reloads,
            jwks,
            registry,
            cache_hits,
            cache_misses,
            cache_entries,
            revocation_lag,
            feed_errors,
            feed_stale,
            requests,
            by_outcome: Default::default(),
            latency,
            upstream_errors,
            revocations,
            captures,
            live_sessions,
        }
    }

    /// Counts one request and its latency.
    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        self.by_outcome[outcome as usize]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&[("outcome", outcome.label())])
                    .clone()
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a backend failure (`connect`, `timeout`, `protocol`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a revocation (`logout`, `logout_all`, `session`, `cutoff`) by its actor.
    pub fn revocation(&self, kind: &'static str, by: &'static str) {
        self.revocations
            .get_or_create(&[("kind", kind), ("by", by)])
            .inc();
    }

    /// Observes the time from a feed row's commit to its application here.
    pub fn revocation_lag(&self, lag: Duration) {
        self.revocation_lag.observe(lag.as_secs_f64());
    }

    /// Counts a feed failure.
    pub fn feed_error(&self) {
        self.feed_errors.inc();
    }

    /// The feed failures counted so far (for tests and the demo).
    pub fn feed_errors_count(&self) -> u64 {
        self.feed_errors.get()
    }

    /// Records the cache's state at scrape time.
    pub fn set_cache_state(&self, entries: usize, stale: bool) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.feed_stale.set(i64::from(stale));
    }

    /// Counts a config reload.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// Counts a capture attempt (`stored`, or why not).
    pub fn capture(&self, result: &'static str) {
        self.captures.get_or_create(&[("result", result)]).inc();
    }

    /// Records the number of live sessions just read from the store.
    pub fn set_live_sessions(&self, n: u64) {
        self.live_sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The number of captures with this result so far (for tests and the demo).
    pub fn capture_count(&self, result: &'static str) -> u64 {
        self.captures.get_or_create(&[("result", result)]).get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_listed_in_declaration_order() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }

    #[test]
    fn a_request_counts_under_its_outcome_only_once_it_happens() {
        let m = Metrics::new();
        assert!(!m.render().contains("outcome=\"public\""));
        m.request(Outcome::Public, Duration::from_millis(1));
        m.request(Outcome::Public, Duration::from_millis(1));
        assert!(m
            .render()
            .contains("tokengate_requests_total{outcome=\"public\"} 2"));
    }
}
