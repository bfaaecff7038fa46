//! The PostgreSQL token store: one database shared by several replicas (SPEC §7, §8).
//!
//! [`PostgresStore`] owns its connections to the database, the schema and its
//! migrations, and the SQL behind every [`TokenStore`] operation, with the semantics of
//! [`super::sqlite`] (`tests/store_contract.rs` runs one suite against both). What a row
//! means is left to [`crate::strategy`].
//!
//! # Concurrency
//!
//! The handle is a cheap `Clone` around an `Arc<Inner>` holding a small fixed set of
//! connections, each with every statement prepared once when it opens (this backend's
//! `prepare_cached`):
//!
//! - **Two shared connections** carry every single-statement operation, reads and writes
//!   alike. A tokio-postgres `Client` pipelines: many tasks send their queries down one
//!   connection without waiting for each other's answers, so a task picks a connection
//!   round robin and locks nothing while its query runs. A single-statement write
//!   commits on its own, and its future resolves only after the commit.
//! - **One transaction connection**, behind an async mutex held for the length of a
//!   transaction: a transaction needs its connection to itself, or queries pipelined by
//!   other tasks would land inside it. `insert_session` and `revoke` use it.
//!
//! A connection whose socket died (server restart, `pg_terminate_backend`, a network
//! cut) is replaced on its next use. An operation that meets a dead connection or an
//! unreachable server returns a [`StoreError`], which the gate turns into a 503 (fail
//! closed), never a panic or a guess. Operations that are safe to repeat (the reads,
//! `insert_session`, `revoke` except by session id) are retried once on a new connection when
//! theirs turns out to be dead, so a server restart costs no 503 on the hot path. One
//! reconnection attempt runs at a time per connection, and tasks queued behind an
//! attempt that failed get its error instead of each trying in turn. Every operation,
//! reconnection included, gets an answer within five seconds.
//!
//! # Several replicas (SPEC §8)
//!
//! The store caches nothing: every check is a query on the shared database at
//! PostgreSQL's default READ COMMITTED isolation, where each statement sees every
//! transaction committed before it began. A revocation is answered only after its commit.
//! The verdict cache above the store ([`crate::cache`]) learns of it from the feed: every
//! revocation appends its `revocation_log` row in the same transaction, under a per-schema
//! lock held to the commit (so `seq` order is commit order), and notifies
//! `tokengate_revocations` with the commit; [`TokenStore::listen`] keeps a `LISTEN`
//! connection (`<application_name>-feed`) open for the reader.
//! Durability follows the server's `synchronous_commit` (default `on`: the commit is in
//! the WAL on disk before it is acknowledged); do not turn it off for tokengate's role.
//!
//! Migrations run at connect in one transaction under a transaction-scoped advisory lock,
//! so replicas starting together migrate exactly once; the version is the single row of
//! `tokengate_schema_version`, and a schema newer than this build is refused
//! ([`StoreError::SchemaTooNew`]). The tables live in the first schema of the
//! connection's `search_path` (set it in the URL with `options=-csearch_path%3Dname`).

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::config::Host;
use tokio_postgres::{AsyncMessage, Client, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::postgres_tls::TlsSettings;

use super::schema::{
    self, check_version, Sweep, BACKCHANNEL_JTI, FEED_COLUMNS, INVALID_TOKEN, LOG_INSERT_COLUMNS,
    REVOCATION_LOG, SCHEMA_VERSION, SESSION_COLUMNS, USER_STATUS, VALID_TOKEN,
};
use super::{
    Change, FeedRow, FeedSignal, IdleSession, LogEntry, PruneBounds, PruneReport, Revocation,
    Revoked, Session, StoreError, StoreFuture, TokenHash, TokenKind, TokenStore,
};

/// How many pipelined connections carry single-statement operations.
const SHARED_CONNECTIONS: usize = 2;
/// How long opening a connection may take, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one operation may take, reconnection included, before it fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Unacknowledged data for this long closes a connection (Linux `TCP_USER_TIMEOUT`), so a
/// peer that vanished without a reset is noticed, unless the URL sets `tcp_user_timeout`.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// How tokengate's sessions show in `pg_stat_activity`, unless the URL names another.
const APPLICATION_NAME: &str = "tokengate";

/// The single-row table that records the schema version.
const SCHEMA_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS tokengate_schema_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version   BIGINT NOT NULL
)";
/// Serializes migrations of one schema across every process on the database. The first
/// key names tokengate among the database's advisory locks ("tkng"), the second the schema.
const MIGRATION_LOCK: &str =
    "SELECT pg_advisory_xact_lock(1953197671, hashtext(coalesce(current_schema(), '')))";
/// Serializes revocations of one schema (second key "tknf"), held to the commit: `seq`
/// values are then handed out in commit order, so a feed reader that has seen row `n`
/// never later meets a row below `n` committed by a slower transaction.
const FEED_LOCK: &str =
    "SELECT pg_advisory_xact_lock(1953197670, hashtext(coalesce(current_schema(), '')))";
