//! The [`TokenStore`] contract, written once and run against both backends: a fresh
//! SQLite file, and a fresh PostgreSQL schema (`tg_<hex>`, on the test server; see
//! `common::PgSchema`). Each behaviour below is a plain async function of a [`Db`];
//! [`contract!`] turns it into `sqlite::<name>` and `postgres::<name>`.
//!
//! After the shared suite, what only PostgreSQL has: network errors that must be one
//! clean line without the password, the schema version table and its lock, and
//! connections that die under the store.

mod common;

use std::time::{Duration, Instant};

use tokengate::config::StoreBackend;
use tokengate::store::{
    self, Actor, Change, IdleSession, PruneBounds, PruneReport, ReplayGuard, Revocation,
    RevocationKind, Revoked, Session, SharedStore, StoreError, TokenHash, TokenKind,
};

use common::{closed_port, pg_admin, PgSchema};

/// A fresh database of one backend; every [`Db::open`] is another store handle on it.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(PgSchema),
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Db {
        Db::Postgres(PgSchema::create().await)
    }

    fn backend(&self) -> StoreBackend {
        match self {
            Db::Sqlite(dir) => StoreBackend::Sqlite(dir.path().join("tokens.db")),
            Db::Postgres(schema) => StoreBackend::Postgres(schema.url.clone()),
        }
    }

    /// Opens a store handle, as `tokengate serve` or the CLI would.
    async fn open(&self) -> SharedStore {
        store::open(&self.backend())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Runs each listed behaviour against each backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

contract!(
    a_fresh_store_is_empty_and_ready,
    insert_find_delete,
    all_fields_round_trip,
    duplicate_insert_returns_the_existing_row,
    delete_session_checks_the_user,
    list_excludes_expired_and_other_users_newest_first,
    delete_user_sessions_returns_the_ids,
    deny_and_is_denied,
    cutoff_never_moves_backwards,
    prune_removes_exactly_the_dead_rows_in_small_batches,
    a_second_handle_sees_writes_at_once,
    reopening_keeps_the_rows,
    concurrent_writes_and_reads,
    every_revocation_appends_its_feed_row,
    the_feed_is_read_in_order_from_a_position,
    a_session_id_that_matches_nothing_leaves_no_feed_row,
    feed_rows_are_pruned_after_their_horizon,
    a_second_handle_reads_the_first_ones_feed,
    the_tokens_of_one_session_go_together,
    a_sid_logout_ends_every_session_that_carried_it,
    a_sid_of_several_users_writes_one_feed_row_per_user,
    a_revocation_with_a_replay_guard_is_made_once_only,
    last_use_is_recorded_and_idle_sessions_are_found,
);

/// The row changes a strategy asks for, each made through [`store::TokenStore::revoke`]
/// as the revocation door makes them (every one also appends a feed row).
trait Changes {
    async fn change(&self, change: Change, kind: RevocationKind) -> Result<Revoked, StoreError>;

    async fn delete_session_by_hash(&self, hash: TokenHash) -> Result<bool, StoreError> {
        let user = "alice".to_owned();
        let done = self
            .change(Change::DeleteToken { hash, user }, RevocationKind::Logout)
            .await?;
        Ok(!done.sessions.is_empty())
    }

    async fn delete_session(
        &self,
        id: &str,
        owner: Option<&str>,
    ) -> Result<Option<Session>, StoreError> {
        let change = Change::DeleteSession {
            id: id.to_owned(),
            owner: owner.map(str::to_owned),
        };
        let done = self.change(change, RevocationKind::Session).await?;
        Ok(done.sessions.into_iter().next())
    }

    async fn delete_user_sessions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let change = Change::DeleteUserSessions {
            user: user.to_owned(),
        };
        let done = self.change(change, RevocationKind::LogoutAll).await?;
        Ok(done.sessions.into_iter().map(|s| s.session_id).collect())
    }

    async fn deny(&self, hash: TokenHash, user: &str, expires_at: i64) -> Result<(), StoreError> {
        let change = Change::DenyToken {
            hash,
            user: user.to_owned(),
            expires_at,
        };
        self.change(change, RevocationKind::Logout).await.map(drop)
    }

    async fn set_cutoff(&self, user: &str, at: i64) -> Result<(), StoreError> {
        let change = Change::CutOff {
            user: user.to_owned(),
            at,
        };
        self.change(change, RevocationKind::Cutoff).await.map(drop)
    }

    async fn prune_at(
        &self,
        now: i64,
        cutoff_horizon: i64,
        batch: u32,
    ) -> Result<PruneReport, StoreError>;
}

impl Changes for SharedStore {
    async fn change(&self, change: Change, kind: RevocationKind) -> Result<Revoked, StoreError> {
        let by = Actor::Cli;
        self.revoke(Revocation {
            change,
            kind,
            by,
            once: None,
        })
        .await
    }

    /// A prune that keeps the feed (its own sweep is tested with the feed).
    async fn prune_at(
        &self,
        now: i64,
        cutoff_horizon: i64,
        batch: u32,
    ) -> Result<PruneReport, StoreError> {
        let bounds = PruneBounds {
            now,
            cutoff_horizon,
            log_horizon_ms: i64::MIN,
            batch,
        };
        self.prune(bounds).await
    }
}

fn hash(n: u8) -> TokenHash {
    TokenHash::of_signing_input(&[n])
}

