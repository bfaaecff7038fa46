//! The token store: where liveness lives.
//!
//! This module owns the [`TokenStore`] contract and the types that cross it. A store
//! only keeps rows; what a row *means* (allowlisted, denied, cut off) is decided by
//! [`crate::strategy`]. SQLite ([`sqlite`]) is the single-node implementation;
//! PostgreSQL ([`postgres`]), shared by several replicas (SPEC §8), is a second
//! implementation of the same trait; `tests/store_contract.rs` runs one suite on both.
//!
//! Rows are keyed by [`TokenHash`], the SHA-256 of a token's signing input
//! (`header.payload`), never by the raw token (SPEC §1).

pub mod postgres;
pub mod postgres_tls;
mod schema;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A boxed future returned by store operations, so that the trait stays object safe
/// (the store is chosen at start and held as `Arc<dyn TokenStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A shared handle on the store chosen at start.
pub type SharedStore = Arc<dyn TokenStore>;

/// SHA-256 of a token's signing input (`header.payload`).
///
/// Hashing the signing input rather than the whole token makes every re-encoding of
/// the signature (ECDSA `s` → `n - s`) the same row.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a signing input (`header.payload`, without the signature).
    pub fn of_signing_input(signing_input: &[u8]) -> Self {
        TokenHash(Sha256::digest(signing_input).into())
    }

    /// A short hex prefix, safe to log: it names a token without revealing it.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", self.short())
    }
}

/// Which kind of token a `valid_token` row holds (SPEC §15, `valid_token.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A token a request may present as its bearer token.
    Access,
    /// A refresh token: only ever accepted on a refresh route, never as a bearer token.
    Refresh,
}

impl TokenKind {
    /// The name stored in the column.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    /// The kind a stored value names. Anything but `access` is read as a refresh token,
    /// so that a row this build does not understand is never a bearer token.
    pub fn from_stored(text: &str) -> TokenKind {
        if text == "access" {
            TokenKind::Access
        } else {
            TokenKind::Refresh
        }
    }
}

/// One allowlisted token (SPEC §7 `valid_token`). Every token of one login (its access
/// tokens, refreshed ones included, and its refresh token) shares the session id: a
/// session is one user on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The row key.
    pub token_hash: TokenHash,
    /// Random public identifier of the session; safe to show to its user.
    pub session_id: String,
    /// The user claim of the token.
    pub user_id: String,
    /// The token's `iat`, unix seconds, when it has one.
    pub issued_at: Option<i64>,
    /// The token's `exp`, unix seconds.
    pub expires_at: i64,
    /// When tokengate stored the row, unix seconds.
    pub created_at: i64,
    /// The `User-Agent` of the login request, if any.
    pub user_agent: Option<String>,
    /// The client address of the login request, if known.
    pub client_addr: Option<String>,
    /// Access or refresh token.
    pub kind: TokenKind,
    /// The token's `sid` claim (its identity provider's session), when it is a string:
    /// what an OIDC back-channel logout by `sid` ends (SPEC §13).
    pub sid: Option<String>,
}

/// Who made a revocation (SPEC §9, `revocation_log.by`): the audit trail's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The token's own user (`/logout`, `/logout-all`, `DELETE /sessions/{id}`).
    User,
    /// The admin API.
    Admin,
    /// `tokengate tokens revoke`.
    Cli,
    /// An identity provider's back-channel logout.
    Backchannel,
    /// The idle sweep: a session unused for `store.idle_timeout_seconds`.
    Idle,
    /// A login beyond `store.max_sessions_per_user` ended the user's oldest session.
    Limit,
}

