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

use super::{PruneReport, Session, StoreError, StoreFuture, TokenHash, TokenStore};

/// The allowlist table.
const VALID_TOKEN: &str = "valid_token";
/// The denylist table.
const INVALID_TOKEN: &str = "invalid_token";
/// The per-user logout cut-offs.
const USER_STATUS: &str = "user_status";
/// The columns of a [`Session`], in the order [`session_from_row`] reads them.
const SESSION_COLUMNS: &str =
    "token_hash, session_id, user_id, issued_at, expires_at, created_at, user_agent, client_addr";

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
];

/// The newest schema version this build understands.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

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

    /// Deletes the rows of `table` matching `condition` (with `?1` the bound), at most
    /// `batch` per transaction; returns how many went.
    async fn prune_table(
        &self,
        table: &'static str,
        condition: &'static str,
        bound: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        // A zero batch would never finish; one row at a time still does.
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            // One transaction per batch: the writer mutex is released in between, so
            // request-path writes interleave with a long prune.
            let deleted = self
                .write(move |tx| {
                    let sql = format!(
                        "DELETE FROM {table} WHERE rowid IN \
                         (SELECT rowid FROM {table} WHERE {condition} LIMIT ?2)"
                    );
                    tx.prepare_cached(&sql)?.execute((bound, batch))
                })
                .await? as u64;
            total += deleted;
            if deleted < u64::from(batch) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
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
                "INSERT INTO {VALID_TOKEN} ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
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

    fn delete_session_by_hash(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |tx| {
            let sql = format!("DELETE FROM {VALID_TOKEN} WHERE token_hash = ?1");
            Ok(tx.prepare_cached(&sql)?.execute([hash])? > 0)
        }))
    }

    fn delete_session<'a>(
        &'a self,
        session_id: &'a str,
        user: Option<&'a str>,
    ) -> StoreFuture<'a, Option<Session>> {
        let (session_id, user) = (session_id.to_owned(), user.map(str::to_owned));
        Box::pin(self.write(move |tx| {
            let sql = format!(
                "DELETE FROM {VALID_TOKEN} WHERE session_id = ?1 AND (?2 IS NULL OR user_id = ?2)
                 RETURNING {SESSION_COLUMNS}"
            );
            tx.prepare_cached(&sql)?
                .query_row((session_id, user), session_from_row)
                .optional()
        }))
    }

    fn delete_user_sessions<'a>(&'a self, user: &'a str) -> StoreFuture<'a, Vec<String>> {
        let user = user.to_owned();
        Box::pin(self.write(move |tx| {
            let sql = format!("DELETE FROM {VALID_TOKEN} WHERE user_id = ?1 RETURNING session_id");
            let mut stmt = tx.prepare_cached(&sql)?;
            let ids = stmt.query_map([user], |r| r.get(0))?;
            ids.collect()
        }))
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
                let sql = format!("SELECT count(*) FROM {VALID_TOKEN} WHERE expires_at > ?1");
                conn.prepare_cached(&sql)?
                    .query_row([now], |r| r.get::<_, i64>(0))
                    .map(|n| n.max(0) as u64)
            })
        })
    }

    fn deny<'a>(&'a self, hash: TokenHash, user: &'a str, expires_at: i64) -> StoreFuture<'a, ()> {
        let user = user.to_owned();
        Box::pin(self.write(move |tx| {
            let sql = format!(
                "INSERT OR IGNORE INTO {INVALID_TOKEN} (token_hash, user_id, expires_at)
                 VALUES (?1, ?2, ?3)"
            );
            tx.prepare_cached(&sql)?
                .execute((hash, user, expires_at))
                .map(drop)
        }))
    }

    fn is_denied(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            self.read(|conn| {
                let sql = format!("SELECT 1 FROM {INVALID_TOKEN} WHERE token_hash = ?1");
                conn.prepare_cached(&sql)?.exists([hash])
            })
        })
    }

    fn set_cutoff<'a>(&'a self, user: &'a str, at: i64) -> StoreFuture<'a, ()> {
        let user = user.to_owned();
        Box::pin(self.write(move |tx| {
            // max(): a late or replayed logout must not reopen tokens a newer one closed.
            let sql = format!(
                "INSERT INTO {USER_STATUS} (user_id, logged_out_at) VALUES (?1, ?2)
                 ON CONFLICT (user_id)
                 DO UPDATE SET logged_out_at = max(logged_out_at, excluded.logged_out_at)"
            );
            tx.prepare_cached(&sql)?.execute((user, at)).map(drop)
        }))
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

    fn prune(&self, now: i64, cutoff_horizon: i64, batch: u32) -> StoreFuture<'_, PruneReport> {
        Box::pin(async move {
            let report = PruneReport {
                valid_token: self
                    .prune_table(VALID_TOKEN, "expires_at <= ?1", now, batch)
                    .await?,
                invalid_token: self
                    .prune_table(INVALID_TOKEN, "expires_at <= ?1", now, batch)
                    .await?,
                user_status: self
                    .prune_table(USER_STATUS, "logged_out_at < ?1", cutoff_horizon, batch)
                    .await?,
            };
            tracing::debug!(
                path = %self.inner.path.display(),
                valid_token = report.valid_token,
                invalid_token = report.invalid_token,
                user_status = report.user_status,
                "pruned store"
            );
            Ok(report)
        })
    }
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

/// Refuses a schema written by a newer tokengate: its rows may mean something else.
fn check_version(found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
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
            "invalid_token",
            "invalid_token_expires_at",
            "invalid_token_user_id",
            "user_status",
            "user_status_logged_out_at",
            "valid_token",
            "valid_token_expires_at",
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
                "INSERT INTO valid_token VALUES (x'0102', 's', 'alice', NULL, 100, 1, NULL, NULL)",
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