fn session(n: u8, user: &str, created_at: i64, expires_at: i64) -> Session {
    Session {
        token_hash: hash(n),
        session_id: format!("s{n}"),
        user_id: user.to_owned(),
        issued_at: Some(created_at),
        expires_at,
        created_at,
        user_agent: Some("curl/8".to_owned()),
        client_addr: None,
        kind: TokenKind::Access,
        sid: None,
    }
}

/// Every allowlist row of `user`, expired or not, by session id.
async fn ids(store: &SharedStore, user: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_sessions(user, i64::MIN)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    ids.sort();
    ids
}

async fn a_fresh_store_is_empty_and_ready(db: &Db) {
    let store = db.open().await;
    store.ping().await.unwrap();
    assert_eq!(store.find_session(hash(1)).await.unwrap(), None);
    assert!(!store.is_denied(hash(1)).await.unwrap());
    assert_eq!(store.cutoff("alice").await.unwrap(), None);
    assert!(store.list_sessions("alice", 0).await.unwrap().is_empty());
    assert_eq!(
        store
            .prune_at(i64::MAX, i64::MAX, 10)
            .await
            .unwrap()
            .total(),
        0
    );
}

async fn insert_find_delete(db: &Db) {
    let store = db.open().await;
    let stored = store
        .insert_session(session(1, "alice", 10, 100))
        .await
        .unwrap();
    assert_eq!(stored, session(1, "alice", 10, 100));
    store
        .insert_session(session(2, "alice", 11, 100))
        .await
        .unwrap();
    assert_eq!(
        store.find_session(hash(1)).await.unwrap(),
        Some(session(1, "alice", 10, 100))
    );
    assert!(store.delete_session_by_hash(hash(1)).await.unwrap());
    assert!(!store.delete_session_by_hash(hash(1)).await.unwrap());
    assert_eq!(store.find_session(hash(1)).await.unwrap(), None);
    let gone = store.delete_session("s2", Some("alice")).await.unwrap();
    assert_eq!(gone, Some(session(2, "alice", 11, 100)));
    assert!(ids(&store, "alice").await.is_empty());
}

async fn all_fields_round_trip(db: &Db) {
    let store = db.open().await;
    let odd = Session {
        token_hash: TokenHash([0xff; 32]),
        session_id: "0123456789abcdef0123456789abcdef".into(),
        user_id: "ünïcødé user 🦀".into(),
        issued_at: None,
        expires_at: i64::MAX,
        created_at: -1,
        user_agent: None,
        client_addr: Some("::1".into()),
        kind: TokenKind::Refresh,
        sid: Some("idp-session ✓".into()),
    };
    assert_eq!(store.insert_session(odd.clone()).await.unwrap(), odd);
    assert_eq!(store.find_session(odd.token_hash).await.unwrap(), Some(odd));
}

async fn duplicate_insert_returns_the_existing_row(db: &Db) {
    let store = db.open().await;
    let first = session(1, "alice", 10, 100);
    store.insert_session(first.clone()).await.unwrap();
    let mut again = session(1, "alice", 20, 200);
    again.session_id = "other".to_owned();
    // The same token captured twice is one session: the first.
    assert_eq!(store.insert_session(again).await.unwrap(), first);
    assert_eq!(ids(&store, "alice").await, ["s1"]);
    assert_eq!(store.find_session(hash(1)).await.unwrap(), Some(first));
}

async fn delete_session_checks_the_user(db: &Db) {
    let store = db.open().await;
    store
        .insert_session(session(1, "alice", 10, 100))
        .await
        .unwrap();
    assert_eq!(store.delete_session("s1", Some("bob")).await.unwrap(), None);
    assert!(store.find_session(hash(1)).await.unwrap().is_some());
    assert_eq!(store.delete_session("nope", None).await.unwrap(), None);
    assert_eq!(
        store.delete_session("s1", None).await.unwrap(),
        Some(session(1, "alice", 10, 100))
    );
    assert!(ids(&store, "alice").await.is_empty());
}

async fn list_excludes_expired_and_other_users_newest_first(db: &Db) {
    let store = db.open().await;
    for s in [
        session(1, "alice", 10, 100),
        session(2, "alice", 30, 100),
        session(3, "alice", 20, 50), // expired at 50
        session(4, "alice", 30, 100),
        session(5, "bob", 40, 100),
    ] {
        store.insert_session(s).await.unwrap();
    }
    let listed: Vec<String> = store
        .list_sessions("alice", 50)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    // Newest first; a tie in created_at is ordered by session id.
    assert_eq!(listed, ["s2", "s4", "s1"]);
    assert_eq!(store.list_sessions("bob", 50).await.unwrap().len(), 1);
    assert!(store.list_sessions("carol", 0).await.unwrap().is_empty());
    // The live-sessions gauge counts the same rows, every user together.
    assert_eq!(store.count_sessions(50).await.unwrap(), 4);
    assert_eq!(store.count_sessions(100).await.unwrap(), 0);
}

async fn delete_user_sessions_returns_the_ids(db: &Db) {
    let store = db.open().await;
    for s in [
        session(1, "alice", 10, 100),
        session(2, "alice", 20, 50),
        session(3, "bob", 30, 100),
    ] {
        store.insert_session(s).await.unwrap();
    }
    let mut gone = store.delete_user_sessions("alice").await.unwrap();
    gone.sort();
    assert_eq!(gone, ["s1", "s2"]);
    assert!(ids(&store, "alice").await.is_empty());
    assert_eq!(ids(&store, "bob").await, ["s3"]);
    assert!(store
        .delete_user_sessions("alice")
        .await
        .unwrap()
        .is_empty());
}