/// The channel a revocation notifies after its commit (SPEC §9), without payload.
const FEED_CHANNEL: &str = "tokengate_revocations";
/// The listening connection is reopened after a failure with a backoff from this...
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...doubling up to this.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Schema migrations; entry `i` takes the version from `i` to `i + 1`. The schema of
/// SPEC §7 in PostgreSQL's types: BYTEA keys, BIGINT unix seconds, TEXT.
const MIGRATIONS: &[&str] = &[
    // Version 1. `session_id UNIQUE` is its own index.
    "CREATE TABLE valid_token (
        token_hash  BYTEA PRIMARY KEY,
        session_id  TEXT NOT NULL UNIQUE,
        user_id     TEXT NOT NULL,
        issued_at   BIGINT,
        expires_at  BIGINT NOT NULL,
        created_at  BIGINT NOT NULL,
        user_agent  TEXT,
        client_addr TEXT
    );
    CREATE INDEX valid_token_user_id ON valid_token (user_id);
    CREATE INDEX valid_token_expires_at ON valid_token (expires_at);
    CREATE TABLE invalid_token (
        token_hash BYTEA PRIMARY KEY, user_id TEXT NOT NULL, expires_at BIGINT NOT NULL
    );
    CREATE INDEX invalid_token_user_id ON invalid_token (user_id);
    CREATE INDEX invalid_token_expires_at ON invalid_token (expires_at);
    CREATE TABLE user_status (
        user_id TEXT PRIMARY KEY, logged_out_at BIGINT NOT NULL
    );
    CREATE INDEX user_status_logged_out_at ON user_status (logged_out_at);",
    // Version 2: the revocation feed of SPEC §9.
    "CREATE TABLE revocation_log (
        seq        BIGSERIAL PRIMARY KEY,
        at_ms      BIGINT NOT NULL,
        kind       TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        token_hash BYTEA,
        session_id TEXT,
        by         TEXT NOT NULL
    );
    CREATE INDEX revocation_log_at_ms ON revocation_log (at_ms);",
    // Version 3: `kind`, and session ids shared by the tokens of one login.
    "ALTER TABLE valid_token DROP CONSTRAINT IF EXISTS valid_token_session_id_key;
    ALTER TABLE valid_token ADD COLUMN kind TEXT NOT NULL DEFAULT 'access';
    CREATE INDEX valid_token_session_id ON valid_token (session_id);",
    // Version 4 (SPEC §13): the `sid` claim a token carried (back-channel logout), the
    // last use of a session (idle timeout), and the logout-token ids already acted on.
    "ALTER TABLE valid_token ADD COLUMN sid TEXT;
    ALTER TABLE valid_token ADD COLUMN last_used_at BIGINT;
    CREATE INDEX valid_token_sid ON valid_token (sid);
    CREATE TABLE backchannel_jti (
        jti        TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX backchannel_jti_expires_at ON backchannel_jti (expires_at);",
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// Names a `store.postgres_url` for messages and summaries without its credentials
/// (`postgres://user@host:port/db`), or a fixed text when it does not parse.
pub fn redacted(url: &str) -> String {
    parse_url(url).map_or_else(|_| "postgres (unparsable URL)".into(), |c| describe(&c))
}

/// Parses a `store.postgres_url` (a `postgres://` URL or a `key=value` string) and checks
/// what this build can use. The error never repeats the URL: it may hold a password.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    parse_with_tls(url).map(|(config, _)| config)
}

/// [`parse_url`], and what the URL asks of TLS ([`super::postgres_tls`]).
fn parse_with_tls(url: &str) -> Result<(tokio_postgres::Config, TlsSettings), String> {
    let (url, tls) = super::postgres_tls::split(url)?;
    let config = tokio_postgres::Config::from_str(&url)
        .map_err(|e| format!("is not a valid PostgreSQL URL: {}", chain(&e)))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err("names no host".into());
    }
    Ok((config, tls))
}

/// A [`TokenStore`] on a PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.inner.target.name)
            .finish_non_exhaustive()
    }
}

/// The connections shared by every clone of a [`PostgresStore`].
struct Inner {
    target: Target,
    shared: Vec<Slot<Arc<Conn>>>,
    next_shared: AtomicUsize,
    transactions: Slot<Box<Conn>>,
}

/// Where to connect, and how to name it in messages without its credentials.
struct Target {
    config: tokio_postgres::Config,
    /// TLS as `sslmode` asks (unused with `sslmode=disable`).
    tls: MakeRustlsConnect,
    /// `postgres://user@host:port/db`: never the password.
    name: String,
    /// Scrubbed from every message, in case a server ever repeats it.
    password: Option<String>,
    connect_timeout: Duration,
}

/// One open connection and its prepared statements.
struct Conn {
    /// Tells this connection from its replacement in the same [`Slot`].
    id: u64,
    client: Client,
    statements: Statements,
}

/// A place for one connection, opened again on the next use after it died.
struct Slot<C> {
    state: Mutex<SlotState<C>>,
    /// Reconnection attempts that failed, so that tasks queued behind one learn of it.
    failures: AtomicU64,
}

struct SlotState<C> {
    conn: Option<C>,
    last_error: Option<String>,
}

/// Why a query failed, before it is named with its database.
enum QueryError {
    Pg(tokio_postgres::Error),
    /// A row that does not fit a [`Session`] (e.g. a hash that is not 32 bytes).
    Decode(String),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueryError::Pg(e)
    }
}

/// Whether an operation may run again after its connection died mid-way: repeating it
/// leaves the same rows and gives the same answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

