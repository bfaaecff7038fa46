//! The SQLite token store: one file, one node (SPEC §7).
//!
//! [`SqliteStore`] owns the database file: its pragmas, its schema and migrations, and
//! the SQL behind every [`TokenStore`] operation. What a row means is left to
//! [`crate::strategy`]; several replicas share PostgreSQL instead (SPEC §8).
//!
//! # Concurrency
//!
//! The handle is a cheap `Clone` around an `Arc<Inner>` holding two kinds of connection:
//!
//! - **One writer**, behind a `std::sync::Mutex`. Every write runs inside
//!   [`tokio::task::spawn_blocking`] in one `BEGIN IMMEDIATE` transaction: with
//!   `synchronous=FULL` a commit waits for an fsync, milliseconds that must not stall the
//!   async runtime. The future resolves only after the commit, so a revocation is on
//!   disk before it is answered. A dropped future does not cancel the write.
//! - **A small pool of readers**, each behind its own `std::sync::Mutex`, run inline in
//!   the future. Under WAL a reader never waits for the writer, and a primary-key lookup
//!   takes microseconds, less than the hop to a blocking thread would cost. A reader is
//!   picked with `try_lock` round robin; only when all are busy does it block on one.
//!
//! A plain mutex beats an async one here: every critical section is short and none is
//! held across an `.await`. Each read statement starts a fresh WAL snapshot, so writes
//! committed by another process (the CLI, a second store on the same file) are seen on
//! the very next read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, Transaction};

use super::schema::{
    self, check_version, BACKCHANNEL_JTI, FEED_COLUMNS, INVALID_TOKEN, LOG_INSERT_COLUMNS,
    REVOCATION_LOG, SCHEMA_VERSION, SESSION_COLUMNS, USER_STATUS, VALID_TOKEN,
};
use super::{
    Change, FeedRow, IdleSession, LogEntry, PruneBounds, PruneReport, ReplayGuard, Revocation,
    Revoked, Session, StoreError, StoreFuture, TokenHash, TokenKind, TokenStore,
};