async fn deny_and_is_denied(db: &Db) {
    let store = db.open().await;
    assert!(!store.is_denied(hash(1)).await.unwrap());
    store.deny(hash(1), "alice", 100).await.unwrap();
    store.deny(hash(1), "alice", 100).await.unwrap(); // twice is once
    assert!(store.is_denied(hash(1)).await.unwrap());
    assert!(!store.is_denied(hash(2)).await.unwrap());
    let report = store.prune_at(100, i64::MIN, 10).await.unwrap();
    assert_eq!(report.invalid_token, 1, "denied once, so one row");
}

async fn cutoff_never_moves_backwards(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.cutoff("alice").await.unwrap(), None);
    store.set_cutoff("alice", 100).await.unwrap();
    store.set_cutoff("alice", 50).await.unwrap();
    assert_eq!(store.cutoff("alice").await.unwrap(), Some(100));
    store.set_cutoff("alice", 150).await.unwrap();
    assert_eq!(store.cutoff("alice").await.unwrap(), Some(150));
    assert_eq!(store.cutoff("bob").await.unwrap(), None);
}

async fn prune_removes_exactly_the_dead_rows_in_small_batches(db: &Db) {
    let store = db.open().await;
    for n in 0..5 {
        store
            .insert_session(session(n, "alice", 1, 100))
            .await
            .unwrap();
        store.deny(hash(n), "alice", 100).await.unwrap();
        store.set_cutoff(&format!("old{n}"), 10).await.unwrap();
    }
    store
        .insert_session(session(9, "alice", 1, 101))
        .await
        .unwrap();
    store.deny(hash(9), "alice", 101).await.unwrap();
    store.set_cutoff("recent", 20).await.unwrap();

    // Expired at `now` counts as dead; a cut-off at the horizon stays.
    let report = store.prune_at(100, 20, 2).await.unwrap();
    let expected = PruneReport {
        valid_token: 5,
        invalid_token: 5,
        user_status: 5,
        revocation_log: 0,
        backchannel_jti: 0,
    };
    assert_eq!(report, expected);
    assert_eq!(ids(&store, "alice").await, ["s9"]);
    for n in 0..5 {
        assert!(!store.is_denied(hash(n)).await.unwrap());
        assert_eq!(store.cutoff(&format!("old{n}")).await.unwrap(), None);
    }
    assert!(store.is_denied(hash(9)).await.unwrap());
    assert_eq!(store.cutoff("recent").await.unwrap(), Some(20));
    // Nothing left to do, and a zero batch still terminates.
    assert_eq!(store.prune_at(100, 20, 0).await.unwrap().total(), 0);
}

async fn a_second_handle_sees_writes_at_once(db: &Db) {
    let first = db.open().await;
    // Read first on every connection, so that none starts after the other's writes.
    for _ in 0..8 {
        assert!(!first.is_denied(hash(1)).await.unwrap());
        assert_eq!(first.find_session(hash(2)).await.unwrap(), None);
    }
    let second = db.open().await;
    second.deny(hash(1), "alice", 100).await.unwrap();
    second.set_cutoff("alice", 5).await.unwrap();
    second
        .insert_session(session(2, "alice", 1, 100))
        .await
        .unwrap();
    for _ in 0..8 {
        assert!(first.is_denied(hash(1)).await.unwrap());
        assert_eq!(first.cutoff("alice").await.unwrap(), Some(5));
        assert!(first.find_session(hash(2)).await.unwrap().is_some());
    }
    second.delete_session_by_hash(hash(2)).await.unwrap();
    for _ in 0..8 {
        assert_eq!(first.find_session(hash(2)).await.unwrap(), None);
    }
}

async fn reopening_keeps_the_rows(db: &Db) {
    let store = db.open().await;
    store
        .insert_session(session(1, "alice", 10, 100))
        .await
        .unwrap();
    store.deny(hash(2), "alice", 100).await.unwrap();
    drop(store);
    // Opening again finds the schema current and migrates nothing.
    let store = db.open().await;
    assert_eq!(
        store.find_session(hash(1)).await.unwrap(),
        Some(session(1, "alice", 10, 100))
    );
    assert!(store.is_denied(hash(2)).await.unwrap());
}

async fn concurrent_writes_and_reads(db: &Db) {
    let store = db.open().await;
    let tasks: Vec<_> = (0..32u8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                // Half of them capture the same token: one row, one answer.
                let n = if n % 2 == 0 { n } else { 1 };
                let stored = store.insert_session(session(n, "alice", 1, 100)).await?;
                // (`revoke` directly: spawned futures must be Send.)
                let deny = Change::DenyToken {
                    hash: hash(n),
                    user: "alice".into(),
                    expires_at: 100,
                };
                // Another user's cut-off: alice's rows stay.
                let cut_off = Change::CutOff {
                    user: "carol".into(),
                    at: i64::from(n),
                };
                for (change, kind) in [
                    (deny, RevocationKind::Logout),
                    (cut_off, RevocationKind::Cutoff),
                ] {
                    store
                        .revoke(Revocation {
                            change,
                            kind,
                            by: Actor::Cli,
                            once: None,
                        })
                        .await?;
                }
                let found = store.find_session(hash(n)).await?;
                Ok::<_, StoreError>((stored, found))
            })
        })
        .collect();
    for task in tasks {
        let (stored, found) = task.await.unwrap().unwrap();
        assert_eq!(Some(stored), found);
    }
    assert_eq!(store.list_sessions("alice", 0).await.unwrap().len(), 17);
    assert_eq!(store.cutoff("carol").await.unwrap(), Some(30));
    // Every revocation left one feed row, numbered without a hole, in commit order.
    let rows = store.read_feed(0, 1000).await.unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=64).collect::<Vec<i64>>());
}

