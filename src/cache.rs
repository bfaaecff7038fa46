//! The verdict cache (SPEC §9): positive verdicts ("verified and live") by token, kept
//! exact by the revocation feed.
//!
//! # What a hit proves
//! An entry is keyed by the token's [`TokenHash`] (the store key, SHA-256 of the signing
//! input) and holds the SHA-256 of the *whole* token: a hit needs the very bytes that
//! were verified, so a forged signature over a cached payload is a miss and goes to the
//! verifier. Only tokens of at most [`MAX_CACHED_TOKEN`] bytes are cached; each entry
//! dies at the token's `exp`, and `exp`/`nbf` are checked again on every hit with the
//! verifier's leeway. Misses, unknown, revoked and invalid tokens are never cached.
//!
//! # Why it cannot serve a revoked token past the bound
//! - **The staleness clock.** Every successful read of the feed that reached its head
//!   moves `current_until` to the read's *start* plus `max_staleness_ms`. A revocation
//!   committed before a read started is in that read, so once the clock passes
//!   `max_staleness_ms` after a commit, either the read that removed the entry has
//!   happened or the cache is bypassed: [`VerdictCache::lookup`] answers only while
//!   current. When the feed fails, the clock simply runs out (fail closed toward the
//!   store, never toward a stale "live").
//! - **The epoch.** A request that missed reads the store, then inserts. A revocation
//!   applied in between would be undone by that insert, so every invalidation bumps an
//!   epoch *before* removing entries, and an insert is dropped unless the epoch is the
//!   one taken ([`VerdictCache::ticket`]) before the store was read.
//!
//! # Shape
//! A few shards, each a `std::sync::Mutex` around an LRU list (the `lru` crate) and an
//! index by user for logout-all; critical sections are short and never cross an
//! `.await`, as in the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use crate::jwt::VerifiedToken;
use crate::rules::Grants;
use crate::store::{Session, TokenHash};

/// Tokens longer than this are never cached (SPEC §9).
pub const MAX_CACHED_TOKEN: usize = 4 * 1024;
/// Shards of the cache (fewer when `max_entries` is smaller).
const SHARDS: usize = 16;

/// The `[cache]` settings the cache runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Whether verdicts are cached at all.
    pub enabled: bool,
    /// The most entries held.
    pub max_entries: usize,
    /// The longest a verdict may be acted on without a current feed.
    pub max_staleness: Duration,
    /// The leeway of `exp`/`nbf` checks (`jwt.leeway_seconds`).
    pub leeway: i64,
}

/// What a cached verdict gives a protected request: who the caller is, ready to forward.
#[derive(Debug)]
pub struct Verdict {
    /// The token's store key.
    pub hash: TokenHash,
    /// The user claim.
    pub user: String,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `nbf`, when the token has one.
    pub not_before: Option<i64>,
    /// The identity headers to set on the forwarded request, computed once.
    pub identity: Vec<(HeaderName, HeaderValue)>,
    /// The allowlist session, when the strategy keeps one.
    pub session_id: Option<String>,
    /// Which `[[rules]]` the token satisfies (SPEC §13), under the policy it was made
    /// with (a verdict made under another policy is never inserted).
    pub grants: Grants,
}

impl Verdict {
    /// The verdict on a token just verified and found live.
    pub fn new(
        token: &VerifiedToken,
        session: Option<&Session>,
        identity: Vec<(HeaderName, HeaderValue)>,
        grants: Grants,
    ) -> Verdict {
        Verdict {
            hash: token.hash,
            user: token.user.clone(),
            expires_at: token.expires_at,
            not_before: token.not_before,
            identity,
            session_id: session.map(|s| s.session_id.clone()),
            grants,
        }
    }
}

/// Where a token is looked up: its store key and the digest of all of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    hash: TokenHash,
    digest: [u8; 32],
}

