//! The one door for revocations, session lists and prunes.
//!
//! Every way of ending a token (`/logout`, `/logout-all`, `DELETE /sessions/{id}`, the
//! admin API, `tokengate tokens revoke`, a back-channel logout, the idle sweep, the
//! sessions-per-user limit) calls [`Revocations::revoke`] (or [`Revocations::revoke_once`])
//! with what it ends and who asks ([`Actor`]). Here, and only here, the strategy picks the rows
//! ([`crate::strategy::Strategy::plan`]), the store changes them and appends the feed
//! row in one transaction, this process's verdict cache forgets the token or user at once
//! and its tunnels of them check again (other processes learn it from the feed,
//! [`crate::feed`]), the metric is counted and
//! the audit line is written. Listing and pruning sessions come through here too, so
//! that "this strategy keeps no sessions" is decided once.

use std::sync::Arc;

use crate::cache::VerdictCache;
use crate::feed::Invalidation;
use crate::metrics::Metrics;
use crate::store::{
    Actor, PruneBounds, PruneReport, ReplayGuard, Revocation, RevocationKind, Revoked, Session,
    StoreError,
};
use crate::strategy::{Strategy, StrategyKind, Target};
use crate::tunnel::Tunnels;

/// Folds rows (newest first) into one entry per session id, in order of each session's
/// newest row; the entry keeps the login row's metadata, the earliest creation and the
/// latest expiry.
fn one_per_session(rows: Vec<Session>) -> Vec<Session> {
    let mut out: Vec<Session> = Vec::new();
    for row in rows {
        match out.iter_mut().find(|s| s.session_id == row.session_id) {
            Some(session) => {
                session.expires_at = session.expires_at.max(row.expires_at);
                if row.created_at <= session.created_at {
                    let expires_at = session.expires_at;
                    *session = Session { expires_at, ..row };
                }
            }
            None => out.push(row),
        }
    }
    out
}

/// Rows deleted per prune transaction, so that the request path never waits long.
pub const PRUNE_BATCH: u32 = 500;

/// Why a revocation or a session list could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Sessions by id exist only under the allowlist.
    #[error("the {0} strategy keeps no session list")]
    NoSessions(StrategyKind),
    /// No session with that id (or not the caller's: the same answer, so ids cannot be
    /// probed).
    #[error("no such session")]
    NoSuchSession,
    /// A revocation made once only ([`Revocations::revoke_once`]) was asked again:
    /// nothing was changed.
    #[error("this revocation was already made (replayed id)")]
    Replayed,
    /// The store failed; nothing may be assumed revoked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The revocation door: the strategy, the verdict cache and the metrics it keeps in step.
#[derive(Clone)]
pub struct Revocations {
    strategy: Strategy,
    cache: Arc<VerdictCache>,
    tunnels: Arc<Tunnels>,
    metrics: Arc<Metrics>,
    log_retention_ms: i64,
}

impl Revocations {
    /// The door for a strategy; `log_retention_ms` is how long feed rows are kept.
    pub fn new(
        strategy: Strategy,
        cache: Arc<VerdictCache>,
        tunnels: Arc<Tunnels>,
        metrics: Arc<Metrics>,
        log_retention_ms: i64,
    ) -> Revocations {
        Revocations {
            strategy,
            cache,
            tunnels,
            metrics,
            log_retention_ms,
        }
    }

    /// Ends `target` on behalf of `by`; durable (and refused by this process) when it
    /// returns.
    pub async fn revoke(&self, target: Target<'_>, by: Actor) -> Result<Revoked, RevokeError> {
        self.apply(target, by, None).await
    }

    /// [`Revocations::revoke`], made once only under `guard`'s id (a back-channel logout
    /// token's `jti`): the id is remembered in the revocation's own transaction, so a
    /// failed revocation does not use it up, and a second call with it changes nothing
    /// and is [`RevokeError::Replayed`].
    pub async fn revoke_once(
        &self,
        target: Target<'_>,
        by: Actor,
        guard: ReplayGuard,
    ) -> Result<Revoked, RevokeError> {
        self.apply(target, by, Some(guard)).await
    }