async fn every_revocation_appends_its_feed_row(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.feed_head().await.unwrap(), 0);
    store
        .insert_session(session(1, "alice", 1, 100))
        .await
        .unwrap();
    store
        .insert_session(session(2, "alice", 1, 100))
        .await
        .unwrap();
    store
        .insert_session(session(3, "bob", 1, 100))
        .await
        .unwrap();
    let started = tokengate::jwt::now_ms();
    assert!(store.delete_session_by_hash(hash(1)).await.unwrap());
    store.deny(hash(4), "carol", 100).await.unwrap();
    assert!(store
        .delete_session("s2", Some("alice"))
        .await
        .unwrap()
        .is_some());
    store.delete_user_sessions("bob").await.unwrap();
    store.set_cutoff("dave", 50).await.unwrap();
    let rows = store.read_feed(0, 100).await.unwrap();
    type Summary<'a> = (
        i64,
        &'a str,
        &'a str,
        Option<Vec<u8>>,
        Option<&'a str>,
        &'a str,
    );
    let summary: Vec<Summary> = rows
        .iter()
        .map(|r| {
            (
                r.seq,
                r.kind.as_str(),
                r.user_id.as_str(),
                r.token_hash.clone(),
                r.session_id.as_deref(),
                r.by.as_str(),
            )
        })
        .collect();
    let h = |n: u8| Some(hash(n).0.to_vec());
    assert_eq!(
        summary,
        [
            (1, "logout", "alice", h(1), Some("s1"), "cli"),
            (2, "logout", "carol", h(4), None, "cli"),
            (3, "session", "alice", h(2), Some("s2"), "cli"),
            (4, "logout_all", "bob", None, None, "cli"),
            (5, "cutoff", "dave", None, None, "cli"),
        ]
    );
    // Commit times, in milliseconds, from a clock close to ours.
    for row in &rows {
        assert!((row.at_ms - started).abs() < 60_000, "{row:?}");
    }
    assert_eq!(store.feed_head().await.unwrap(), 5);
}

async fn the_feed_is_read_in_order_from_a_position(db: &Db) {
    let store = db.open().await;
    for n in 0..7 {
        store.deny(hash(n), "alice", 100).await.unwrap();
    }
    let seqs =
        |rows: Vec<tokengate::store::FeedRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.read_feed(0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(seqs(store.read_feed(3, 3).await.unwrap()), [4, 5, 6]);
    assert_eq!(seqs(store.read_feed(6, 3).await.unwrap()), [7]);
    assert!(store.read_feed(7, 3).await.unwrap().is_empty());
}

async fn a_session_id_that_matches_nothing_leaves_no_feed_row(db: &Db) {
    let store = db.open().await;
    store
        .insert_session(session(1, "alice", 1, 100))
        .await
        .unwrap();
    let missed = store
        .change(
            Change::DeleteSession {
                id: "s1".into(),
                owner: Some("bob".into()),
            },
            RevocationKind::Session,
        )
        .await
        .unwrap();
    assert_eq!(missed.seq, None);
    assert!(missed.sessions.is_empty());
    assert_eq!(store.feed_head().await.unwrap(), 0);
}

async fn feed_rows_are_pruned_after_their_horizon(db: &Db) {
    let store = db.open().await;
    for n in 0..5 {
        store.deny(hash(n), "alice", i64::MAX).await.unwrap();
    }
    let keep_all = PruneBounds {
        now: 0,
        cutoff_horizon: i64::MIN,
        log_horizon_ms: 0,
        batch: 2,
    };
    assert_eq!(store.prune(keep_all).await.unwrap().revocation_log, 0);
    let drop_all = PruneBounds {
        log_horizon_ms: i64::MAX,
        ..keep_all
    };
    assert_eq!(store.prune(drop_all).await.unwrap().revocation_log, 5);
    assert!(store.read_feed(0, 10).await.unwrap().is_empty());
    // Numbers are never handed out twice, even once the table is empty.
    store.deny(hash(9), "alice", i64::MAX).await.unwrap();
    assert_eq!(store.feed_head().await.unwrap(), 6);
}

async fn a_second_handle_reads_the_first_ones_feed(db: &Db) {
    let reader = db.open().await;
    assert!(reader.read_feed(0, 10).await.unwrap().is_empty());
    let writer = db.open().await;
    writer.delete_user_sessions("alice").await.unwrap();
    let rows = reader.read_feed(0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "logout_all");
}

async fn the_tokens_of_one_session_go_together(db: &Db) {
    let store = db.open().await;
    // One login: an access token, its refresh token, then a refreshed access token.
    let mut refresh = session(2, "alice", 1, 500);
    refresh.session_id = "s1".into();
    refresh.kind = TokenKind::Refresh;
    let mut refreshed = session(3, "alice", 2, 200);
    refreshed.session_id = "s1".into();
    for s in [
        session(1, "alice", 1, 100),
        refresh.clone(),
        refreshed,
        session(4, "alice", 3, 100),
    ] {
        store.insert_session(s).await.unwrap();
    }
    assert_eq!(store.find_session(hash(2)).await.unwrap(), Some(refresh));
    assert_eq!(
        store.count_sessions(0).await.unwrap(),
        2,
        "two sessions, four rows"
    );
    // A logout with any token of the session ends all of its tokens, and only them.
    let done = store
        .change(
            Change::DeleteTokenSession {
                hash: hash(3),
                user: "alice".into(),
            },
            RevocationKind::Logout,
        )
        .await
        .unwrap();
    let mut gone: Vec<TokenHash> = done.sessions.iter().map(|s| s.token_hash).collect();
    gone.sort_by_key(|h| h.0);
    let mut expected = vec![hash(1), hash(2), hash(3)];
    expected.sort_by_key(|h| h.0);
    assert_eq!(gone, expected);
    assert_eq!(ids(&store, "alice").await, ["s4"]);
    // The feed names the session, not one token: readers forget the user's tokens.
    let row = store.read_feed(0, 10).await.unwrap().pop().unwrap();
    assert_eq!(
        (row.token_hash, row.session_id.as_deref()),
        (None, Some("s1"))
    );
}

/// A session row of `user` whose token carried the `sid` claim `sid`.
fn with_sid(n: u8, user: &str, sid: Option<&str>) -> Session {
    Session {
        sid: sid.map(str::to_owned),
        ..session(n, user, 1, 100)
    }
}

/// A back-channel logout by `sid` (of `user` when given), as the door makes it.
async fn sid_logout(store: &SharedStore, sid: &str, user: Option<&str>) -> Revoked {
    let change = Change::DeleteSidSessions {
        sid: sid.to_owned(),
        user: user.map(str::to_owned),
    };
    store.change(change, RevocationKind::Session).await.unwrap()
}

/// The feed rows after `after`, as (kind, user, one token?, session, by).
async fn feed_after(
    store: &SharedStore,
    after: i64,
) -> Vec<(String, String, bool, Option<String>, String)> {
    store
        .read_feed(after, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.kind,
                r.user_id,
                r.token_hash.is_some(),
                r.session_id,
                r.by,
            )
        })
        .collect()
}