impl CacheKey {
    /// The key of a raw token, or `None` when it is too long to cache or not three
    /// dot-separated parts (the verifier will say what is wrong with it). The signing
    /// input is hashed once, and the hash state goes on over the signature.
    pub fn of(token: &str) -> Option<CacheKey> {
        if token.len() > MAX_CACHED_TOKEN {
            return None;
        }
        let dot = token.rfind('.')?;
        let mut hasher = Sha256::new();
        hasher.update(&token.as_bytes()[..dot]);
        let hash = TokenHash(hasher.clone().finalize().into());
        hasher.update(&token.as_bytes()[dot..]);
        Some(CacheKey {
            hash,
            digest: hasher.finalize().into(),
        })
    }

    /// The store key of the token.
    pub fn hash(&self) -> TokenHash {
        self.hash
    }
}

/// Taken before a store read; an insert with an older ticket is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Entry {
    digest: [u8; 32],
    verdict: Arc<Verdict>,
}

struct Shard {
    lru: LruCache<TokenHash, Entry>,
    by_user: HashMap<String, HashSet<TokenHash>>,
}

impl Shard {
    fn remove(&mut self, hash: &TokenHash) {
        if let Some(entry) = self.lru.pop(hash) {
            self.unindex(&entry.verdict.user, hash);
        }
    }

    fn unindex(&mut self, user: &str, hash: &TokenHash) {
        if let Some(set) = self.by_user.get_mut(user) {
            set.remove(hash);
            if set.is_empty() {
                self.by_user.remove(user);
            }
        }
    }
}

/// The verdict cache and its staleness clock; one per process, shared by every request.
pub struct VerdictCache {
    settings: CacheSettings,
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    epoch: AtomicU64,
    origin: Instant,
    /// Milliseconds since `origin` until which the feed counts as current; 0: never was.
    current_until: AtomicU64,
    /// `jwt.leeway_seconds`, which a config reload may change.
    leeway: AtomicI64,
    hits: Counter,
    misses: Counter,
}