impl Actor {
    /// The name written to the log and the audit line.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::User => "self",
            Actor::Admin => "admin",
            Actor::Cli => "cli",
            Actor::Backchannel => "backchannel",
            Actor::Idle => "idle",
            Actor::Limit => "limit",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a revocation ended (SPEC §9, `revocation_log.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// One token (`/logout` under allowlist or denylist).
    Logout,
    /// Every session of a user (`/logout-all` under allowlist).
    LogoutAll,
    /// One session, by its id.
    Session,
    /// A user's cut-off moved: every token issued before it is dead.
    Cutoff,
}

impl RevocationKind {
    /// The name written to the log.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Logout => "logout",
            RevocationKind::LogoutAll => "logout_all",
            RevocationKind::Session => "session",
            RevocationKind::Cutoff => "cutoff",
        }
    }

    /// The kind a log row names, if this build knows it.
    pub fn parse(text: &str) -> Option<RevocationKind> {
        [
            RevocationKind::Logout,
            RevocationKind::LogoutAll,
            RevocationKind::Session,
            RevocationKind::Cutoff,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// The rows one revocation changes. The strategy picks the change; the store applies it
/// and appends the feed row in the same transaction ([`TokenStore::revoke`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Delete every allowlist row of one token's session (its access and refresh
    /// tokens), or just the token's row when it has no session.
    DeleteTokenSession {
        /// The token.
        hash: TokenHash,
        /// Its user.
        user: String,
    },
    /// Delete the allowlist row of one token only (a refresh token replaced by rotation).
    DeleteToken {
        /// The token.
        hash: TokenHash,
        /// Its user.
        user: String,
    },
    /// List one token in `invalid_token` until it expires.
    DenyToken {
        /// The token.
        hash: TokenHash,
        /// Its user.
        user: String,
        /// Its `exp`: the row is useless after it.
        expires_at: i64,
    },
    /// Delete one session by its public id, only if it belongs to `owner` when given.
    DeleteSession {
        /// The session id.
        id: String,
        /// The user it must belong to; `None` for the admin API and the CLI.
        owner: Option<String>,
    },
    /// Delete every allowlist row of a user.
    DeleteUserSessions {
        /// The user.
        user: String,
    },
    /// Delete every session one of whose tokens carried the `sid` claim `sid`, only
    /// the sessions of `user` when given (an OIDC back-channel logout by `sid`).
    DeleteSidSessions {
        /// The identity provider's session id.
        sid: String,
        /// The user the sessions must belong to (the logout token's `sub`), if named.
        user: Option<String>,
    },
    /// Move a user's cut-off to `at` (never backwards) and delete the user's allowlist
    /// rows (the exceptions captured before it).
    CutOff {
        /// The user.
        user: String,
        /// Unix seconds.
        at: i64,
    },
}

impl Change {
    /// The user a change names up front (a session id names its user only by its row).
    pub fn user(&self) -> Option<&str> {
        match self {
            Change::DeleteToken { user, .. }
            | Change::DeleteTokenSession { user, .. }
            | Change::DenyToken { user, .. }
            | Change::DeleteUserSessions { user }
            | Change::CutOff { user, .. } => Some(user),
            Change::DeleteSidSessions { user, .. } => user.as_deref(),
            Change::DeleteSession { .. } => None,
        }
    }
}

/// One revocation as the store writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The rows to change.
    pub change: Change,
    /// What the feed row calls it.
    pub kind: RevocationKind,
    /// Who asked.
    pub by: Actor,
    /// When set, the revocation is made once only: the store remembers this id in the
    /// same transaction and refuses a second revocation under it ([`Revoked::replayed`]).
    pub once: Option<ReplayGuard>,
}

/// The id under which a revocation may be made once only: a back-channel logout
/// token's `jti` (OIDC Back-Channel Logout 1.0 §2.6), kept in `backchannel_jti` until
/// the token could no longer verify, then pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayGuard {
    /// The `jti`.
    pub jti: String,
    /// Unix seconds after which the token it came from can no longer verify (its `exp`
    /// plus the leeway): the row is kept until then.
    pub expires_at: i64,
    /// Unix seconds now: a remembered id whose row expired before this (not pruned
    /// yet) no longer counts, its token being dead.
    pub now: i64,
}

/// A feed row as written, before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `revocation_log.kind`.
    pub kind: RevocationKind,
    /// The user whose tokens the row ends.
    pub user_id: String,
    /// Set when one token was revoked.
    pub token_hash: Option<TokenHash>,
    /// Set when one session was revoked.
    pub session_id: Option<String>,
    /// Who asked.
    pub by: Actor,
}

impl LogEntry {
    /// The feed rows of a revocation, given the allowlist rows it deleted: one row, or
    /// none when it changed nothing at all (a session id or `sid` that matched no row),
    /// so that a miss leaves no trace and no invalidation. A row names one token only
    /// when one token went; when a session of several went, it names the session, and
    /// readers forget every cached token of the user. A `sid` logout writes one row per
    /// user it touched (a row names one user), naming the session when it was the
    /// user's only one.
    pub fn of(revocation: &Revocation, deleted: &[Session]) -> Vec<LogEntry> {
        if let Change::DeleteSidSessions { .. } = &revocation.change {
            return LogEntry::per_user(revocation, deleted);
        }
        LogEntry::single(revocation, deleted).into_iter().collect()
    }

    /// One row per user among `deleted`, in the order they first appear.
    fn per_user(revocation: &Revocation, deleted: &[Session]) -> Vec<LogEntry> {
        let mut users: Vec<&str> = Vec::new();
        for row in deleted {
            if !users.contains(&row.user_id.as_str()) {
                users.push(&row.user_id);
            }
        }
        users
            .into_iter()
            .map(|user| {
                let rows: Vec<&Session> = deleted.iter().filter(|s| s.user_id == user).collect();
                let one_session = rows.iter().all(|s| s.session_id == rows[0].session_id);
                LogEntry {
                    kind: revocation.kind,
                    user_id: user.to_owned(),
                    token_hash: (rows.len() == 1).then_some(rows[0].token_hash),
                    session_id: one_session.then(|| rows[0].session_id.clone()),
                    by: revocation.by,
                }
            })
            .collect()
    }

    fn single(revocation: &Revocation, deleted: &[Session]) -> Option<LogEntry> {
        let one = deleted.first();
        let several = deleted.len() > 1;
        let (user_id, token_hash, session_id) = match &revocation.change {
            Change::DeleteToken { hash, user }
            | Change::DeleteTokenSession { hash, user }
            | Change::DenyToken { hash, user, .. } => (
                user.clone(),
                (!several).then_some(*hash),
                one.map(|s| s.session_id.clone()),
            ),
            Change::DeleteSession { .. } => {
                let row = one?;
                (
                    row.user_id.clone(),
                    (!several).then_some(row.token_hash),
                    Some(row.session_id.clone()),
                )
            }
            Change::DeleteUserSessions { user } | Change::CutOff { user, .. } => {
                (user.clone(), None, None)
            }
            // Written per user by `LogEntry::per_user`.
            Change::DeleteSidSessions { .. } => return None,
        };
        Some(LogEntry {
            kind: revocation.kind,
            user_id,
            token_hash,
            session_id,
            by: revocation.by,
        })
    }
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revoked {
    /// The allowlist rows it deleted.
    pub sessions: Vec<Session>,
    /// The (last) feed row it appended (`None` when nothing matched), with its number.
    pub seq: Option<i64>,
    /// Its [`ReplayGuard`] id had been used already: nothing was changed.
    pub replayed: bool,
}

/// A session the idle sweep found unused (SPEC §13, `store.idle_timeout_seconds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleSession {
    /// The session id.
    pub session_id: String,
    /// Its user.
    pub user_id: String,
}

/// One row of `revocation_log` as read back (SPEC §9). Fields that a newer build or a
/// damaged file could fill with something this build cannot use are kept raw, so that
/// the reader can treat such a row as "flush everything" instead of failing forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    /// Strictly increasing, in commit order.
    pub seq: i64,
    /// Commit time, unix milliseconds.
    pub at_ms: i64,
    /// `logout | logout_all | session | cutoff`.
    pub kind: String,
    /// The user whose tokens the row ends.
    pub user_id: String,
    /// The token's hash when one token was revoked (32 bytes in a sound row).
    pub token_hash: Option<Vec<u8>>,
    /// The session id when one session was revoked.
    pub session_id: Option<String>,
    /// `self | admin | cli | backchannel`.
    pub by: String,
}

/// A push signal from a store that has one (PostgreSQL `LISTEN`): the feed reader reads
/// at once instead of waiting for its next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedSignal {
    /// The listening connection is (again) up: anything may have been missed before.
    Connected,
    /// A revocation was committed somewhere.
    Notified,
    /// The listening connection failed; it is reopened with backoff.
    Lost(String),
}