async fn a_sid_logout_ends_every_session_that_carried_it(db: &Db) {
    let store = db.open().await;
    // s1 is one login: its access token carried sid A, its refresh token none.
    let mut refresh = with_sid(2, "alice", None);
    refresh.session_id = "s1".into();
    refresh.kind = TokenKind::Refresh;
    for s in [
        with_sid(1, "alice", Some("A")),
        refresh,
        with_sid(3, "alice", Some("B")),
        with_sid(4, "bob", Some("A")),
        with_sid(5, "alice", None),
    ] {
        store.insert_session(s).await.unwrap();
    }
    // With a user: only that user's sessions with the sid, every row of each.
    let done = sid_logout(&store, "A", Some("alice")).await;
    let mut gone: Vec<u8> = done
        .sessions
        .iter()
        .map(|s| if s.token_hash == hash(1) { 1 } else { 2 })
        .collect();
    gone.sort();
    assert_eq!(gone, [1, 2], "{done:?}");
    assert_eq!(ids(&store, "alice").await, ["s3", "s5"]);
    assert_eq!(ids(&store, "bob").await, ["s4"]);
    // One feed row naming the session (two tokens went: no single token).
    let rows = feed_after(&store, 0).await;
    let row = |user: &str, one: bool, session: &str| {
        let by = "cli".to_owned();
        let kind = "session".to_owned();
        (kind, user.to_owned(), one, Some(session.to_owned()), by)
    };
    assert_eq!(rows, [row("alice", false, "s1")]);
    // Without a user: whoever's sessions carried it.
    let done = sid_logout(&store, "A", None).await;
    assert_eq!(done.sessions.len(), 1);
    assert_eq!(ids(&store, "bob").await, Vec::<String>::new());
    assert_eq!(feed_after(&store, 1).await, [row("bob", true, "s4")]);
    // A sid nobody carries changes nothing and leaves no feed row.
    let missed = sid_logout(&store, "Z", None).await;
    assert_eq!((missed.seq, missed.sessions.len()), (None, 0));
    assert_eq!(store.feed_head().await.unwrap(), 2);
}

async fn a_sid_of_several_users_writes_one_feed_row_per_user(db: &Db) {
    let store = db.open().await;
    for s in [
        with_sid(1, "alice", Some("C")),
        with_sid(2, "alice", Some("C")),
        with_sid(3, "bob", Some("C")),
    ] {
        store.insert_session(s).await.unwrap();
    }
    let done = sid_logout(&store, "C", None).await;
    assert_eq!(done.sessions.len(), 3);
    let mut rows = feed_after(&store, 0).await;
    rows.sort();
    let by = || "cli".to_owned();
    let kind = || "session".to_owned();
    // Two sessions of alice: the row names her, and readers forget all her tokens.
    assert_eq!(
        rows,
        [
            (kind(), "alice".to_owned(), false, None, by()),
            (kind(), "bob".to_owned(), true, Some("s3".to_owned()), by()),
        ]
    );
    assert_eq!(done.seq, Some(2), "the last row's number");
}