impl PostgresStore {
    /// Connects to the database at `url`, creates or migrates the schema, and opens the
    /// connections. Fails with one line that names the database (never its password).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let (config, tls) = parse_with_tls(url)
            .map_err(|e| StoreError::Backend(format!("store.postgres_url: {e}")))?;
        let tls = super::postgres_tls::connector(&tls)
            .map_err(|e| StoreError::Backend(format!("store.postgres_url: {e}")))?;
        let target = Target::new(config, tls);
        let mut client = connect_client(&target).await?;
        migrate(&target, &mut client).await?;
        let transactions = Slot::new(Conn::ready(client, &target).await?);
        let mut shared = Vec::with_capacity(SHARED_CONNECTIONS);
        for _ in 0..SHARED_CONNECTIONS {
            shared.push(Slot::new(Conn::open(&target).await?));
        }
        tracing::debug!(database = %target.name, "connected to the token store");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                target,
                shared,
                next_shared: AtomicUsize::new(0),
                transactions,
            }),
        })
    }

    /// The database, named without credentials (`postgres://user@host:port/db`).
    pub fn database(&self) -> &str {
        &self.inner.target.name
    }

    /// Runs a single-statement operation on a shared connection, pipelined with others.
    async fn run<T, F, Fut>(&self, retry: Retry, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        let inner = &*self.inner;
        let index = inner.next_shared.fetch_add(1, Ordering::Relaxed) % inner.shared.len();
        // The same slot on a retry: it is the one now known to need a new connection.
        let slot = &inner.shared[index];
        let op = &op;
        inner
            .retrying(retry, move || async move {
                let conn = Arc::clone(&*slot.connected(&inner.target).await?);
                let id = conn.id;
                let result = op(conn).await;
                slot.forget_if_lost(id, &result, &inner.target).await;
                Ok(result)
            })
            .await
    }

    /// Runs a transaction on the transaction connection, which it holds throughout.
    async fn run_transaction<T, F>(&self, retry: Retry, op: F) -> Result<T, StoreError>
    where
        F: for<'c> Fn(
            &'c mut Conn,
        ) -> Pin<Box<dyn Future<Output = Result<T, QueryError>> + Send + 'c>>,
    {
        let inner = &*self.inner;
        let slot = &inner.transactions;
        let op = &op;
        inner
            .retrying(retry, move || async move {
                let mut conn = slot.connected(&inner.target).await?;
                let id = conn.id;
                let result = op(&mut conn).await;
                drop(conn);
                slot.forget_if_lost(id, &result, &inner.target).await;
                Ok(result)
            })
            .await
    }
}

