//! Tunnels: what an `Upgrade` (a WebSocket, SPEC §12) becomes once the backend answers
//! 101, and the registry that closes a tunnel when the token that opened it dies.
//!
//! A tunnel copies bytes both ways between the client's connection and a backend
//! connection opened for it alone. One opened on a protected route is *watched*: it
//! keeps the token it was opened with (in memory only, never stored or logged) and is
//! closed when that token would no longer pass a request:
//! - a revocation (any door of this process, or any process on the store through the
//!   feed, [`crate::feed`]) asks the tunnels of that token or user to check the token
//!   again ([`Tunnels::recheck`]): the store is read and a dead token closes the tunnel;
//! - its `exp` (plus `jwt.leeway_seconds`) closes it;
//! - while the feed is not current (or there is no feed: the cache is off), a watched
//!   tunnel checks its token against the store every `cache.max_staleness_ms` by
//!   itself, so the bound holds without the feed, failing closed: a store that cannot
//!   answer closes the tunnel;
//! - a key change or a reload asks every tunnel to check again, verification included
//!   (a retired key closes the tunnels its tokens opened).
//!
//! A tunnel is registered before its first check, so a revocation that lands between
//! authentication and registration is still seen. Closing is dropping both connections:
//! tokengate reads no frames, so the client sees the connection end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::app::App;
use crate::context::ClientConn;
use crate::feed::Invalidation;
use crate::jwt::VerifiedToken;
use crate::strategy::Liveness;

/// The open tunnels of this process, by the token each watches.
pub struct Tunnels {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    open: Gauge,
}

struct Entry {
    /// The token and user watched; `None` for a tunnel of a public route.
    watched: Option<(crate::store::TokenHash, String)>,
    recheck: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tunnels {
    /// An empty registry counting into `open` (`tokengate_tunnels_open`).
    pub fn new(open: Gauge) -> Tunnels {
        Tunnels {
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            open,
        }
    }

    /// Asks the tunnels a revocation may concern to check their token again: those of
    /// one token, of one user, or all of them.
    pub fn recheck(&self, what: &Invalidation) {
        let entries = lock(&self.entries);
        for entry in entries.values() {
            let concerned = match (what, &entry.watched) {
                (_, None) => false,
                (Invalidation::All, Some(_)) => true,
                (Invalidation::Token(hash), Some((h, _))) => h == hash,
                (Invalidation::User(user), Some((_, u))) => u == user,
            };
            if concerned {
                entry.recheck.notify_one();
            }
        }
    }

    fn register(self: &Arc<Self>, watched: Option<&VerifiedToken>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let recheck = Arc::new(Notify::new());
        lock(&self.entries).insert(
            id,
            Entry {
                watched: watched.map(|t| (t.hash, t.user.clone())),
                recheck: recheck.clone(),
            },
        );
        self.open.inc();
        Registration {
            tunnels: self.clone(),
            id,
            recheck,
        }
    }
}

/// A tunnel's place in the registry, left when dropped.
struct Registration {
    tunnels: Arc<Tunnels>,
    id: u64,
    recheck: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.tunnels.entries).remove(&self.id);
        self.tunnels.open.dec();
    }
}

/// The token a tunnel of a protected route watches, and the request that opened it.
pub struct Watched {
    /// The raw token, to verify again when keys or rules change.
    pub raw: String,
    /// The token as verified when the tunnel was opened.
    pub token: VerifiedToken,
    /// The handshake's method, for the `[[rules]]` of a later policy.
    pub method: http::Method,
    /// The handshake's path, likewise.
    pub path: String,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("user", &self.token.user)
            .field("token", &self.token.hash.short())
            .finish()
    }
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// One side closed it, or failed.
    Closed,
    /// Its token was revoked, or no longer verifies.
    Revoked,
    /// Its token expired.
    Expired,
    /// The store could not say whether its token is live (fail closed).
    StoreUnavailable,
}