async fn a_revocation_with_a_replay_guard_is_made_once_only(db: &Db) {
    let store = db.open().await;
    let once = |jti: &str, expires_at: i64, now: i64| Revocation {
        change: Change::DeleteUserSessions {
            user: "alice".into(),
        },
        kind: RevocationKind::LogoutAll,
        by: Actor::Backchannel,
        once: Some(ReplayGuard {
            jti: jti.to_owned(),
            expires_at,
            now,
        }),
    };
    store
        .insert_session(session(1, "alice", 1, 1000))
        .await
        .unwrap();
    let first = store.revoke(once("j1", 100, 50)).await.unwrap();
    assert!(!first.replayed);
    assert_eq!((first.sessions.len(), first.seq), (1, Some(1)));
    // A new login, then the same id again: refused, and nothing changes.
    store
        .insert_session(session(2, "alice", 2, 1000))
        .await
        .unwrap();
    let again = store.revoke(once("j1", 100, 60)).await.unwrap();
    assert!(again.replayed);
    assert_eq!((again.sessions.len(), again.seq), (0, None));
    assert_eq!(ids(&store, "alice").await, ["s2"]);
    assert_eq!(store.feed_head().await.unwrap(), 1);
    // Another id is another revocation.
    let other = store.revoke(once("j2", 100, 60)).await.unwrap();
    assert!(!other.replayed);
    assert!(ids(&store, "alice").await.is_empty());
    // Once the first token can no longer verify, a row not pruned yet no longer counts.
    assert!(!store.revoke(once("j1", 300, 150)).await.unwrap().replayed);
    // Pruned when expired: j2 (100) goes at 200, j1 (now 300) stays.
    let report = store.prune_at(200, i64::MIN, 10).await.unwrap();
    assert_eq!(report.backchannel_jti, 1);
    assert!(store.revoke(once("j1", 300, 250)).await.unwrap().replayed);
    assert!(!store.revoke(once("j2", 300, 250)).await.unwrap().replayed);
}

async fn last_use_is_recorded_and_idle_sessions_are_found(db: &Db) {
    let store = db.open().await;
    let mut refresh = session(2, "alice", 10, 1000);
    refresh.session_id = "s1".into();
    refresh.kind = TokenKind::Refresh;
    for s in [
        session(1, "alice", 10, 1000),
        refresh,
        session(3, "alice", 20, 1000),
        session(4, "alice", 5, 30), // expired at 30
        session(5, "bob", 40, 1000),
    ] {
        store.insert_session(s).await.unwrap();
    }
    let idle = |since: i64, limit: u32| {
        let store = store.clone();
        async move {
            store
                .idle_sessions(since, 35, limit)
                .await
                .unwrap()
                .into_iter()
                .map(
                    |IdleSession {
                         session_id,
                         user_id,
                     }| format!("{user_id}/{session_id}"),
                )
                .collect::<Vec<_>>()
        }
    };
    // Never used: a session's last use is its latest creation.
    assert_eq!(idle(30, 10).await, ["alice/s1", "alice/s3"]);
    store
        .touch_sessions(vec![("s1".into(), 50), ("nope".into(), 60)])
        .await
        .unwrap();
    assert_eq!(idle(30, 10).await, ["alice/s3"]);
    // A late, older use does not move the last use back.
    store.touch_sessions(vec![("s1".into(), 45)]).await.unwrap();
    assert_eq!(idle(49, 10).await, ["alice/s3", "bob/s5"]);
    assert_eq!(idle(50, 10).await, ["alice/s1", "alice/s3", "bob/s5"]);
    assert_eq!(idle(50, 1).await.len(), 1);
    // Expired sessions are the prune's business, not the sweep's.
    assert!(!idle(i64::MAX, 10).await.contains(&"alice/s4".to_owned()));
}

// ---- PostgreSQL only ----