impl Inner {
    /// The one retry loop: runs `attempt`, and when it met a lost connection and the
    /// operation is safe to repeat, once more on a new connection; bounded in time.
    async fn retrying<T, F, Fut>(&self, retry: Retry, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Result<T, QueryError>, StoreError>>,
    {
        self.bounded(async {
            let mut again = retry == Retry::Once;
            loop {
                match attempt().await? {
                    Err(QueryError::Pg(e)) if connection_lost(&e) && again => again = false,
                    result => return result.map_err(|e| self.target.query_failure(&e)),
                }
            }
        })
        .await
    }

    /// Bounds an operation in time: a database that stops answering is a store error.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Backend(format!(
                "database {}: no answer within {} s",
                self.target.name,
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl TokenStore for PostgresStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.run(Retry::Once, |conn| async move {
            conn.client.execute(&conn.statements.ping, &[]).await?;
            Ok(())
        }))
    }

    fn insert_session(&self, session: Session) -> StoreFuture<'_, Session> {
        // Safe to repeat: the retry finds the row if the first commit went.
        Box::pin(self.run_transaction(Retry::Once, move |conn| {
            let session = session.clone();
            Box::pin(async move { insert_in_transaction(conn, &session).await })
        }))
    }

    fn find_session(&self, hash: TokenHash) -> StoreFuture<'_, Option<Session>> {
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            match conn
                .client
                .query_opt(&s.find_session, &[&&hash.0[..]])
                .await?
            {
                Some(row) => Ok(Some(session_from_row(&row)?)),
                None => Ok(None),
            }
        }))
    }

    fn list_sessions<'a>(&'a self, user: &'a str, now: i64) -> StoreFuture<'a, Vec<Session>> {
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            let rows = conn.client.query(&s.list_sessions, &[&user, &now]).await?;
            rows.iter().map(session_from_row).collect()
        }))
    }

    fn count_sessions(&self, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            let row = conn.client.query_one(&s.count_sessions, &[&now]).await?;
            let n: i64 = row.try_get(0)?;
            Ok(n.max(0) as u64)
        }))
    }

    fn is_denied(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            let row = conn.client.query_one(&s.is_denied, &[&&hash.0[..]]).await?;
            Ok(row.try_get(0)?)
        }))
    }

    fn cutoff<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Option<i64>> {
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            match conn.client.query_opt(&s.cutoff, &[&user]).await? {
                Some(row) => Ok(Some(row.try_get(0)?)),
                None => Ok(None),
            }
        }))
    }

    fn revoke(&self, revocation: Revocation) -> StoreFuture<'_, Revoked> {
        // Repeating a revocation after a lost commit leaves the same rows (and at most
        // a second feed row), except a session revoked by id: its repeat would find
        // nothing and answer 404 for a session that did go; and one made once only: its
        // repeat would find its id remembered and call a logout that did happen a replay.
        let retry = match revocation.change {
            _ if revocation.once.is_some() => Retry::Never,
            Change::DeleteSession { .. } => Retry::Never,
            _ => Retry::Once,
        };
        Box::pin(self.run_transaction(retry, move |conn| {
            let revocation = revocation.clone();
            Box::pin(async move { revoke_in_transaction(conn, &revocation).await })
        }))
    }

    fn touch_sessions(&self, uses: Vec<(String, i64)>) -> StoreFuture<'_, ()> {
        // Safe to repeat: GREATEST leaves the same values.
        Box::pin(self.run_transaction(Retry::Once, move |conn| {
            let uses = uses.clone();
            Box::pin(async move {
                let Conn {
                    client, statements, ..
                } = conn;
                let tx = client.transaction().await?;
                for (session_id, at) in &uses {
                    tx.execute(&statements.touch_session, &[session_id, at])
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        }))
    }

    fn idle_sessions(
        &self,
        idle_since: i64,
        now: i64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<IdleSession>> {
        let limit = i64::from(limit);
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            let rows = conn
                .client
                .query(&s.idle_sessions, &[&idle_since, &now, &limit])
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(IdleSession {
                        session_id: r.try_get(0)?,
                        user_id: r.try_get(1)?,
                    })
                })
                .collect()
        }))
    }

    fn feed_head(&self) -> StoreFuture<'_, i64> {
        Box::pin(self.run(Retry::Once, |conn| async move {
            let row = conn
                .client
                .query_one(&conn.statements.feed_head, &[])
                .await?;
            Ok(row.try_get(0)?)
        }))
    }

    fn read_feed(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<FeedRow>> {
        let limit = i64::from(limit);
        Box::pin(self.run(Retry::Once, move |conn| async move {
            let s = &conn.statements;
            let rows = conn.client.query(&s.read_feed, &[&after, &limit]).await?;
            rows.iter().map(feed_row).collect()
        }))
    }

    fn listen(&self) -> Option<mpsc::Receiver<FeedSignal>> {
        let (signals, receiver) = mpsc::channel(16);
        tokio::spawn(listen_loop(Arc::clone(&self.inner), signals));
        Some(receiver)
    }

    fn prune(&self, bounds: PruneBounds) -> StoreFuture<'_, PruneReport> {
        Box::pin(async move {
            let report = schema::prune(bounds, |sweep, bound, limit| {
                self.run(Retry::Never, move |conn| async move {
                    let statement = conn.statements.prune(sweep);
                    Ok(conn.client.execute(statement, &[&bound, &limit]).await?)
                })
            })
            .await?;
            tracing::debug!(
                database = %self.inner.target.name,
                valid_token = report.valid_token,
                invalid_token = report.invalid_token,
                user_status = report.user_status,
                revocation_log = report.revocation_log,
                "pruned store"
            );
            Ok(report)
        })
    }
}

/// Inserts a session unless its hash is there, and reads back the row now stored, in
/// one transaction. At READ COMMITTED the read sees a row that a concurrent capture of
/// the same token committed, even if it made our insert do nothing.
async fn insert_in_transaction(conn: &mut Conn, session: &Session) -> Result<Session, QueryError> {
    let Conn {
        client, statements, ..
    } = conn;
    let hash = &session.token_hash.0[..];
    let tx = client.transaction().await?;
    tx.execute(
        &statements.insert_session,
        &[
            &hash,
            &session.session_id,
            &session.user_id,
            &session.issued_at,
            &session.expires_at,
            &session.created_at,
            &session.user_agent,
            &session.client_addr,
            &session.kind.as_str(),
            &session.sid,
        ],
    )
    .await?;
    let row = tx.query_one(&statements.find_session, &[&hash]).await?;
    let stored = session_from_row(&row)?;
    tx.commit().await?;
    Ok(stored)
}

