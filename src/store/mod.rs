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

/// One allowlisted token: a session of one user on one device (SPEC §7 `valid_token`).
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
}

impl PruneReport {
    /// Rows removed in all tables.
    pub fn total(&self) -> u64 {
        self.valid_token + self.invalid_token + self.user_status
    }
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
/// Every write is durable when its future resolves: a revocation is answered only after
/// it is on disk (SPEC §7). Implementations must see writes made by other processes on
/// the same database (the CLI, other replicas) on their very next call.
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

    /// Deletes the allowlist row of a token; true when a row went.
    fn delete_session_by_hash(&self, hash: TokenHash) -> StoreFuture<'_, bool>;

    /// Deletes a session by its public id, only if it belongs to `user` when one is
    /// given; returns the deleted row.
    fn delete_session<'a>(
        &'a self,
        session_id: &'a str,
        user: Option<&'a str>,
    ) -> StoreFuture<'a, Option<Session>>;

    /// Deletes every allowlist row of a user; returns the ids of the sessions that went
    /// (for the audit log).
    fn delete_user_sessions<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Vec<String>>;

    /// A user's sessions not yet expired at `now`, newest first.
    fn list_sessions<'a>(&'a self, user: &'a str, now: i64) -> StoreFuture<'a, Vec<Session>>;

    /// How many allowlist rows are not yet expired at `now` (the live-sessions gauge).
    fn count_sessions(&self, now: i64) -> StoreFuture<'_, u64>;

    /// Lists a token as revoked until its expiry (denylist).
    fn deny<'a>(&'a self, hash: TokenHash, user: &'a str, expires_at: i64) -> StoreFuture<'a, ()>;

    /// Whether a token is listed as revoked (denylist).
    fn is_denied(&self, hash: TokenHash) -> StoreFuture<'_, bool>;

    /// Sets a user's logout cut-off to `at` (unix seconds); never moves it backwards.
    fn set_cutoff<'a>(&'a self, user: &'a str, at: i64) -> StoreFuture<'a, ()>;

    /// A user's logout cut-off, if one is set.
    fn cutoff<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Option<i64>>;

    /// Deletes rows that can no longer matter: tokens expired before `now`, and cut-offs
    /// set before `cutoff_horizon`. Works in batches of `batch` rows so that no single
    /// transaction holds the database for long.
    fn prune(&self, now: i64, cutoff_horizon: i64, batch: u32) -> StoreFuture<'_, PruneReport>;
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
