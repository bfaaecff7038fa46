//! Deadlines for the waits of the tests, so that a failure fails instead of hanging the
//! suite.

use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it holds; panics, naming `what`, when it still does
/// not hold after `within`.
pub async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "never within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