/// How many read connections to keep; reads are short, so a few cover many tasks.
const READERS: usize = 4;
/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT_MS: u32 = 5000;

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: the schema of SPEC §7. `session_id UNIQUE` is its own index.
    "CREATE TABLE valid_token (
        token_hash  BLOB PRIMARY KEY,
        session_id  TEXT NOT NULL UNIQUE,
        user_id     TEXT NOT NULL,
        issued_at   INTEGER,
        expires_at  INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        user_agent  TEXT,
        client_addr TEXT
    );
    CREATE INDEX valid_token_user_id ON valid_token (user_id);
    CREATE INDEX valid_token_expires_at ON valid_token (expires_at);
    CREATE TABLE invalid_token (
        token_hash BLOB PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL
    );
    CREATE INDEX invalid_token_user_id ON invalid_token (user_id);
    CREATE INDEX invalid_token_expires_at ON invalid_token (expires_at);
    CREATE TABLE user_status (
        user_id TEXT PRIMARY KEY, logged_out_at INTEGER NOT NULL
    );
    CREATE INDEX user_status_logged_out_at ON user_status (logged_out_at);",
    // Version 2: the revocation feed of SPEC §9. AUTOINCREMENT: a `seq` is never used
    // twice, even after a prune emptied the table, so a reader's position stays valid.
    "CREATE TABLE revocation_log (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms      INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        token_hash BLOB,
        session_id TEXT,
        by         TEXT NOT NULL
    );
    CREATE INDEX revocation_log_at_ms ON revocation_log (at_ms);",
    // Version 3: `kind`, and session ids shared by the tokens of one login (SQLite
    // cannot drop a UNIQUE constraint: the table is rebuilt, rows kept).
    "CREATE TABLE valid_token_v3 (
        token_hash  BLOB PRIMARY KEY,
        session_id  TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        issued_at   INTEGER,
        expires_at  INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        user_agent  TEXT,
        client_addr TEXT,
        kind        TEXT NOT NULL DEFAULT 'access'
    );
    INSERT INTO valid_token_v3
        (token_hash, session_id, user_id, issued_at, expires_at, created_at, user_agent, client_addr)
        SELECT token_hash, session_id, user_id, issued_at, expires_at, created_at, user_agent, client_addr
        FROM valid_token;
    DROP TABLE valid_token;
    ALTER TABLE valid_token_v3 RENAME TO valid_token;
    CREATE INDEX valid_token_user_id ON valid_token (user_id);
    CREATE INDEX valid_token_expires_at ON valid_token (expires_at);
    CREATE INDEX valid_token_session_id ON valid_token (session_id);",
    // Version 4 (SPEC §13): the `sid` claim a token carried (back-channel logout), the
    // last use of a session (idle timeout), and the logout-token ids already acted on.
    "ALTER TABLE valid_token ADD COLUMN sid TEXT;
    ALTER TABLE valid_token ADD COLUMN last_used_at INTEGER;
    CREATE INDEX valid_token_sid ON valid_token (sid);
    CREATE TABLE backchannel_jti (
        jti        TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX backchannel_jti_expires_at ON backchannel_jti (expires_at);",
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// A [`TokenStore`] on a local SQLite file; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// The connections shared by every clone of a [`SqliteStore`].
struct Inner {
    path: PathBuf,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    // Declared last so it closes last: the final close checkpoints the WAL.
    writer: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, sets its pragmas and brings
    /// its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |e: rusqlite::Error| failure("cannot open database", path, &e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut writer = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        // Opening is lazy: reading the schema is what makes a garbage file fail here
        // rather than on the first request.
        writer
            .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(open_err)?;
        // Refuse a newer schema before changing anything in the file.
        check_version(user_version(&writer).map_err(open_err)?)?;

        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // e.g. a filesystem without shared memory; readers would then block on the
            // writer, and the concurrency design above would not hold.
            return Err(StoreError::Backend(format!(
                "cannot open database {}: journal_mode is {mode}, WAL is required",
                path.display()
            )));
        }
        // FULL: a commit is fsynced, so an answered revocation survives a power loss.
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        migrate(path, &mut writer)?;

        let read_flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let readers = (0..READERS)
            .map(|_| {
                let conn = Connection::open_with_flags(path, read_flags)?;
                configure(&conn)?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(open_err)?;

        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                readers,
                next_reader: AtomicUsize::new(0),
                writer: Mutex::new(writer),
            }),
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a read on a pooled reader, inline: the lock is released before returning.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let readers = &self.inner.readers;
        let start = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        let conn = (0..readers.len())
            .find_map(|i| match readers[(start + i) % readers.len()].try_lock() {
                Ok(conn) => Some(conn),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            })
            .unwrap_or_else(|| lock(&readers[start]));
        f(&conn).map_err(|e| failure("database", &self.inner.path, &e))
    }

    /// Runs a write in one immediate transaction on the blocking pool; resolves once it
    /// is committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            // IMMEDIATE takes the write lock up front, so contention with another
            // process waits in busy_timeout instead of failing on a lock upgrade.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await;
        match joined {
            Ok(result) => result.map_err(|e| failure("database", &self.inner.path, &e)),
            Err(e) => Err(StoreError::Backend(format!(
                "database {}: write task failed: {e}",
                self.inner.path.display()
            ))),
        }
    }
}