/// Waits for both sides to hand over their connections, then runs the tunnel to its
/// end. Spawned by the gate once the backend answered 101 and that answer is on its
/// way to the client. `conn` is held to the end, so that the tunnel keeps its place in
/// the listener's connection budget.
pub async fn run(
    app: Arc<App>,
    conn: Arc<ClientConn>,
    client: OnUpgrade,
    backend: OnUpgrade,
    watched: Option<Watched>,
) {
    let registration = app.tunnels.register(watched.as_ref().map(|w| &w.token));
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete; no tunnel");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    let peer = conn.info.peer;
    let user = watched.as_ref().map(|w| w.token.user.clone());
    tracing::debug!(%peer, user = user.as_deref().unwrap_or("-"), "tunnel open");
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(copy);
        match &watched {
            None => {
                let _ = copy.await;
                End::Closed
            }
            Some(watched) => watch(&app, &registration, watched, copy).await,
        }
    };
    match end {
        End::Closed => {
            tracing::debug!(%peer, user = user.as_deref().unwrap_or("-"), "tunnel closed")
        }
        End::Revoked | End::Expired | End::StoreUnavailable => {
            let token = watched.as_ref().map(|w| w.token.hash.short());
            tracing::info!(%peer, user = user.as_deref().unwrap_or("-"), token = token.as_deref().unwrap_or("-"), reason = ?end, "tunnel closed by tokengate");
        }
    }
}

/// Copies until either side ends, or until the watched token dies.
async fn watch<F>(
    app: &App,
    registration: &Registration,
    watched: &Watched,
    mut copy: std::pin::Pin<&mut F>,
) -> End
where
    F: std::future::Future<Output = std::io::Result<(u64, u64)>>,
{
    // The first check: a revocation between authentication and registration.
    if let Some(end) = check(app, watched).await {
        return end;
    }
    let staleness = app.policy().config.cache.max_staleness;
    loop {
        let expiry = expiry(app, &watched.token);
        tokio::select! {
            _ = copy.as_mut() => return End::Closed,
            () = tokio::time::sleep(expiry) => return End::Expired,
            () = registration.recheck.notified() => {}
            // Without a current feed no revocation would be announced: ask the store.
            () = tokio::time::sleep(staleness), if !app.cache.is_current() => {}
        }
        if let Some(end) = check(app, watched).await {
            return end;
        }
    }
}

/// How long until the token expires, with the leeway a request gets.
fn expiry(app: &App, token: &VerifiedToken) -> Duration {
    let leeway = app.policy().config.jwt.settings.leeway as i64;
    let left = token
        .expires_at
        .saturating_add(leeway)
        .saturating_sub(crate::jwt::now());
    Duration::from_secs(left.max(0) as u64)
}

/// Verifies the token again under the current keys and rules (`[[rules]]` included),
/// and asks the store whether it is live; `Some` when the tunnel must close.
async fn check(app: &App, watched: &Watched) -> Option<End> {
    let policy = app.policy();
    let token = match policy.verifier.verify(&watched.raw) {
        Ok(token) => token,
        Err(crate::jwt::VerifyError::Expired) => return Some(End::Expired),
        Err(e) => {
            tracing::debug!(user = %watched.token.user, token = %watched.token.hash.short(), cause = %e, "tunnel token no longer verifies");
            return Some(End::Revoked);
        }
    };
    // A reload may have changed the route's rule.
    if let Some((index, _)) = policy.config.rules.find(&watched.method, &watched.path) {
        if !policy.config.rules.grants(&token.claims).allows(index) {
            return Some(End::Revoked);
        }
    }
    match app.strategy.check(&token).await {
        Ok(Liveness::Live(_)) => None,
        Ok(Liveness::Dead(_)) => Some(End::Revoked),
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable; tunnel closed (fail closed)");
            Some(End::StoreUnavailable)
        }
    }
}
