//! The revocation feed reader (SPEC §9): one per serving process, keeping the verdict
//! cache exact.
//!
//! It reads the rows of `revocation_log` after the last `seq` it applied, every
//! `cache.feed_poll_ms`, and at once when the store pushes a signal (PostgreSQL
//! `NOTIFY tokengate_revocations`, [`crate::store::TokenStore::listen`]). Each row drops
//! the matching cache entries: one token, or every token of a user, and asks the tunnels
//! of that token or user to check it again ([`crate::tunnel`]). A read that reached
//! the head marks the cache current from the moment the read *started*
//! ([`VerdictCache::mark_current`]); a failed read does not, so after
//! `cache.max_staleness_ms` without one the cache is bypassed until the feed is read
//! again. A gap in `seq`, a row this build cannot interpret and a (re)connected listener
//! all flush the whole cache: the reader never guesses which entries were meant.
//!
//! Failures are logged once per change of state (failing, current again) with their
//! cause, and every one is counted in `tokengate_feed_errors_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cache::VerdictCache;
use crate::metrics::Metrics;
use crate::store::{FeedRow, FeedSignal, RevocationKind, SharedStore, TokenHash};
use crate::tunnel::Tunnels;

/// Rows read per query; a longer backlog is read in several queries back to back.
const BATCH: u32 = 1000;

/// What one feed row asks of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Forget one token.
    Token(TokenHash),
    /// Forget every token of a user.
    User(String),
    /// Forget everything: the row cannot be read safely.
    All,
}

impl Invalidation {
    /// What a row means for the cache. Whatever does not name a token or a user
    /// cleanly asks for more, never for less.
    pub fn of(row: &FeedRow) -> Invalidation {
        let user = || {
            if row.user_id.is_empty() {
                Invalidation::All
            } else {
                Invalidation::User(row.user_id.clone())
            }
        };
        let token = row
            .token_hash
            .as_deref()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .map(TokenHash);
        match RevocationKind::parse(&row.kind) {
            Some(RevocationKind::Logout | RevocationKind::Session) => {
                token.map_or_else(user, Invalidation::Token)
            }
            Some(RevocationKind::LogoutAll | RevocationKind::Cutoff) => user(),
            None => Invalidation::All,
        }
    }
}

/// The feed reader of one process.
pub struct FeedReader {
    store: SharedStore,
    cache: Arc<VerdictCache>,
    tunnels: Arc<Tunnels>,
    metrics: Arc<Metrics>,
    poll: Duration,
    /// The last `seq` applied; `None` until the head has been read once.
    position: Option<i64>,
    failing: Option<String>,
    listener_lost: bool,
}

impl FeedReader {
    /// A reader that polls every `poll`.
    pub fn new(
        store: SharedStore,
        cache: Arc<VerdictCache>,
        tunnels: Arc<Tunnels>,
        metrics: Arc<Metrics>,
        poll: Duration,
    ) -> FeedReader {
        FeedReader {
            store,
            cache,
            tunnels,
            metrics,
            poll,
            position: None,
            failing: None,
            listener_lost: false,
        }
    }

