//! What both stores share: table and column names, the schema version rule, the prune
//! sweep, and the clock of the revocation feed.
//!
//! Each backend keeps its own SQL dialect (placeholders, types, migrations in its own
//! types); what must agree between them is written once here, so that a SQLite file and
//! a PostgreSQL schema of the same version hold the same tables with the same meaning.

use std::future::Future;

use super::{PruneBounds, PruneReport, StoreError};

/// The allowlist table.
pub(super) const VALID_TOKEN: &str = "valid_token";
/// The denylist table.
pub(super) const INVALID_TOKEN: &str = "invalid_token";
/// The per-user logout cut-offs.
pub(super) const USER_STATUS: &str = "user_status";
/// The revocation feed and audit trail (SPEC §9).
pub(super) const REVOCATION_LOG: &str = "revocation_log";
/// The `jti`s of the back-channel logout tokens already acted on (SPEC §13).
pub(super) const BACKCHANNEL_JTI: &str = "backchannel_jti";

/// The columns of a [`super::Session`], in the order both backends read them.
pub(super) const SESSION_COLUMNS: &str =
    "token_hash, session_id, user_id, issued_at, expires_at, created_at, user_agent, client_addr, kind, sid";
/// The columns of a [`super::FeedRow`], in the order both backends read them.
pub(super) const FEED_COLUMNS: &str = "seq, at_ms, kind, user_id, token_hash, session_id, by";
/// The columns a revocation writes to the feed, after `at_ms` (which each backend fills
/// from its clock).
pub(super) const LOG_INSERT_COLUMNS: &str = "at_ms, kind, user_id, token_hash, session_id, by";

/// The schema version both backends are at once migrated: 1 is SPEC §7, 2 adds
/// `revocation_log` (SPEC §9), 3 adds `valid_token.kind` and lets the rows of one
/// session share its id (SPEC §15), 4 adds `valid_token.sid`, `valid_token.last_used_at`
/// and `backchannel_jti` (SPEC §13: back-channel logout, idle sessions).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Refuses a schema written by a newer tokengate: its rows may mean something else.
pub(super) fn check_version(found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// One table a prune sweeps, with the condition that makes a row useless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sweep {
    /// Allowlist rows whose token expired.
    ValidToken,
    /// Denylist rows whose token expired.
    InvalidToken,
    /// Cut-offs older than the horizon.
    UserStatus,
    /// Feed rows older than `store.revocation_log_days`.
    RevocationLog,
    /// Remembered logout-token `jti`s whose token can no longer verify.
    BackchannelJti,
}

impl Sweep {
    /// Every sweep, in the order a prune runs them.
    pub(super) const ALL: [Sweep; 5] = [
        Sweep::ValidToken,
        Sweep::InvalidToken,
        Sweep::UserStatus,
        Sweep::RevocationLog,
        Sweep::BackchannelJti,
    ];

    /// The table swept.
    pub(super) fn table(self) -> &'static str {
        match self {
            Sweep::ValidToken => VALID_TOKEN,
            Sweep::InvalidToken => INVALID_TOKEN,
            Sweep::UserStatus => USER_STATUS,
            Sweep::RevocationLog => REVOCATION_LOG,
            Sweep::BackchannelJti => BACKCHANNEL_JTI,
        }
    }

    /// The condition on a row, with `{bound}` where the backend puts its placeholder.
    pub(super) fn condition(self, bound: &str) -> String {
        match self {
            Sweep::ValidToken | Sweep::InvalidToken | Sweep::BackchannelJti => {
                format!("expires_at <= {bound}")
            }
            Sweep::UserStatus => format!("logged_out_at < {bound}"),
            Sweep::RevocationLog => format!("at_ms < {bound}"),
        }
    }

    fn bound(self, bounds: &PruneBounds) -> i64 {
        match self {
            Sweep::ValidToken | Sweep::InvalidToken | Sweep::BackchannelJti => bounds.now,
            Sweep::UserStatus => bounds.cutoff_horizon,
            Sweep::RevocationLog => bounds.log_horizon_ms,
        }
    }

    fn count(self, report: &mut PruneReport) -> &mut u64 {
        match self {
            Sweep::ValidToken => &mut report.valid_token,
            Sweep::InvalidToken => &mut report.invalid_token,
            Sweep::UserStatus => &mut report.user_status,
            Sweep::RevocationLog => &mut report.revocation_log,
            Sweep::BackchannelJti => &mut report.backchannel_jti,
        }
    }
}

/// Runs every sweep, `bounds.batch` rows per call of `delete` (each call its own
/// transaction, so request-path writes interleave with a long prune).
///
/// `delete(sweep, bound, limit)` deletes at most `limit` matching rows and says how
/// many went; fewer than `limit` means the sweep is done.
pub(super) async fn prune<F, Fut>(
    bounds: PruneBounds,
    mut delete: F,
) -> Result<PruneReport, StoreError>
where
    F: FnMut(Sweep, i64, i64) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    // A zero batch would never finish; one row at a time still does.
    let limit = i64::from(bounds.batch.max(1));
    let mut report = PruneReport::default();
    for sweep in Sweep::ALL {
        let bound = sweep.bound(&bounds);
        loop {
            let deleted = delete(sweep, bound, limit).await?;
            *sweep.count(&mut report) += deleted;
            if deleted < limit.unsigned_abs() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(report)
}