/// A revocation's row changes and its feed row in one transaction, under the feed lock;
/// the notification goes out with the commit (PostgreSQL delivers it only then).
async fn revoke_in_transaction(
    conn: &mut Conn,
    revocation: &Revocation,
) -> Result<Revoked, QueryError> {
    let Conn {
        client,
        statements: s,
        ..
    } = conn;
    let tx = client.transaction().await?;
    if let Some(guard) = &revocation.once {
        let remembered = tx
            .execute(&s.remember, &[&guard.jti, &guard.expires_at, &guard.now])
            .await?;
        if remembered != 1 {
            // A replay: nothing changes (the transaction ends without a write).
            tx.commit().await?;
            return Ok(Revoked {
                replayed: true,
                ..Revoked::default()
            });
        }
    }
    tx.execute(&s.feed_lock, &[]).await?;
    let sessions = |rows: Vec<Row>| {
        rows.iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>, _>>()
    };
    let deleted = match &revocation.change {
        Change::DeleteTokenSession { hash, .. } => {
            sessions(tx.query(&s.delete_token_session, &[&&hash.0[..]]).await?)?
        }
        Change::DeleteToken { hash, .. } => {
            sessions(tx.query(&s.delete_token, &[&&hash.0[..]]).await?)?
        }
        Change::DenyToken {
            hash,
            user,
            expires_at,
        } => {
            tx.execute(&s.deny, &[&&hash.0[..], user, expires_at])
                .await?;
            Vec::new()
        }
        Change::DeleteSession { id, owner } => {
            sessions(tx.query(&s.delete_session, &[id, owner]).await?)?
        }
        Change::DeleteUserSessions { user } => {
            sessions(tx.query(&s.delete_user_sessions, &[user]).await?)?
        }
        Change::DeleteSidSessions { sid, user } => {
            sessions(tx.query(&s.delete_sid_sessions, &[sid, user]).await?)?
        }
        Change::CutOff { user, at } => {
            tx.execute(&s.set_cutoff, &[user, at]).await?;
            // The exceptions captured before this cut-off die with it.
            sessions(tx.query(&s.delete_user_sessions, &[user]).await?)?
        }
    };
    let mut seq = None;
    for entry in LogEntry::of(revocation, &deleted) {
        let hash = entry.token_hash.as_ref().map(|h| &h.0[..]);
        let row = tx
            .query_one(
                &s.append_log,
                &[
                    &entry.kind.as_str(),
                    &entry.user_id,
                    &hash,
                    &entry.session_id,
                    &entry.by.as_str(),
                ],
            )
            .await?;
        seq = Some(row.try_get(0)?);
    }
    if seq.is_some() {
        tx.execute(&s.notify, &[]).await?;
    }
    tx.commit().await?;
    Ok(Revoked {
        sessions: deleted,
        seq,
        replayed: false,
    })
}

/// Keeps a `LISTEN` connection open for as long as the feed reader holds the receiver,
/// reopening it with backoff; every (re)connection is signalled, so that the reader
/// flushes what it may have missed.
async fn listen_loop(inner: Arc<Inner>, signals: mpsc::Sender<FeedSignal>) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            outcome = listen_once(&inner.target, &signals) => outcome,
            _ = signals.closed() => return,
        };
        match outcome {
            Ok(()) => return,
            Err((cause, was_connected)) => {
                if was_connected {
                    backoff = LISTEN_BACKOFF_MIN;
                }
                if signals.send(FeedSignal::Lost(cause)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = signals.closed() => return,
                }
                backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
            }
        }
    }
}

/// One listening connection, until it fails (`Err` with the cause and whether it got as
/// far as listening) or the receiver is gone (`Ok`).
async fn listen_once(
    target: &Target,
    signals: &mpsc::Sender<FeedSignal>,
) -> Result<(), (String, bool)> {
    let mut config = target.config.clone();
    let name = config.get_application_name().unwrap_or(APPLICATION_NAME);
    config.application_name(format!("{name}-feed"));
    let connecting = config.connect(target.tls.clone());
    let (client, mut connection) =
        match tokio::time::timeout(target.connect_timeout, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err((target.scrub(&chain(&e)), false)),
            Err(_) => return Err(("connect timed out".into(), false)),
        };
    let lost = |e: Option<tokio_postgres::Error>| match e {
        Some(e) => target.scrub(&chain(&e)),
        None => "the connection was closed".into(),
    };
    // The connection must be polled for `LISTEN` to be answered.
    let listen = format!("LISTEN {FEED_CHANNEL}");
    let mut listening = std::pin::pin!(client.batch_execute(&listen));
    loop {
        tokio::select! {
            done = &mut listening => match done {
                Ok(()) => break,
                Err(e) => return Err((lost(Some(e)), false)),
            },
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err((lost(Some(e)), false)),
                None => return Err((lost(None), false)),
            },
        }
    }
    if signals.send(FeedSignal::Connected).await.is_err() {
        return Ok(());
    }
    tracing::debug!(database = %target.name, channel = FEED_CHANNEL, "listening for revocations");
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                // A full channel already holds a wake-up: one read covers both.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    signals.try_send(FeedSignal::Notified)
                {
                    return Ok(());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err((lost(Some(e)), true)),
            None => return Err((lost(None), true)),
        }
    }
}

/// Every statement tokengate runs, prepared once per connection.
struct Statements {
    ping: Statement,
    insert_session: Statement,
    find_session: Statement,
    list_sessions: Statement,
    count_sessions: Statement,
    is_denied: Statement,
    cutoff: Statement,
    delete_token: Statement,
    delete_token_session: Statement,
    deny: Statement,
    delete_session: Statement,
    delete_user_sessions: Statement,
    set_cutoff: Statement,
    feed_lock: Statement,
    append_log: Statement,
    notify: Statement,
    feed_head: Statement,
    read_feed: Statement,
    delete_sid_sessions: Statement,
    remember: Statement,
    touch_session: Statement,
    idle_sessions: Statement,
    prune: [Statement; 5],
}