impl TokenStore for SqliteStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.read(|conn| {
                conn.prepare_cached("SELECT 1 FROM sqlite_master LIMIT 1")?
                    .exists([])
                    .map(drop)
            })
        })
    }

    fn insert_session(&self, session: Session) -> StoreFuture<'_, Session> {
        Box::pin(self.write(move |tx| {
            let insert = format!(
                "INSERT INTO {VALID_TOKEN} ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (token_hash) DO NOTHING"
            );
            tx.prepare_cached(&insert)?.execute((
                session.token_hash,
                &session.session_id,
                &session.user_id,
                session.issued_at,
                session.expires_at,
                session.created_at,
                &session.user_agent,
                &session.client_addr,
                session.kind.as_str(),
                &session.sid,
            ))?;
            // The row as stored: ours, or the one a previous capture of this token wrote.
            let select = format!("SELECT {SESSION_COLUMNS} FROM {VALID_TOKEN} WHERE token_hash = ?1");
            tx.prepare_cached(&select)?
                .query_row([session.token_hash], session_from_row)
        }))
    }

    fn find_session(&self, hash: TokenHash) -> StoreFuture<'_, Option<Session>> {
        Box::pin(async move {
            self.read(|conn| {
                let sql =
                    format!("SELECT {SESSION_COLUMNS} FROM {VALID_TOKEN} WHERE token_hash = ?1");
                conn.prepare_cached(&sql)?
                    .query_row([hash], session_from_row)
                    .optional()
            })
        })
    }

    fn list_sessions<'a>(&'a self, user: &'a str, now: i64) -> StoreFuture<'a, Vec<Session>> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM {VALID_TOKEN} WHERE user_id = ?1 AND expires_at > ?2
                     ORDER BY created_at DESC, session_id"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map((user, now), session_from_row)?;
                rows.collect()
            })
        })
    }

    fn count_sessions(&self, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!(
                    "SELECT count(DISTINCT session_id) FROM {VALID_TOKEN} WHERE expires_at > ?1"
                );
                conn.prepare_cached(&sql)?
                    .query_row([now], |r| r.get::<_, i64>(0))
                    .map(|n| n.max(0) as u64)
            })
        })
    }

    fn is_denied(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!("SELECT 1 FROM {INVALID_TOKEN} WHERE token_hash = ?1");
                conn.prepare_cached(&sql)?.exists([hash])
            })
        })
    }

    fn cutoff<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Option<i64>> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!("SELECT logged_out_at FROM {USER_STATUS} WHERE user_id = ?1");
                conn.prepare_cached(&sql)?
                    .query_row([user], |r| r.get(0))
                    .optional()
            })
        })
    }

    fn revoke(&self, revocation: Revocation) -> StoreFuture<'_, Revoked> {
        Box::pin(self.write(move |tx| {
            if let Some(guard) = &revocation.once {
                if !remember(tx, guard)? {
                    return Ok(Revoked {
                        replayed: true,
                        ..Revoked::default()
                    });
                }
            }
            let sessions = apply_change(tx, &revocation.change)?;
            let mut seq = None;
            for entry in LogEntry::of(&revocation, &sessions) {
                seq = Some(append_log(tx, &entry)?);
            }
            Ok(Revoked {
                sessions,
                seq,
                replayed: false,
            })
        }))
    }

    fn touch_sessions(&self, uses: Vec<(String, i64)>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            // max(): a late batch (another process's) never moves a last use backwards.
            let sql = format!(
                "UPDATE {VALID_TOKEN} SET last_used_at = max(coalesce(last_used_at, ?2), ?2)
                 WHERE session_id = ?1"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            for (session_id, at) in &uses {
                stmt.execute((session_id, at))?;
            }
            Ok(())
        }))
    }

    fn idle_sessions(
        &self,
        idle_since: i64,
        now: i64,
        limit: u32,
    ) -> StoreFuture<'_, Vec<IdleSession>> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!(
                    "SELECT session_id, min(user_id) FROM {VALID_TOKEN} WHERE expires_at > ?2
                     GROUP BY session_id
                     HAVING max(coalesce(last_used_at, created_at)) <= ?1
                     ORDER BY session_id LIMIT ?3"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map((idle_since, now, limit), |r| {
                    Ok(IdleSession {
                        session_id: r.get(0)?,
                        user_id: r.get(1)?,
                    })
                })?;
                rows.collect()
            })
        })
    }

    fn feed_head(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!("SELECT coalesce(max(seq), 0) FROM {REVOCATION_LOG}");
                conn.prepare_cached(&sql)?.query_row([], |r| r.get(0))
            })
        })
    }

    fn read_feed(&self, after: i64, limit: u32) -> StoreFuture<'_, Vec<FeedRow>> {
        Box::pin(async move {
            self.read(|conn| {
                // A range scan of the primary key: one cheap query per poll.
                let sql = format!(
                    "SELECT {FEED_COLUMNS} FROM {REVOCATION_LOG} WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map((after, limit), feed_row)?;
                rows.collect()
            })
        })
    }

    fn prune(&self, bounds: PruneBounds) -> StoreFuture<'_, PruneReport> {
        Box::pin(async move {
            let report = schema::prune(bounds, |sweep, bound, limit| {
                self.write(move |tx| {
                    let table = sweep.table();
                    let sql = format!(
                        "DELETE FROM {table} WHERE rowid IN \
                         (SELECT rowid FROM {table} WHERE {} LIMIT ?2)",
                        sweep.condition("?1")
                    );
                    Ok(tx.prepare_cached(&sql)?.execute((bound, limit))? as u64)
                })
            })
            .await?;
            tracing::debug!(
                path = %self.inner.path.display(),
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

/// The row changes of one revocation, inside its transaction; returns the allowlist
/// rows deleted.
fn apply_change(tx: &Transaction<'_>, change: &Change) -> rusqlite::Result<Vec<Session>> {
    match change {
        Change::DeleteTokenSession { hash, .. } => {
            let sql = format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id IN
                 (SELECT session_id FROM {VALID_TOKEN} WHERE token_hash = ?1)
                 RETURNING {SESSION_COLUMNS}"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map([hash], session_from_row)?;
            rows.collect()
        }
        Change::DeleteToken { hash, .. } => {
            let sql = format!(
                "DELETE FROM {VALID_TOKEN} WHERE token_hash = ?1 RETURNING {SESSION_COLUMNS}"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map([hash], session_from_row)?;
            rows.collect()
        }
        Change::DenyToken {
            hash,
            user,
            expires_at,
        } => {
            let sql = format!(
                "INSERT OR IGNORE INTO {INVALID_TOKEN} (token_hash, user_id, expires_at)
                 VALUES (?1, ?2, ?3)"
            );
            tx.prepare_cached(&sql)?.execute((hash, user, expires_at))?;
            Ok(Vec::new())
        }
        Change::DeleteSession { id, owner } => {
            let sql = format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id = ?1 AND (?2 IS NULL OR user_id = ?2)
                 RETURNING {SESSION_COLUMNS}"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map((id, owner), session_from_row)?;
            rows.collect()
        }
        Change::DeleteUserSessions { user } => delete_user_sessions(tx, user),
        Change::DeleteSidSessions { sid, user } => {
            let sql = format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id IN
                 (SELECT session_id FROM {VALID_TOKEN} WHERE sid = ?1 AND (?2 IS NULL OR user_id = ?2))
                 RETURNING {SESSION_COLUMNS}"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map((sid, user), session_from_row)?;
            rows.collect()
        }
        Change::CutOff { user, at } => {
            // max(): a late or replayed logout must not reopen tokens a newer one closed.
            let sql = format!(
                "INSERT INTO {USER_STATUS} (user_id, logged_out_at) VALUES (?1, ?2)
                 ON CONFLICT (user_id)
                 DO UPDATE SET logged_out_at = max(logged_out_at, excluded.logged_out_at)"
            );
            tx.prepare_cached(&sql)?.execute((user, at))?;
            // The exceptions captured before this cut-off die with it.
            delete_user_sessions(tx, user)
        }
    }
}

fn delete_user_sessions(tx: &Transaction<'_>, user: &str) -> rusqlite::Result<Vec<Session>> {
    let sql = format!("DELETE FROM {VALID_TOKEN} WHERE user_id = ?1 RETURNING {SESSION_COLUMNS}");
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map([user], session_from_row)?;
    rows.collect()
}

/// Remembers a replay guard's id inside the revocation's transaction; false when it is
/// remembered already and not expired (a replay). An expired row not yet pruned is
/// taken over: its token can no longer verify.
fn remember(tx: &Transaction<'_>, guard: &ReplayGuard) -> rusqlite::Result<bool> {
    let sql = format!(
        "INSERT INTO {BACKCHANNEL_JTI} (jti, expires_at) VALUES (?1, ?2)
         ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at
         WHERE {BACKCHANNEL_JTI}.expires_at < ?3"
    );
    let changed = tx
        .prepare_cached(&sql)?
        .execute((&guard.jti, guard.expires_at, guard.now))?;
    Ok(changed == 1)
}

/// Appends a feed row inside the revocation's transaction; returns its `seq`.
fn append_log(tx: &Transaction<'_>, entry: &LogEntry) -> rusqlite::Result<i64> {
    let sql = format!(
        "INSERT INTO {REVOCATION_LOG} ({LOG_INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         RETURNING seq"
    );
    tx.prepare_cached(&sql)?.query_row(
        (
            crate::jwt::now_ms(),
            entry.kind.as_str(),
            &entry.user_id,
            entry.token_hash,
            &entry.session_id,
            entry.by.as_str(),
        ),
        |r| r.get(0),
    )
}

/// Reads a [`FeedRow`] selected with [`FEED_COLUMNS`]. The text and blob columns are
/// read leniently (a damaged value becomes one the reader refuses to trust), so that one
/// bad row cannot stop the feed for good.
fn feed_row(row: &Row<'_>) -> rusqlite::Result<FeedRow> {
    let text = |i: usize| -> rusqlite::Result<Option<String>> {
        Ok(match row.get_ref(i)? {
            ValueRef::Null => None,
            ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => Some(String::new()),
        })
    };
    let token_hash = match row.get_ref(4)? {
        ValueRef::Null => None,
        ValueRef::Blob(b) => Some(b.to_vec()),
        _ => Some(Vec::new()),
    };
    Ok(FeedRow {
        seq: row.get(0)?,
        at_ms: row.get::<_, Option<i64>>(1)?.unwrap_or(0),
        kind: text(2)?.unwrap_or_default(),
        user_id: text(3)?.unwrap_or_default(),
        token_hash,
        session_id: text(5)?,
        by: text(6)?.unwrap_or_default(),
    })
}

impl ToSql for TokenHash {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

impl FromSql for TokenHash {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let blob = value.as_blob()?;
        <[u8; 32]>::try_from(blob)
            .map(TokenHash)
            .map_err(|_| FromSqlError::InvalidBlobSize {
                expected_size: 32,
                blob_size: blob.len(),
            })
    }
}

/// Reads a [`Session`] from a row selected with [`SESSION_COLUMNS`].
fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        token_hash: row.get(0)?,
        session_id: row.get(1)?,
        user_id: row.get(2)?,
        issued_at: row.get(3)?,
        expires_at: row.get(4)?,
        created_at: row.get(5)?,
        user_agent: row.get(6)?,
        client_addr: row.get(7)?,
        kind: TokenKind::from_stored(&row.get::<_, String>(8)?),
        sid: row.get(9)?,
    })
}

/// Per-connection pragmas shared by the writer and the readers.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

/// The schema version recorded in the file.
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies the missing migrations and records the new version, all in one transaction:
/// a crash half-way leaves the file as it was.
fn migrate(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    let err = |e: rusqlite::Error| failure("cannot migrate database", path, &e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let found = user_version(&tx).map_err(err)?;
    check_version(found)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let from = usize::try_from(found).map_err(|_| {
        StoreError::Backend(format!(
            "cannot migrate database {}: invalid schema version {found}",
            path.display()
        ))
    })?;
    for sql in &MIGRATIONS[from..] {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)?;
    tracing::info!(
        path = %path.display(),
        from = found,
        to = SCHEMA_VERSION,
        "migrated database schema"
    );
    Ok(())
}

/// One line naming what failed, the file, and SQLite's reason. rusqlite appends the
/// path to open failures; it is cut so that the path appears once, up front.
fn failure(what: &str, path: &Path, e: &rusqlite::Error) -> StoreError {
    let text = e.to_string();
    let cause = text.strip_suffix(&format!(": {}", path.display()));
    StoreError::Backend(format!(
        "{what} {}: {}",
        path.display(),
        cause.unwrap_or(&text)
    ))
}

/// Locks a connection; a panic while it was held already rolled back any open
/// transaction (rusqlite's `Transaction` rolls back on drop), so it is safe to reuse.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    //! SQLite-specific checks. The behaviour every store shares is tested once, for
    //! SQLite and PostgreSQL alike, in `tests/store_contract.rs`.

    use rusqlite::types::Value;

    use super::*;

    fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tokens.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn creates_schema_and_sets_pragmas() {
        let (_dir, store) = temp_store();
        let names: Vec<String> = store
            .read(|c| {
                let sql =
                    "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 1";
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .unwrap();
        let expected = [
            "backchannel_jti",
            "backchannel_jti_expires_at",
            "invalid_token",
            "invalid_token_expires_at",
            "invalid_token_user_id",
            "revocation_log",
            "revocation_log_at_ms",
            "user_status",
            "user_status_logged_out_at",
            "valid_token",
            "valid_token_expires_at",
            "valid_token_session_id",
            "valid_token_sid",
            "valid_token_user_id",
        ];
        assert_eq!(names, expected);
        assert_eq!(store.read(user_version).unwrap(), SCHEMA_VERSION);
        store.ping().await.unwrap();

        let pragma = |name: &str| -> Value {
            let writer = lock(&store.inner.writer);
            writer.pragma_query_value(None, name, |r| r.get(0)).unwrap()
        };
        assert_eq!(pragma("journal_mode"), Value::Text("wal".into()));
        assert_eq!(pragma("synchronous"), Value::Integer(2), "FULL");
        assert_eq!(pragma("foreign_keys"), Value::Integer(1));
        assert_eq!(pragma("busy_timeout"), Value::Integer(5000));
        let reader_mode: String = store
            .read(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .unwrap();
        assert_eq!(reader_mode, "wal");
    }

    #[tokio::test]
    async fn wrong_length_hash_is_an_error() {
        let (_dir, store) = temp_store();
        lock(&store.inner.writer)
            .execute(
                "INSERT INTO valid_token VALUES (x'0102', 's', 'alice', NULL, 100, 1, NULL, NULL, 'access', NULL, NULL)",
                [],
            )
            .unwrap();
        let err = store.list_sessions("alice", 0).await.unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
    }

    #[test]
    fn open_errors_are_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, "this is not a database\n".repeat(200)).unwrap();
        let missing = dir.path().join("missing").join("tokens.db");
        for (path, cause) in [
            (garbage, "file is not a database"),
            (missing, "unable to open database file"),
        ] {
            let err = SqliteStore::open(&path).err().unwrap().to_string();
            assert_eq!(
                err,
                format!("cannot open database {}: {cause}", path.display())
            );
        }
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute(
                "INSERT INTO valid_token VALUES (?1, 's1', 'alice', 1, 4102444800, 1, NULL, NULL)",
                [TokenHash([7; 32])],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.read(user_version).unwrap(), SCHEMA_VERSION);
        let kept = store.find_session(TokenHash([7; 32])).await.unwrap();
        assert_eq!(kept.map(|s| s.session_id).as_deref(), Some("s1"));
        assert_eq!(store.feed_head().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_version_3_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute(
                "INSERT INTO valid_token VALUES (?1, 's1', 'alice', 1, 4102444800, 1, NULL, NULL, 'access')",
                [TokenHash([7; 32])],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 3).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.read(user_version).unwrap(), SCHEMA_VERSION);
        let kept = store
            .find_session(TokenHash([7; 32]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((kept.session_id.as_str(), kept.sid), ("s1", None));
        // The new columns and table are there, empty.
        store.touch_sessions(vec![("s1".into(), 5)]).await.unwrap();
        let idle = store.idle_sessions(5, 0, 10).await.unwrap();
        assert_eq!(idle.len(), 1, "last used at 5");
        let remembered: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM backchannel_jti", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(remembered, 0);
    }

    #[tokio::test]
    async fn a_damaged_feed_row_is_read_not_refused() {
        let (_dir, store) = temp_store();
        lock(&store.inner.writer)
            .execute(
                "INSERT INTO revocation_log (at_ms, kind, user_id, token_hash, session_id, by)
                 VALUES (1, x'ff', x'00', x'0102', NULL, 'cli')",
                [],
            )
            .unwrap();
        let rows = store.read_feed(0, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].kind, "", "a non-text kind reads as unknown");
        assert_eq!(rows[0].token_hash.as_deref(), Some(&[1u8, 2][..]));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (99, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {:?}", other.err()),
        }
    }
}