impl VerdictCache {
    /// An empty cache; `hits` and `misses` are the metrics it counts into.
    pub fn new(settings: CacheSettings, hits: Counter, misses: Counter) -> VerdictCache {
        let shards = settings.max_entries.clamp(1, SHARDS);
        VerdictCache {
            settings,
            // Unbounded lists with our own bound: nothing is allocated up front, which
            // keeps the CLI (which never caches) and small caches cheap.
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::unbounded(),
                        by_user: HashMap::new(),
                    })
                })
                .collect(),
            shard_capacity: (settings.max_entries / shards).max(1),
            epoch: AtomicU64::new(0),
            origin: Instant::now(),
            current_until: AtomicU64::new(0),
            leeway: AtomicI64::new(settings.leeway),
            hits,
            misses,
        }
    }

    /// The leeway of the `exp`/`nbf` checks from now on (after a config reload).
    pub fn set_leeway(&self, leeway: i64) {
        self.leeway.store(leeway, Ordering::Relaxed);
    }

    /// Whether verdicts are cached at all.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The key of a request's token, when the cache could hold it.
    pub fn key(&self, token: &str) -> Option<CacheKey> {
        if self.settings.enabled {
            CacheKey::of(token)
        } else {
            None
        }
    }

    /// The cached verdict on a token, if there is one that may be acted on now (`now`
    /// in unix seconds): the feed is current, the whole token matches, and it is within
    /// its `exp` and `nbf`. Counts a hit or a miss.
    pub fn lookup(&self, key: &CacheKey, now: i64) -> Option<Arc<Verdict>> {
        if !self.settings.enabled {
            return None;
        }
        let found = if self.is_current() {
            self.find(key, now)
        } else {
            None
        };
        match &found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        };
        found
    }

    fn find(&self, key: &CacheKey, now: i64) -> Option<Arc<Verdict>> {
        let leeway = self.leeway.load(Ordering::Relaxed);
        let mut shard = self.shard(&key.hash);
        let entry = shard.lru.get(&key.hash)?;
        if entry.digest != key.digest {
            return None;
        }
        let verdict = &entry.verdict;
        if verdict.expires_at.saturating_add(leeway) < now {
            // Dead for good: the verifier will say "expired".
            shard.remove(&key.hash);
            return None;
        }
        if verdict
            .not_before
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return None;
        }
        Some(Arc::clone(verdict))
    }

    /// The ticket to hold across a store read whose verdict may be inserted.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::SeqCst))
    }

    /// Caches a positive verdict, unless an invalidation came after `ticket` was taken.
    pub fn insert(&self, ticket: Ticket, key: CacheKey, verdict: Arc<Verdict>) {
        if !self.settings.enabled {
            return;
        }
        let mut shard = self.shard(&key.hash);
        // Checked under the shard lock: an invalidation bumps the epoch before it takes
        // the lock, so either it sees this entry and removes it, or this sees its epoch.
        if self.epoch.load(Ordering::SeqCst) != ticket.0 {
            return;
        }
        let user = verdict.user.clone();
        if shard
            .lru
            .put(
                key.hash,
                Entry {
                    digest: key.digest,
                    verdict,
                },
            )
            .is_none()
        {
            shard.by_user.entry(user).or_default().insert(key.hash);
        }
        if shard.lru.len() > self.shard_capacity {
            if let Some((hash, entry)) = shard.lru.pop_lru() {
                shard.unindex(&entry.verdict.user, &hash);
            }
        }
    }

    /// Forgets one token (logout, a revoked session).
    pub fn forget_token(&self, hash: TokenHash) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.shard(&hash).remove(&hash);
    }

    /// Forgets every token of a user (logout-all, a cut-off).
    pub fn forget_user(&self, user: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            if let Some(hashes) = shard.by_user.remove(user) {
                for hash in hashes {
                    shard.lru.pop(&hash);
                }
            }
        }
    }

    /// Forgets everything (a feed gap, a reconnect, a row this build cannot read).
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.lru.clear();
            shard.by_user.clear();
        }
    }

    /// Records a read of the feed, started at `started`, that applied every row up to
    /// the head: the cache may be acted on until `started + max_staleness`.
    pub fn mark_current(&self, started: Instant) {
        let since = started.saturating_duration_since(self.origin) + self.settings.max_staleness;
        let until = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        self.current_until.fetch_max(until, Ordering::SeqCst);
    }

    /// Whether the feed was read up to date recently enough for cached verdicts to be
    /// acted on.
    pub fn is_current(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.current_until.load(Ordering::SeqCst)
    }

    /// How many verdicts are held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).lru.len()).sum()
    }

    /// Whether no verdict is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, hash: &TokenHash) -> MutexGuard<'_, Shard> {
        // The hash is uniform: its first byte spreads tokens over the shards.
        lock(&self.shards[usize::from(hash.0[0]) % self.shards.len()])
    }
}