/// How many rows one prune removed, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Expired rows of `valid_token`.
    pub valid_token: u64,
    /// Expired rows of `invalid_token`.
    pub invalid_token: u64,
    /// Cut-offs of `user_status` older than the horizon given to [`TokenStore::prune`].
    pub user_status: u64,
    /// Rows of `revocation_log` older than `store.revocation_log_days`.
    pub revocation_log: u64,
    /// Rows of `backchannel_jti` whose logout token can no longer verify.
    pub backchannel_jti: u64,
}

impl PruneReport {
    /// Rows removed in all tables.
    pub fn total(&self) -> u64 {
        self.valid_token
            + self.invalid_token
            + self.user_status
            + self.revocation_log
            + self.backchannel_jti
    }
}

/// What a prune may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneBounds {
    /// Tokens that expired at or before this (unix seconds) go.
    pub now: i64,
    /// Cut-offs set before this (unix seconds) go.
    pub cutoff_horizon: i64,
    /// Feed rows committed before this (unix milliseconds) go.
    pub log_horizon_ms: i64,
    /// Rows per transaction, so that no single transaction holds the database for long.
    pub batch: u32,
}

/// A store operation failed. On the request path this is always a 503 (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("{0}")]
    Backend(String),
    /// The database holds a schema newer than this build understands.
    #[error("database schema version {found} is newer than this tokengate supports ({supported})")]
    SchemaTooNew {
        /// The version recorded in the database (SQLite `user_version`, PostgreSQL
        /// `tokengate_schema_version`).
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
}