async fn next_signal(
    signals: &mut tokio::sync::mpsc::Receiver<store::FeedSignal>,
) -> store::FeedSignal {
    tokio::time::timeout(Duration::from_secs(10), signals.recv())
        .await
        .expect("a signal")
        .expect("the listener runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_notifies_every_listener_after_its_commit() {
    let db = Db::postgres().await;
    let listener = db.open().await;
    let mut signals = listener.listen().expect("PostgreSQL pushes revocations");
    assert_eq!(
        next_signal(&mut signals).await,
        store::FeedSignal::Connected
    );
    let writer = db.open().await;
    writer.deny(hash(1), "alice", 100).await.unwrap();
    assert_eq!(next_signal(&mut signals).await, store::FeedSignal::Notified);
    // SQLite has nothing to push: its feed is polled.
    let sqlite = Db::sqlite();
    assert!(sqlite.open().await.listen().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_and_keeps_its_rows() {
    // (Versions 2, 3 and 4 all run: the feed, then `kind` and shared session ids, then
    // `sid`, `last_used_at` and `backchannel_jti`.)
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    let store = db.open().await;
    store
        .insert_session(session(1, "alice", 1, 100))
        .await
        .unwrap();
    drop(store);
    // Back to the schema of version 1, as an older tokengate left it.
    let sql = format!(
        "DROP TABLE {0}.revocation_log; DROP INDEX {0}.valid_token_session_id;
         DROP TABLE {0}.backchannel_jti; DROP INDEX {0}.valid_token_sid;
         ALTER TABLE {0}.valid_token DROP COLUMN kind, DROP COLUMN sid, DROP COLUMN last_used_at;
         ALTER TABLE {0}.valid_token ADD CONSTRAINT valid_token_session_id_key UNIQUE (session_id);
         UPDATE {0}.tokengate_schema_version SET version = 1",
        schema.name
    );
    pg_admin().await.batch_execute(&sql).await.unwrap();
    let store = db.open().await;
    assert!(store.find_session(hash(1)).await.unwrap().is_some());
    store.deny(hash(2), "alice", 100).await.unwrap();
    assert_eq!(store.feed_head().await.unwrap(), 1);
    assert_eq!(schema.rows("revocation_log").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_schema_is_migrated_and_keeps_its_rows() {
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    let store = db.open().await;
    store
        .insert_session(session(1, "alice", 1, 100))
        .await
        .unwrap();
    drop(store);
    // Back to the schema of version 3, as the previous tokengate left it.
    let sql = format!(
        "DROP TABLE {0}.backchannel_jti; DROP INDEX {0}.valid_token_sid;
         ALTER TABLE {0}.valid_token DROP COLUMN sid, DROP COLUMN last_used_at;
         UPDATE {0}.tokengate_schema_version SET version = 3",
        schema.name
    );
    pg_admin().await.batch_execute(&sql).await.unwrap();
    let store = db.open().await;
    let kept = store.find_session(hash(1)).await.unwrap().unwrap();
    assert_eq!(kept, session(1, "alice", 1, 100), "no sid for an old row");
    store.touch_sessions(vec![("s1".into(), 50)]).await.unwrap();
    assert!(store.idle_sessions(49, 0, 10).await.unwrap().is_empty());
    let done = sid_logout(&store, "A", None).await;
    assert!(done.sessions.is_empty());
    let version = pg_admin()
        .await
        .query_one(
            &format!(
                "SELECT version FROM {}.tokengate_schema_version",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(version, 4);
}

async fn connect_err(url: &str) -> (String, Duration) {
    let started = Instant::now();
    let err = store::open(&StoreBackend::Postgres(url.to_owned()))
        .await
        .err()
        .expect("connecting should fail");
    (err.to_string(), started.elapsed())
}

#[tokio::test]
async fn a_closed_port_is_a_quick_clean_error() {
    let port = closed_port().await;
    let (err, took) = connect_err(&format!("postgres://tg:hunter2@127.0.0.1:{port}/db")).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        err.starts_with(&format!(
            "cannot connect to database postgres://tg@127.0.0.1:{port}/db: "
        )),
        "{err}"
    );
    assert!(!err.contains('\n') && !err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn the_password_never_appears_in_an_error() {
    let secret = "hunter2-Sup3rSecret";
    let port = closed_port().await;
    // A server that accepts and never answers: the connect timeout (here 1 s) ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let cases = [
        format!("postgres://tg:{secret}@127.0.0.1:{port}/test"),
        format!("postgres://postgres:{secret}@127.0.0.1:5432/no_such_database_tg"),
        format!("postgres://postgres@127.0.0.1:5432/test?password={secret}&port=bad"),
        format!("postgres://tg:{secret}@127.0.0.1/test?sslmode=require"),
        format!("postgres://tg:{secret}@{silent_addr}/test?connect_timeout=1"),
    ];
    let mut errors = Vec::new();
    for url in &cases {
        let (err, took) = connect_err(url).await;
        assert!(!err.contains(secret), "{url}: {err}");
        assert!(!err.contains('\n'), "{url}: {err}");
        assert!(took < Duration::from_secs(3), "{url}: took {took:?}");
        errors.push((err, took));
    }
    assert!(
        errors[1].0.contains("no_such_database_tg"),
        "{}",
        errors[1].0
    );
    assert!(errors[4].0.contains("timed out"), "{}", errors[4].0);
    assert!(
        errors[4].1 >= Duration::from_millis(900),
        "{:?}",
        errors[4].1
    );
}

#[tokio::test]
async fn the_schema_is_in_postgres_types_with_the_sqlite_names() {
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    db.open().await;
    let admin = pg_admin().await;
    let columns: Vec<(String, String, String)> = admin
        .query(
            "SELECT table_name::text, column_name::text, data_type::text
             FROM information_schema.columns WHERE table_schema = $1
             AND table_name IN ('valid_token', 'invalid_token', 'user_status', 'revocation_log',
                                'backchannel_jti')
             ORDER BY 1, ordinal_position",
            &[&schema.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("backchannel_jti", "jti", "text"),
        ("backchannel_jti", "expires_at", "bigint"),
        ("invalid_token", "token_hash", "bytea"),
        ("invalid_token", "user_id", "text"),
        ("invalid_token", "expires_at", "bigint"),
        ("revocation_log", "seq", "bigint"),
        ("revocation_log", "at_ms", "bigint"),
        ("revocation_log", "kind", "text"),
        ("revocation_log", "user_id", "text"),
        ("revocation_log", "token_hash", "bytea"),
        ("revocation_log", "session_id", "text"),
        ("revocation_log", "by", "text"),
        ("user_status", "user_id", "text"),
        ("user_status", "logged_out_at", "bigint"),
        ("valid_token", "token_hash", "bytea"),
        ("valid_token", "session_id", "text"),
        ("valid_token", "user_id", "text"),
        ("valid_token", "issued_at", "bigint"),
        ("valid_token", "expires_at", "bigint"),
        ("valid_token", "created_at", "bigint"),
        ("valid_token", "user_agent", "text"),
        ("valid_token", "client_addr", "text"),
        ("valid_token", "kind", "text"),
        ("valid_token", "sid", "text"),
        ("valid_token", "last_used_at", "bigint"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, c, d)| (t.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(columns, expected);
    let indexes: Vec<String> = admin
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1
             AND indexname NOT LIKE '%pkey' AND indexname NOT LIKE '%key' ORDER BY 1",
            &[&schema.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        [
            "backchannel_jti_expires_at",
            "invalid_token_expires_at",
            "invalid_token_user_id",
            "revocation_log_at_ms",
            "user_status_logged_out_at",
            "valid_token_expires_at",
            "valid_token_session_id",
            "valid_token_sid",
            "valid_token_user_id",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    // Polled together: four connects race for the migration lock on an empty schema.
    let (a, b, c, d) = tokio::join!(db.open(), db.open(), db.open(), db.open());
    for store in [&a, &b, &c, &d] {
        store.ping().await.unwrap();
    }
    assert_eq!(schema.rows("tokengate_schema_version").await, 1);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    drop(db.open().await);
    let sql = format!(
        "UPDATE {}.tokengate_schema_version SET version = 99",
        schema.name
    );
    pg_admin().await.batch_execute(&sql).await.unwrap();
    match store::open(&db.backend()).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, 99);
            assert!(supported < 99);
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn the_search_path_may_be_given_with_a_space() {
    // `options=-c search_path=...` percent-encoded, the other spelling of the option.
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    let url = schema
        .url
        .replace("-csearch_path%3D", "-c%20search_path%3D");
    assert_ne!(url, schema.url);
    let store = store::open(&StoreBackend::Postgres(url)).await.unwrap();
    store.deny(hash(1), "alice", 100).await.unwrap();
    assert_eq!(schema.rows("invalid_token").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_under_the_store_are_replaced() {
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    let store = db.open().await;
    store
        .insert_session(session(1, "alice", 1, 100))
        .await
        .unwrap();
    for round in 0..3 {
        assert!(schema.terminate_sessions().await >= 3, "round {round}");
        // Reads and idempotent writes are retried once on a new connection.
        assert!(store.find_session(hash(1)).await.unwrap().is_some());
        store
            .insert_session(session(2 + round, "alice", 1, 100))
            .await
            .unwrap();
        store.deny(hash(9), "alice", 100).await.unwrap();
        store.ping().await.unwrap();
    }
    // Every other operation works again too once the store has reconnected.
    assert_eq!(store.delete_user_sessions("alice").await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_dropped_schema_is_an_error_not_a_panic() {
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    let store = db.open().await;
    let sql = format!("DROP SCHEMA {} CASCADE", schema.name);
    pg_admin().await.batch_execute(&sql).await.unwrap();
    let err = store.find_session(hash(1)).await.unwrap_err().to_string();
    assert!(err.starts_with("database postgres://"), "{err}");
    assert!(store.ping().await.is_err());
    assert!(store.set_cutoff("alice", 1).await.is_err());
}

/// Whether the test server speaks TLS (`ssl = on`); `.ci/run` says how it is turned on.
async fn server_has_tls() -> bool {
    let row = pg_admin().await.query_one("SHOW ssl", &[]).await.unwrap();
    row.get::<_, String>(0) == "on"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_every_connection_of_the_store() {
    // SPEC §12. The machine's server has ssl = on (.ci/run turns it on when it is not).
    assert!(
        server_has_tls().await,
        "the test PostgreSQL server has ssl = off"
    );
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    let url = format!("{}&sslmode=require", schema.url);
    let store = store::open(&StoreBackend::Postgres(url)).await.unwrap();
    store.deny(hash(1), "alice", 100).await.unwrap();
    assert_eq!(schema.rows("invalid_token").await, 1);
    // Every connection of this store (its application_name is the schema's) is TLS.
    let rows = pg_admin()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&schema.name],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no connection of the store found");
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "a clear-text connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_full_refuses_a_certificate_for_another_name_in_one_line() {
    assert!(
        server_has_tls().await,
        "the test PostgreSQL server has ssl = off"
    );
    let row = pg_admin()
        .await
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap();
    let cert: String = row.get(0);
    let db = Db::postgres().await;
    let Db::Postgres(schema) = &db else {
        unreachable!()
    };
    // The server's certificate is trusted as the root, but it does not name 127.0.0.1.
    let root = format!("&sslrootcert={}", cert.replace('/', "%2F"));
    let full = format!("{}&sslmode=verify-full{root}", schema.url);
    let e = match store::open(&StoreBackend::Postgres(full)).await {
        Ok(_) => panic!("verify-full accepted a certificate that does not name the host"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("cannot connect to database"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // verify-ca checks the chain only: the same root, accepted.
    let ca = format!("{}&sslmode=verify-ca{root}", schema.url);
    let store = store::open(&StoreBackend::Postgres(ca)).await.unwrap();
    store.deny(hash(2), "bob", 100).await.unwrap();
}