    /// Reads the feed until `stop` changes.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut signals = self.store.listen();
        loop {
            let caught_up = self.read_once().await;
            if !caught_up {
                // A backlog longer than a batch: read on at once.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                signal = next_signal(&mut signals) => self.on_signal(signal),
                _ = stop.changed() => return,
            }
        }
    }

    /// One read: the head first, then the rows after the position. True when the read
    /// reached the head (or failed: then the next read waits for the poll).
    async fn read_once(&mut self) -> bool {
        let started = Instant::now();
        let result = match self.position {
            None => self.store.feed_head().await.map(|head| {
                // Nothing read before this: whatever is cached predates the reader.
                self.invalidate(&Invalidation::All);
                self.position = Some(head);
                true
            }),
            Some(after) => self
                .store
                .read_feed(after, BATCH)
                .await
                .map(|rows| self.apply(after, &rows) == BATCH as usize),
        };
        match result {
            Ok(more) => {
                if let Some(cause) = self.failing.take() {
                    tracing::info!(previous_error = %cause, "revocation feed is current again");
                }
                if more {
                    return false;
                }
                self.cache.mark_current(started);
            }
            Err(e) => {
                self.metrics.feed_error();
                let cause = e.to_string();
                if self.failing.is_none() {
                    tracing::warn!(error = %cause, "revocation feed cannot be read; cached verdicts are bypassed until it can");
                }
                self.failing = Some(cause);
            }
        }
        true
    }

    /// Applies rows read after `after`; returns how many there were.
    fn apply(&mut self, after: i64, rows: &[FeedRow]) -> usize {
        let now_ms = crate::jwt::now_ms();
        let mut last = after;
        for row in rows {
            if row.seq != last.saturating_add(1) {
                // A hole: a transaction that took a number and rolled back, or rows we
                // can no longer see. Either way, do not guess what was in it.
                tracing::debug!(
                    after = last,
                    seq = row.seq,
                    "gap in the revocation feed; cache flushed"
                );
                self.invalidate(&Invalidation::All);
            }
            let what = Invalidation::of(row);
            if what == Invalidation::All {
                self.metrics.feed_error();
                tracing::warn!(seq = row.seq, kind = %row.kind, "unreadable revocation feed row; cache flushed");
            }
            self.invalidate(&what);
            let lag_ms = now_ms.saturating_sub(row.at_ms).max(0);
            self.metrics
                .revocation_lag(Duration::from_millis(lag_ms.unsigned_abs()));
            last = row.seq;
        }
        self.position = Some(last.max(after));
        rows.len()
    }

    /// Applies one invalidation: the cache forgets, the tunnels concerned check their
    /// token against the store.
    fn invalidate(&self, what: &Invalidation) {
        match what {
            Invalidation::Token(hash) => self.cache.forget_token(*hash),
            Invalidation::User(user) => self.cache.forget_user(user),
            Invalidation::All => self.cache.flush(),
        }
        self.tunnels.recheck(what);
    }

    fn on_signal(&mut self, signal: Option<FeedSignal>) {
        match signal {
            Some(FeedSignal::Notified) | None => {}
            Some(FeedSignal::Connected) => {
                // Whatever happened while the listener was away is read from the table by
                // the next read; the flush makes sure nothing cached relied on it.
                self.cache.flush();
                if std::mem::take(&mut self.listener_lost) {
                    tracing::info!("revocation listener reconnected; cache flushed");
                }
            }
            Some(FeedSignal::Lost(cause)) => {
                self.metrics.feed_error();
                if !std::mem::replace(&mut self.listener_lost, true) {
                    tracing::warn!(error = %cause, "revocation listener lost; polling until it reconnects");
                }
            }
        }
    }
}

/// The next push signal, or never when the store has none (or stopped sending).
async fn next_signal(signals: &mut Option<mpsc::Receiver<FeedSignal>>) -> Option<FeedSignal> {
    match signals {
        Some(receiver) => match receiver.recv().await {
            Some(signal) => Some(signal),
            None => {
                *signals = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, user: &str, hash: Option<Vec<u8>>) -> FeedRow {
        FeedRow {
            seq: 1,
            at_ms: 0,
            kind: kind.into(),
            user_id: user.into(),
            token_hash: hash,
            session_id: None,
            by: "cli".into(),
        }
    }

    #[test]
    fn rows_ask_for_a_token_a_user_or_everything() {
        let h = vec![9u8; 32];
        let t = Invalidation::Token(TokenHash([9; 32]));
        let alice = Invalidation::User("alice".into());
        assert_eq!(
            Invalidation::of(&row("logout", "alice", Some(h.clone()))),
            t
        );
        assert_eq!(
            Invalidation::of(&row("session", "alice", Some(h.clone()))),
            t
        );
        assert_eq!(
            Invalidation::of(&row("logout_all", "alice", Some(h.clone()))),
            alice
        );
        assert_eq!(Invalidation::of(&row("cutoff", "alice", None)), alice);
        // Damaged or unknown: more, never less.
        assert_eq!(
            Invalidation::of(&row("logout", "alice", Some(vec![1, 2]))),
            alice
        );
        assert_eq!(
            Invalidation::of(&row("logout", "", None)),
            Invalidation::All
        );
        assert_eq!(
            Invalidation::of(&row("cutoff", "", None)),
            Invalidation::All
        );
        assert_eq!(
            Invalidation::of(&row("purge", "alice", Some(h))),
            Invalidation::All
        );
    }
}