impl Statements {
    /// Prepares them all, pipelined: one round trip.
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let p = |sql: String| async move { client.prepare(&sql).await };
        let (ping, insert_session, find_session, list_sessions, count_sessions, is_denied) = tokio::try_join!(
            p("SELECT 1 FROM tokengate_schema_version".to_owned()),
            p(format!(
                "INSERT INTO {VALID_TOKEN} ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (token_hash) DO NOTHING"
            )),
            p(format!("SELECT {SESSION_COLUMNS} FROM {VALID_TOKEN} WHERE token_hash = $1")),
            // COLLATE "C": ties ordered bytewise, as SQLite does, whatever the database's
            // collation.
            p(format!(
                "SELECT {SESSION_COLUMNS} FROM {VALID_TOKEN} WHERE user_id = $1 AND expires_at > $2
                 ORDER BY created_at DESC, session_id COLLATE \"C\""
            )),
            p(format!(
                "SELECT count(DISTINCT session_id) FROM {VALID_TOKEN} WHERE expires_at > $1"
            )),
            p(format!("SELECT EXISTS (SELECT 1 FROM {INVALID_TOKEN} WHERE token_hash = $1)")),
        )?;
        let (cutoff, delete_token, deny, delete_session, delete_user_sessions, set_cutoff, delete_token_session) = tokio::try_join!(
            p(format!("SELECT logged_out_at FROM {USER_STATUS} WHERE user_id = $1")),
            p(format!(
                "DELETE FROM {VALID_TOKEN} WHERE token_hash = $1 RETURNING {SESSION_COLUMNS}"
            )),
            p(format!(
                "INSERT INTO {INVALID_TOKEN} (token_hash, user_id, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (token_hash) DO NOTHING"
            )),
            p(format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id = $1 AND ($2::text IS NULL OR user_id = $2)
                 RETURNING {SESSION_COLUMNS}"
            )),
            p(format!(
                "DELETE FROM {VALID_TOKEN} WHERE user_id = $1 RETURNING {SESSION_COLUMNS}"
            )),
            // GREATEST: a late or replayed logout must not reopen tokens a newer one closed.
            p(format!(
                "INSERT INTO {USER_STATUS} (user_id, logged_out_at) VALUES ($1, $2)
                 ON CONFLICT (user_id)
                 DO UPDATE SET logged_out_at = GREATEST({USER_STATUS}.logged_out_at, EXCLUDED.logged_out_at)"
            )),
            p(format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id IN
                 (SELECT session_id FROM {VALID_TOKEN} WHERE token_hash = $1)
                 RETURNING {SESSION_COLUMNS}"
            )),
        )?;
        let (feed_lock, append_log, notify, feed_head, read_feed) = tokio::try_join!(
            p(FEED_LOCK.to_owned()),
            // The database's clock: one clock for every replica's lag figures.
            p(format!(
                "INSERT INTO {REVOCATION_LOG} ({LOG_INSERT_COLUMNS})
                 VALUES ((extract(epoch FROM clock_timestamp()) * 1000)::bigint, $1, $2, $3, $4, $5)
                 RETURNING seq"
            )),
            p(format!("SELECT pg_notify('{FEED_CHANNEL}', '')")),
            p(format!(
                "SELECT coalesce(max(seq), 0)::bigint FROM {REVOCATION_LOG}"
            )),
            p(format!(
                "SELECT {FEED_COLUMNS} FROM {REVOCATION_LOG} WHERE seq > $1 ORDER BY seq LIMIT $2"
            )),
        )?;
        let (delete_sid_sessions, remember, touch_session, idle_sessions) = tokio::try_join!(
            p(format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id IN
                 (SELECT session_id FROM {VALID_TOKEN} WHERE sid = $1 AND ($2::text IS NULL OR user_id = $2))
                 RETURNING {SESSION_COLUMNS}"
            )),
            // Takes over an expired id not pruned yet: its token can no longer verify.
            p(format!(
                "INSERT INTO {BACKCHANNEL_JTI} (jti, expires_at) VALUES ($1, $2)
                 ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 WHERE {BACKCHANNEL_JTI}.expires_at < $3"
            )),
            // GREATEST: a late batch (another replica's) never moves a last use backwards.
            p(format!(
                "UPDATE {VALID_TOKEN} SET last_used_at = GREATEST(coalesce(last_used_at, $2), $2)
                 WHERE session_id = $1"
            )),
            p(format!(
                "SELECT session_id, min(user_id) FROM {VALID_TOKEN} WHERE expires_at > $2
                 GROUP BY session_id
                 HAVING max(coalesce(last_used_at, created_at)) <= $1
                 ORDER BY session_id COLLATE \"C\" LIMIT $3"
            )),
        )?;
        let [a, b, c, d, e] = Sweep::ALL.map(|sweep| p(prune_sql(sweep)));
        let (a, b, c, d, e) = tokio::try_join!(a, b, c, d, e)?;
        Ok(Statements {
            ping,
            insert_session,
            find_session,
            list_sessions,
            count_sessions,
            is_denied,
            cutoff,
            delete_token,
            delete_token_session,
            deny,
            delete_session,
            delete_user_sessions,
            set_cutoff,
            feed_lock,
            append_log,
            notify,
            feed_head,
            read_feed,
            delete_sid_sessions,
            remember,
            touch_session,
            idle_sessions,
            prune: [a, b, c, d, e],
        })
    }

    /// The prepared delete of one prune sweep.
    fn prune(&self, sweep: Sweep) -> &Statement {
        let index = Sweep::ALL.iter().position(|s| *s == sweep).unwrap_or(0);
        &self.prune[index]
    }
}

