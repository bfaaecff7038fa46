//! Counters and histograms, rendered in the Prometheus text format on the admin
//! listener's `/metrics` (SPEC §6).
//!
//! Label values are `&'static str` chosen by the code, never taken from requests, so the
//! number of series stays bounded.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// Every metric tokengate exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Histogram,
    upstream_errors: Family<Labels, Counter>,
    revocations: Family<Labels, Counter>,
    captures: Family<Labels, Counter>,
    live_sessions: Gauge,
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
        let revocations = Family::<Labels, Counter>::default();
        registry.register("revocations", "Revocations, by kind", revocations.clone());
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
        Metrics {
            registry,
            requests,
            latency,
            upstream_errors,
            revocations,
            captures,
            live_sessions,
        }
    }

    /// Counts one request and its latency.
    pub fn request(&self, outcome: &'static str, elapsed: Duration) {
        self.requests.get_or_create(&[("outcome", outcome)]).inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a backend failure (`connect`, `timeout`, `protocol`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a revocation (`logout`, `logout_all`, ...).
    pub fn revocation(&self, kind: &'static str) {
        self.revocations.get_or_create(&[("kind", kind)]).inc();
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