/// The storage contract shared by every backend.
///
/// A store keeps rows; what they mean is [`crate::strategy`]'s business. Every write is
/// durable when its future resolves: a revocation is answered only after it is on disk
/// (SPEC §7). Implementations must see writes made by other processes on the same
/// database (the CLI, other replicas) on their very next call.
pub trait TokenStore: Send + Sync + 'static {
    /// Answers when the store is reachable (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Stores an allowlisted token and returns the row now stored. Inserting a hash
    /// that is already present keeps the existing row (the same token captured twice is
    /// one session) and returns it. The row is read back in the same transaction, so a
    /// success means the write is durable.
    fn insert_session(&self, session: Session) -> StoreFuture<'_, Session>;

    /// The allowlist row of a token, if it is there.
    fn find_session(&self, hash: TokenHash) -> StoreFuture<'_, Option<Session>>;

    /// A user's allowlist rows not yet expired at `now`, newest first (several rows may
    /// share a session).
    fn list_sessions<'a>(&'a self, user: &'a str, now: i64) -> StoreFuture<'a, Vec<Session>>;

    /// How many sessions have a row not yet expired at `now` (the live-sessions gauge).
    fn count_sessions(&self, now: i64) -> StoreFuture<'_, u64>;

    /// Whether a token is listed as revoked (denylist).
    fn is_denied(&self, hash: TokenHash) -> StoreFuture<'_, bool>;

    /// A user's logout cut-off, if one is set.
    fn cutoff<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Option<i64>>;

    /// Applies a revocation's change and appends its feed row ([`LogEntry::of`]) in one
    /// transaction, durable when it resolves. On PostgreSQL the commit also notifies
    /// `tokengate_revocations`, and revocations are serialized so that `seq` order is
    /// commit order: a reader that has seen row `n` can never later meet a row below it.
    /// With a [`ReplayGuard`], its id is remembered in the same transaction, and when it
    /// is remembered already (and not expired) nothing changes and the answer is
    /// [`Revoked::replayed`]: a failed revocation does not use the id up.
    fn revoke(&self, revocation: Revocation) -> StoreFuture<'_, Revoked>;

    /// Records that sessions were used: `last_used_at` of every row of each session
    /// becomes the given unix second, unless it is later already. One transaction.
    fn touch_sessions(&self, uses: Vec<(String, i64)>) -> StoreFuture<'_, ()>;

    /// Sessions not yet expired at `now` whose last use (the latest `last_used_at` or
    /// `created_at` of their rows) is at or before `idle_since`; at most `limit`.
    fn idle_sessions(
        &self,
        idle_since: i64,
        now: i64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<IdleSession>>;

    /// The highest `seq` in the feed (0 when it is empty): where a new reader starts.
    fn feed_head(&self) -> StoreFuture<'_, i64>;

    /// Feed rows with `seq > after`, in order, at most `limit`.
    fn read_feed(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<FeedRow>>;

    /// Starts listening for revocations committed anywhere, if this backend can push
    /// them (PostgreSQL); `None` when the feed can only be polled (SQLite).
    fn listen(&self) -> Option<tokio::sync::mpsc::Receiver<FeedSignal>> {
        None
    }

    /// Deletes rows that can no longer matter ([`PruneBounds`]), in batches.
    fn prune(&self, bounds: PruneBounds) -> StoreFuture<'_, PruneReport>;
}

/// Opens the store a config names: creates and migrates the schema. Async because
/// PostgreSQL connects over the network (bounded by a connect timeout).
pub async fn open(backend: &crate::config::StoreBackend) -> Result<SharedStore, StoreError> {
    match backend {
        crate::config::StoreBackend::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path)?)),
        crate::config::StoreBackend::Postgres(url) => {
            Ok(Arc::new(postgres::PostgresStore::connect(url).await?))
        }
    }
}
