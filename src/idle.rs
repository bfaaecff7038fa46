//! Idle sessions (SPEC §13, `store.idle_timeout_seconds`): a session unused for that
//! long is revoked.
//!
//! This module owns the record of last use and the sweep; what "revoked" means is the
//! door's business ([`crate::revocations`], actor `idle`, feed kind `session`).
//!
//! # Recording use, off the request path
//! Every request that a session's token gets through (a protected route, from the
//! verdict cache or the store, and tokengate's own routes) notes the session in memory
//! ([`IdleSessions::touch`]: one short lock, no I/O). A background task writes the
//! latest use of each noted session to `valid_token.last_used_at` every
//! [`IdleSessions::interval`], in one transaction, so a session is written at most once
//! per interval, and the interval is at most a minute. A refresh counts as use too: the
//! tokens it issues join the session with a new creation time.
//!
//! # The sweep, and its precision
//! After each write the same task asks the store for sessions whose last use (their
//! latest `last_used_at` or creation) is older than `idle_timeout_seconds` plus one
//! interval, and revokes each. The extra interval leaves room for uses another replica
//! has noted but not written yet. With `interval = clamp(timeout / 4, 1 s, 60 s)`:
//!
//! - a session used at least once every `idle_timeout_seconds` is never revoked
//!   (given replicas whose clocks agree and a store that answers within an interval);
//! - a session unused for longer than `idle_timeout_seconds + 2 × interval` is revoked
//!   (plus the revocation feed's `cache.max_staleness_ms` on the other replicas), and
//!   last use counts in whole seconds.
//!
//! An open WebSocket tunnel is not use by itself: the request that opened it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::app::App;
use crate::revocations::{Revocations, RevokeError};
use crate::store::{Actor, SharedStore, StoreError};
use crate::strategy::Target;

/// Idle sessions revoked per store query; a longer list is taken in several.
const SWEEP_BATCH: u32 = 500;
/// Sessions whose last use is written in one transaction.
const WRITE_BATCH: usize = 500;
/// The shortest and longest interval between two writes (and sweeps).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// How often last uses are written and idle sessions swept, for an idle timeout: a
/// quarter of it, within a second and a minute.
pub fn interval_for(timeout: Duration) -> Duration {
    (timeout / 4).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The last uses noted since the last write, and the timeout they are held to.
#[derive(Debug)]
pub struct IdleSessions {
    timeout: Duration,
    interval: Duration,
    /// Session id → the latest use noted (unix seconds), not yet written.
    noted: Mutex<HashMap<String, i64>>,
}

impl IdleSessions {
    /// Tracks sessions against `timeout` (`store.idle_timeout_seconds`).
    pub fn new(timeout: Duration) -> IdleSessions {
        IdleSessions {
            timeout,
            interval: interval_for(timeout),
            noted: Mutex::new(HashMap::new()),
        }
    }

    /// How often last uses are written and idle sessions swept.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Notes that `session_id` was used at `now` (unix seconds). In memory only.
    pub fn touch(&self, session_id: &str, now: i64) {
        let mut noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
        match noted.get_mut(session_id) {
            Some(at) => *at = (*at).max(now),
            None => {
                noted.insert(session_id.to_owned(), now);
            }
        }
    }

    /// Writes the uses noted so far; returns how many sessions were written. Uses that
    /// could not be written are noted again, for the next write.
    pub async fn write(&self, store: &SharedStore) -> Result<usize, StoreError> {
        let noted: Vec<(String, i64)> =
            std::mem::take(&mut *self.noted.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .collect();
        let total = noted.len();
        let mut batches = noted.chunks(WRITE_BATCH);
        while let Some(batch) = batches.next() {
            if let Err(e) = store.touch_sessions(batch.to_vec()).await {
                for (id, at) in batch.iter().chain(batches.flatten()) {
                    self.touch(id, *at);
                }
                return Err(e);
            }
        }
        Ok(total)
    }

    /// Revokes every session idle for longer than the timeout plus one interval, as of
    /// `now`; returns how many were revoked.
    pub async fn sweep(
        &self,
        store: &SharedStore,
        revocations: &Revocations,
        now: i64,
    ) -> Result<usize, RevokeError> {
        let margin = self.timeout.saturating_add(self.interval).as_secs();
        let idle_since = now.saturating_sub(i64::try_from(margin).unwrap_or(i64::MAX));
        let mut revoked = 0;
        loop {
            let idle = store.idle_sessions(idle_since, now, SWEEP_BATCH).await?;
            for session in &idle {
                let target = Target::Session {
                    id: &session.session_id,
                    owner: Some(&session.user_id),
                };
                match revocations.revoke(target, Actor::Idle).await {
                    Ok(_) => revoked += 1,
                    // Another replica's sweep, or a logout, was first.
                    Err(RevokeError::NoSuchSession) => {}
                    Err(e) => return Err(e),
                }
            }
            if idle.len() < SWEEP_BATCH as usize {
                return Ok(revoked);
            }
        }
    }
}

/// Writes last uses and sweeps idle sessions every interval, until `stop` changes.
pub async fn run(app: Arc<App>, idle: Arc<IdleSessions>, mut stop: watch::Receiver<bool>) {
    let store = app.strategy.store().clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(idle.interval()) => {}
            _ = stop.changed() => return,
        }
        // This process's uses first, so that the sweep sees them.
        if let Err(e) = idle.write(&store).await {
            tracing::warn!(error = %e, "could not record the last use of sessions; will retry");
            continue;
        }
        match idle
            .sweep(&store, &app.revocations, crate::jwt::now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "idle sessions revoked"),
            Err(e) => tracing::warn!(error = %e, "idle sweep failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_quarter_of_the_timeout_within_a_second_and_a_minute() {
        let interval = |s| interval_for(Duration::from_secs(s));
        assert_eq!(interval(2), Duration::from_secs(1));
        assert_eq!(interval(40), Duration::from_secs(10));
        assert_eq!(interval(3600), Duration::from_secs(60));
    }

    #[test]
    fn a_session_is_noted_once_with_its_latest_use() {
        let idle = IdleSessions::new(Duration::from_secs(60));
        idle.touch("s1", 10);
        idle.touch("s1", 12);
        idle.touch("s1", 11);
        idle.touch("s2", 5);
        let mut noted: Vec<_> = idle.noted.lock().unwrap().clone().into_iter().collect();
        noted.sort();
        assert_eq!(noted, [("s1".to_owned(), 12), ("s2".to_owned(), 5)]);
    }
}