/// Deletes at most `$2` rows of a sweep's table matching its condition (with `$1` the
/// bound). The rows are picked by `ctid` (a TID scan, no second index lookup); the
/// condition is checked again on the row deleted, so a row updated meanwhile (a newer
/// cut-off) stays.
fn prune_sql(sweep: Sweep) -> String {
    let table = sweep.table();
    let condition = sweep.condition("$1");
    format!(
        "DELETE FROM {table}
         WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {condition} LIMIT $2))
         AND {condition}"
    )
}

/// Reads a [`FeedRow`] selected with [`FEED_COLUMNS`].
fn feed_row(row: &Row) -> Result<FeedRow, QueryError> {
    Ok(FeedRow {
        seq: row.try_get(0)?,
        at_ms: row.try_get(1)?,
        kind: row.try_get(2)?,
        user_id: row.try_get(3)?,
        token_hash: row.try_get(4)?,
        session_id: row.try_get(5)?,
        by: row.try_get(6)?,
    })
}

/// Reads a [`Session`] from a row selected with [`SESSION_COLUMNS`].
fn session_from_row(row: &Row) -> Result<Session, QueryError> {
    let hash: &[u8] = row.try_get(0)?;
    let token_hash = <[u8; 32]>::try_from(hash).map(TokenHash).map_err(|_| {
        QueryError::Decode(format!("a token_hash of {} bytes, 32 expected", hash.len()))
    })?;
    Ok(Session {
        token_hash,
        session_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        issued_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        created_at: row.try_get(5)?,
        user_agent: row.try_get(6)?,
        client_addr: row.try_get(7)?,
        kind: TokenKind::from_stored(row.try_get(8)?),
        sid: row.try_get(9)?,
    })
}

impl Target {
    fn new(mut config: tokio_postgres::Config, tls: MakeRustlsConnect) -> Target {
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let connect_timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        Target {
            name: describe(&config),
            tls,
            password,
            connect_timeout,
            config,
        }
    }

    /// One line: what failed, the database, and the cause, without the password.
    fn failure(&self, what: &str, cause: &str) -> StoreError {
        StoreError::Backend(self.scrub(&format!("{what} {}: {cause}", self.name)))
    }

    /// A message on one line, without the password.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(['\n', '\r'], " ");
        if let Some(password) = &self.password {
            text = text.replace(password.as_str(), "***");
        }
        text
    }

    fn query_failure(&self, e: &QueryError) -> StoreError {
        match e {
            QueryError::Pg(e) => self.failure("database", &chain(e)),
            QueryError::Decode(what) => {
                self.failure("database", &format!("unreadable row: {what}"))
            }
        }
    }
}

/// `postgres://user@host:port,host:port/db`, from the parsed config: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let endpoints: Vec<String> = (0..hosts.len().max(addrs.len()))
        .map(|i| {
            let host = match (addrs.get(i), hosts.get(i)) {
                (Some(addr), _) => addr.to_string(),
                (None, Some(Host::Tcp(name))) => name.clone(),
                #[cfg(unix)]
                (None, Some(Host::Unix(path))) => path.display().to_string(),
                (None, None) => String::new(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("postgres://{user}{}/{db}", endpoints.join(","))
}

/// An error and its causes on one line (tokio-postgres keeps the detail in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether an error means the connection is gone (rather than the statement failing):
/// closed, a socket error, or the server ending the session (SQLSTATE class 57P).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| c.code().starts_with("57P"))
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// Opens one connection and spawns the task that drives it.
async fn connect_client(target: &Target) -> Result<Client, StoreError> {
    let what = "cannot connect to database";
    let connecting = target.config.connect(target.tls.clone());
    let (client, connection) = match tokio::time::timeout(target.connect_timeout, connecting).await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(target.failure(what, &chain(&e))),
        Err(_) => {
            return Err(target.failure(
                what,
                &format!("timed out after {} s", target.connect_timeout.as_secs_f32()),
            ))
        }
    };
    let name = target.name.clone();
    tokio::spawn(async move {
        match connection.await {
            Ok(()) => tracing::debug!(database = %name, "database connection closed"),
            Err(e) => {
                tracing::warn!(database = %name, error = %chain(&e), "database connection lost")
            }
        }
    });
    Ok(client)
}

impl Conn {
    /// Opens a connection on a migrated database.
    async fn open(target: &Target) -> Result<Conn, StoreError> {
        let client = connect_client(target).await?;
        Conn::ready(client, target).await
    }

    /// Prepares the statements on an open connection.
    async fn ready(client: Client, target: &Target) -> Result<Conn, StoreError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let statements = Statements::prepare(&client)
            .await
            .map_err(|e| target.failure("cannot prepare statements on database", &chain(&e)))?;
        Ok(Conn {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            statements,
        })
    }
}

impl<C: From<Conn> + Deref<Target = Conn>> Slot<C> {
    fn new(conn: Conn) -> Slot<C> {
        Slot {
            state: Mutex::new(SlotState {
                conn: Some(C::from(conn)),
                last_error: None,
            }),
            failures: AtomicU64::new(0),
        }
    }

    /// The slot's connection, opened again first if it died; the lock is held as long as
    /// the guard lives.
    async fn connected(&self, target: &Target) -> Result<MappedMutexGuard<'_, C>, StoreError> {
        let failures_seen = self.failures.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let conn = match state.conn.take() {
            Some(conn) if !conn.client.is_closed() => conn,
            dead => {
                if dead.is_some() {
                    tracing::warn!(database = %target.name, "database connection lost; reconnecting");
                }
                if self.failures.load(Ordering::Acquire) != failures_seen {
                    // An attempt failed while this task waited: that is the answer.
                    if let Some(e) = &state.last_error {
                        return Err(StoreError::Backend(e.clone()));
                    }
                }
                match Conn::open(target).await {
                    Ok(conn) => {
                        state.last_error = None;
                        C::from(conn)
                    }
                    Err(e) => {
                        state.last_error = Some(e.to_string());
                        self.failures.fetch_add(1, Ordering::Release);
                        return Err(e);
                    }
                }
            }
        };
        Ok(MutexGuard::map(state, move |s| s.conn.insert(conn)))
    }

    /// [`Slot::forget`]s connection `id` when `result` shows it lost.
    async fn forget_if_lost<T>(&self, id: u64, result: &Result<T, QueryError>, target: &Target) {
        if let Err(QueryError::Pg(e)) = result {
            if connection_lost(e) {
                self.forget(id, target).await;
            }
        }
    }

    /// Drops connection `id` if it is still the slot's, so that the next use opens a new
    /// one even before the driver task has noticed the socket is gone.
    async fn forget(&self, id: u64, target: &Target) {
        let mut state = self.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| c.id == id) {
            state.conn = None;
            tracing::warn!(database = %target.name, "database connection lost; reconnecting");
        }
    }
}