    async fn apply(
        &self,
        target: Target<'_>,
        by: Actor,
        once: Option<ReplayGuard>,
    ) -> Result<Revoked, RevokeError> {
        let Some((change, kind)) = self.strategy.plan(&target) else {
            return match target {
                // Nothing to end: the strategy keeps no row for one token.
                Target::Replaced(_) => Ok(Revoked::default()),
                _ => Err(RevokeError::NoSessions(self.strategy.kind())),
            };
        };
        let user = change.user().map(str::to_owned);
        let revocation = Revocation {
            change,
            kind,
            by,
            once,
        };
        let revoked = self.strategy.store().revoke(revocation).await?;
        if revoked.replayed {
            return Err(RevokeError::Replayed);
        }
        let Some(seq) = revoked.seq else {
            return Err(RevokeError::NoSuchSession);
        };
        let user = user
            .or_else(|| revoked.sessions.first().map(|s| s.user_id.clone()))
            .unwrap_or_default();
        // What the change ended, not what was asked: a user-status logout is a cut-off.
        // The tunnels those tokens opened check them again and close.
        match kind {
            RevocationKind::LogoutAll | RevocationKind::Cutoff => {
                self.cache.forget_user(&user);
                self.tunnels.recheck(&Invalidation::User(user.clone()));
            }
            RevocationKind::Logout | RevocationKind::Session => {
                let one = match target {
                    Target::Token(token) | Target::Replaced(token) => Some(token.hash),
                    _ => None,
                };
                for hash in one
                    .into_iter()
                    .chain(revoked.sessions.iter().map(|s| s.token_hash))
                {
                    self.cache.forget_token(hash);
                    self.tunnels.recheck(&Invalidation::Token(hash));
                }
            }
        }
        self.metrics.revocation(kind.as_str(), by.as_str());
        // A list field (`crate::cli::LIST_FIELDS`): an array in JSON logs.
        let sessions: Vec<&str> = revoked
            .sessions
            .iter()
            .map(|s| s.session_id.as_str())
            .collect();
        let sessions = sessions.join(",");
        let token = match target {
            Target::Token(token) | Target::Replaced(token) => token.hash.short(),
            _ => String::from("-"),
        };
        tracing::info!(
            action = target.action(),
            kind = kind.as_str(),
            user = %user,
            sessions = %sessions,
            token = %token,
            by = by.as_str(),
            seq,
            "revoked"
        );
        Ok(revoked)
    }

    /// A user's live sessions, one per login (device), most recently used first: the
    /// rows of one session (its access tokens, refreshed ones included, and its refresh
    /// token) are shown as one, created at the login and expiring with its last token.
    pub async fn sessions(&self, user: &str) -> Result<Vec<Session>, RevokeError> {
        if !self.strategy.keeps_sessions() {
            return Err(RevokeError::NoSessions(self.strategy.kind()));
        }
        let rows = self
            .strategy
            .store()
            .list_sessions(user, crate::jwt::now())
            .await?;
        Ok(one_per_session(rows))
    }

    /// Keeps `user` within `max` sessions after a login created the session `newest`:
    /// ends the user's oldest other sessions (by creation; sessions created in the same
    /// second are taken in session-id order), as the actor `limit`. Returns the ids
    /// ended. A session that went meanwhile is skipped.
    pub async fn limit_sessions(
        &self,
        user: &str,
        newest: &str,
        max: u32,
    ) -> Result<Vec<String>, RevokeError> {
        let mut others: Vec<Session> = self
            .sessions(user)
            .await?
            .into_iter()
            .filter(|s| s.session_id != newest)
            .collect();
        // The new session counts as one of the `max`.
        let keep = usize::try_from(max).unwrap_or(usize::MAX).saturating_sub(1);
        let excess = others.len().saturating_sub(keep);
        others.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
        let mut ended = Vec::new();
        for session in others.iter().take(excess) {
            let target = Target::Session {
                id: &session.session_id,
                owner: Some(user),
            };
            match self.revoke(target, Actor::Limit).await {
                Ok(_) => ended.push(session.session_id.clone()),
                Err(RevokeError::NoSuchSession) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// Deletes rows that can no longer matter: expired tokens, and feed rows past
    /// `store.revocation_log_days`. Cut-offs are kept: without a bound on token
    /// lifetimes, an old cut-off may still be what refuses a long-lived token.
    pub async fn prune(&self) -> Result<PruneReport, StoreError> {
        let bounds = PruneBounds {
            now: crate::jwt::now(),
            cutoff_horizon: i64::MIN,
            log_horizon_ms: crate::jwt::now_ms().saturating_sub(self.log_retention_ms),
            batch: PRUNE_BATCH,
        };
        self.strategy.store().prune(bounds).await
    }
}