/// A poisoned shard only means a panic elsewhere; its data is still a valid cache.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize) -> VerdictCache {
        let cache = VerdictCache::new(
            CacheSettings {
                enabled: true,
                max_entries,
                max_staleness: Duration::from_secs(60),
                leeway: 0,
            },
            Counter::default(),
            Counter::default(),
        );
        cache.mark_current(Instant::now());
        cache
    }

    fn verdict(key: &CacheKey, user: &str, expires_at: i64) -> Arc<Verdict> {
        Arc::new(Verdict {
            hash: key.hash,
            user: user.into(),
            expires_at,
            not_before: None,
            identity: Vec::new(),
            session_id: None,
            grants: Default::default(),
        })
    }

    fn token(n: u32) -> String {
        format!("eyJhbGciOiJIUzI1NiJ9.eyJuIjo{n}fQ.c2lnbmF0dXJl{n}")
    }

    #[test]
    fn a_hit_needs_the_whole_token() {
        let c = cache(10);
        let key = CacheKey::of(&token(1)).unwrap();
        c.insert(c.ticket(), key, verdict(&key, "alice", i64::MAX));
        assert!(c.lookup(&key, 0).is_some());
        // Same signing input, another signature: same store key, different digest.
        let forged = token(1).replace("c2lnbmF0dXJl", "Zm9yZ2Vk");
        let forged = CacheKey::of(&forged).unwrap();
        assert_eq!(forged.hash(), key.hash());
        assert!(c.lookup(&forged, 0).is_none());
    }

    #[test]
    fn long_tokens_are_never_cached() {
        let long = format!("a.{}.b", "x".repeat(MAX_CACHED_TOKEN));
        assert!(CacheKey::of(&long).is_none());
        assert!(CacheKey::of("no-dots").is_none());
    }

    #[test]
    fn entries_die_at_exp_and_wait_for_nbf() {
        let c = cache(10);
        let key = CacheKey::of(&token(1)).unwrap();
        c.insert(c.ticket(), key, verdict(&key, "alice", 100));
        assert!(c.lookup(&key, 100).is_some());
        assert!(c.lookup(&key, 101).is_none());
        assert_eq!(c.len(), 0, "an expired entry is dropped");
        let key = CacheKey::of(&token(2)).unwrap();
        let mut v = verdict(&key, "alice", i64::MAX);
        Arc::get_mut(&mut v).unwrap().not_before = Some(50);
        c.insert(c.ticket(), key, v);
        assert!(c.lookup(&key, 49).is_none());
        assert!(c.lookup(&key, 50).is_some());
    }

    #[test]
    fn an_insert_after_an_invalidation_is_dropped() {
        let c = cache(10);
        let key = CacheKey::of(&token(1)).unwrap();
        let ticket = c.ticket();
        c.forget_user("bob");
        c.insert(ticket, key, verdict(&key, "alice", i64::MAX));
        assert!(c.lookup(&key, 0).is_none());
    }

    #[test]
    fn forgetting_by_token_by_user_and_all() {
        let c = cache(100);
        let keys: Vec<CacheKey> = (0..6).map(|n| CacheKey::of(&token(n)).unwrap()).collect();
        for (n, key) in keys.iter().enumerate() {
            let user = if n < 3 { "alice" } else { "bob" };
            c.insert(c.ticket(), *key, verdict(key, user, i64::MAX));
        }
        c.forget_token(keys[0].hash());
        assert!(c.lookup(&keys[0], 0).is_none());
        assert!(c.lookup(&keys[1], 0).is_some());
        c.forget_user("alice");
        assert!(keys[..3].iter().all(|k| c.lookup(k, 0).is_none()));
        assert!(keys[3..].iter().all(|k| c.lookup(k, 0).is_some()));
        c.flush();
        assert!(c.is_empty());
    }

    #[test]
    fn it_is_bounded_and_keeps_the_index_in_step() {
        let c = cache(32);
        for n in 0..1000 {
            let key = CacheKey::of(&token(n)).unwrap();
            c.insert(
                c.ticket(),
                key,
                verdict(&key, &format!("u{}", n % 7), i64::MAX),
            );
        }
        assert!(c.len() <= 32, "{}", c.len());
        let indexed: usize = c
            .shards
            .iter()
            .map(|s| lock(s).by_user.values().map(HashSet::len).sum::<usize>())
            .sum();
        assert_eq!(indexed, c.len());
    }

    #[test]
    fn nothing_is_served_without_a_current_feed() {
        let c = VerdictCache::new(
            CacheSettings {
                enabled: true,
                max_entries: 10,
                max_staleness: Duration::from_millis(20),
                leeway: 0,
            },
            Counter::default(),
            Counter::default(),
        );
        let key = CacheKey::of(&token(1)).unwrap();
        c.insert(c.ticket(), key, verdict(&key, "alice", i64::MAX));
        assert!(
            c.lookup(&key, 0).is_none(),
            "never read the feed: not current"
        );
        c.mark_current(Instant::now());
        assert!(c.lookup(&key, 0).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.lookup(&key, 0).is_none(), "the clock ran out");
    }
}