/// Applies the missing migrations and records the new version in one transaction, under
/// an advisory lock: replicas starting together migrate once, the others wait and then
/// find the schema current. A failure half-way leaves the database as it was.
async fn migrate(target: &Target, client: &mut Client) -> Result<(), StoreError> {
    let err = |e: tokio_postgres::Error| target.failure("cannot migrate database", &chain(&e));
    let tx = client.transaction().await.map_err(err)?;
    tx.batch_execute(&format!("{MIGRATION_LOCK}; {SCHEMA_VERSION_TABLE}"))
        .await
        .map_err(err)?;
    let found = match tx
        .query_opt("SELECT version FROM tokengate_schema_version", &[])
        .await
        .map_err(err)?
    {
        Some(row) => row.try_get::<_, i64>(0).map_err(err)?,
        None => 0,
    };
    if let Err(too_new) = check_version(found) {
        // Release the lock now rather than when the dropped transaction's rollback is
        // sent: a replica that refuses to start must not hold up the others.
        tx.rollback().await.map_err(err)?;
        return Err(too_new);
    }
    if found == SCHEMA_VERSION {
        return tx.commit().await.map_err(err);
    }
    let from = usize::try_from(found).map_err(|_| {
        target.failure(
            "cannot migrate database",
            &format!("invalid schema version {found}"),
        )
    })?;
    for sql in &MIGRATIONS[from..] {
        tx.batch_execute(sql).await.map_err(err)?;
    }
    tx.execute(
        "INSERT INTO tokengate_schema_version (version) VALUES ($1)
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
    tracing::info!(
        database = %target.name,
        from = found,
        to = SCHEMA_VERSION,
        "migrated database schema"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_target(url: &str) -> Target {
        let (config, tls) = parse_with_tls(url).unwrap();
        Target::new(config, super::super::postgres_tls::connector(&tls).unwrap())
    }

    #[test]
    fn urls_are_checked_without_repeating_them() {
        assert!(parse_url("postgres://u:pw@db.internal:6432/tokens").is_ok());
        assert!(parse_url("host=/run/postgresql user=tg dbname=tg").is_ok());
        for (url, problem) in [
            (
                "postgres://u:hunter2@h/db?port=x",
                "not a valid PostgreSQL URL",
            ),
            (
                "postgres://u:hunter2@h/db?sslmode=sometimes",
                "is not one of",
            ),
            ("user=u password=hunter2 dbname=d", "names no host"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(problem), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_database_is_named_without_its_password() {
        let name = |url: &str| describe(&parse_url(url).unwrap());
        assert_eq!(
            name("postgres://tg:hunter2@db.internal:6432/tokens"),
            "postgres://tg@db.internal:6432/tokens"
        );
        assert_eq!(
            name("postgres://a,b:5433/x?password=hunter2"),
            "postgres://a:5432,b:5433/x"
        );
        assert_eq!(
            name("host=/run/postgresql user=tg"),
            "postgres://tg@/run/postgresql:5432/tg"
        );
    }

    #[test]
    fn failures_are_one_line_and_scrub_the_password() {
        let target = test_target("postgres://tg:hunter2@h/db");
        let e = target.failure("cannot connect to database", "FATAL: no\nDETAIL: hunter2");
        assert_eq!(
            e.to_string(),
            "cannot connect to database postgres://tg@h:5432/db: FATAL: no DETAIL: ***"
        );
    }

    #[test]
    fn connection_defaults_are_set_unless_the_url_sets_them() {
        let target = test_target("postgres://h/db");
        assert_eq!(target.config.get_application_name(), Some(APPLICATION_NAME));
        assert_eq!(target.connect_timeout, CONNECT_TIMEOUT);
        let target = test_target("postgres://h/db?application_name=a&connect_timeout=2");
        assert_eq!(target.config.get_application_name(), Some("a"));
        assert_eq!(target.connect_timeout, Duration::from_secs(2));
    }
}
