//! Where verification keys come from, and the current set of them.
//!
//! The config names a [`KeySource`]: a secret, a PEM file, a JWK set file, or an
//! identity provider's JWK set by URL ([`Remote`]: `jwt.jwks_url`, or the `jwks_uri` of
//! `jwt.oidc_discovery_url`). [`Keys::start`] reads it into a [`KeySet`] prepared for
//! the [`VerifierSettings`], and [`Keys`] hands out the current set behind a cheap
//! swappable handle (one atomic load per verification), so that a set can be replaced
//! while requests are verified against the old one.
//!
//! A remote set (SPEC §11) is refreshed in the background ([`Keys::spawn_refresh`]:
//! every `jwt.jwks_refresh_seconds`, sooner when the provider's `Cache-Control:
//! max-age` says so, never more often than every 30 s), and refetched at once when a
//! token names a `kid` the set does not hold, or fails its signature under a `kid` it
//! does (a key rotated under the same name): [`Keys::refetch_after`]. One fetch is in
//! flight at a time, the others wait for it; past it, at most one per
//! `jwt.jwks_min_refetch_seconds`, so random kids cannot make tokengate hammer the
//! provider. A failed fetch keeps the last good set, is logged and counted.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use http::Uri;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::fetch::Fetcher;
use super::{algorithm_name, VerifierSettings};

/// A remote set is never refreshed more often than this, whatever its `max-age`.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size of HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Where the keys come from (`[jwt]`, one of its key settings).
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `jwt.secret`: the bytes as written.
    Secret(Vec<u8>),
    /// `jwt.secret_file`, its trailing newline dropped.
    SecretFile(PathBuf),
    /// `jwt.secret_env`: the variable's name.
    SecretEnv(String),
    /// `jwt.public_key_file`: a PEM public key.
    PublicKeyFile(PathBuf),
    /// `jwt.jwks_file`: a JWK set.
    JwksFile(PathBuf),
    /// `jwt.jwks_url` or `jwt.oidc_discovery_url`.
    Remote(Remote),
}

/// An identity provider's key set, by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Where the set is found.
    pub provider: Provider,
    /// `jwt.jwks_file` beside `jwt.jwks_url`: the set used when the first fetch fails.
    pub fallback: Option<PathBuf>,
    /// `jwt.jwks_refresh_seconds`.
    pub refresh: Duration,
    /// `jwt.jwks_min_refetch_seconds`: the least time between two fetches a token asked
    /// for.
    pub min_refetch: Duration,
    /// `jwt.jwks_fetch_timeout_seconds`: one fetch, connect to last byte.
    pub fetch_timeout: Duration,
    /// `jwt.jwks_ca_file`: the CA certificates trusted instead of the webpki roots.
    pub ca_file: Option<PathBuf>,
}

/// Where a remote key set is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// `jwt.jwks_url`: the set itself.
    Jwks(Uri),
    /// `jwt.oidc_discovery_url`: a document whose `jwks_uri` is the set and whose
    /// `issuer` the tokens must carry.
    Discovery(Uri),
}

impl Provider {
    /// The config key that names it.
    pub fn key(&self) -> &'static str {
        match self {
            Provider::Jwks(_) => "jwt.jwks_url",
            Provider::Discovery(_) => "jwt.oidc_discovery_url",
        }
    }

    /// The configured URL.
    pub fn url(&self) -> &Uri {
        match self {
            Provider::Jwks(url) | Provider::Discovery(url) => url,
        }
    }
}

/// Whether a key URL may be used: https, or http to a loopback address (SPEC §11).
pub fn check_key_url(text: &str) -> Result<Uri, String> {
    let url: Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    let host = url.host().ok_or_else(|| format!("{text:?} has no host"))?;
    match url.scheme_str() {
        Some("https") => Ok(url),
        Some("http") if is_loopback(host) => Ok(url),
        Some("http") => Err(format!(
            "{text:?}: plain http is accepted for a loopback address only; use https"
        )),
        _ => Err(format!("{text:?} must be an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::SecretFile(p) => f.debug_tuple("SecretFile").field(p).finish(),
            KeySource::SecretEnv(v) => f.debug_tuple("SecretEnv").field(v).finish(),
            KeySource::PublicKeyFile(p) => f.debug_tuple("PublicKeyFile").field(p).finish(),
            KeySource::JwksFile(p) => f.debug_tuple("JwksFile").field(p).finish(),
            KeySource::Remote(r) => f.debug_tuple("Remote").field(r).finish(),
        }
    }
}

impl KeySource {
    /// The config key that names this source, for errors.
    pub fn key(&self) -> &'static str {
        match self {
            KeySource::Secret(_) => "jwt.secret",
            KeySource::SecretFile(_) => "jwt.secret_file",
            KeySource::SecretEnv(_) => "jwt.secret_env",
            KeySource::PublicKeyFile(_) => "jwt.public_key_file",
            KeySource::JwksFile(_) => "jwt.jwks_file",
            KeySource::Remote(r) => r.provider.key(),
        }
    }
}

/// Keys that could not be loaded: the config key at fault and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct KeyError {
    /// Dotted config key, e.g. `jwt.public_key_file`.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl KeyError {
    fn new(key: &'static str, problem: impl Into<String>) -> KeyError {
        KeyError {
            key,
            problem: problem.into(),
        }
    }
}

/// What a remote key set counts (`tokengate_jwks_refresh_total{result}`,
/// `tokengate_jwks_keys`).
#[derive(Debug, Clone, Default)]
pub struct KeyMetrics {
    /// Fetches that gave a usable set.
    pub refresh_ok: Counter,
    /// Fetches that failed (the last good set stayed).
    pub refresh_error: Counter,
    /// Keys in the current JWK set.
    pub keys: Gauge,
}

/// The current key set, swappable while tokens are verified.
pub struct Keys {
    current: ArcSwap<KeySet>,
    settings: Arc<VerifierSettings>,
    remote: Option<RemoteKeys>,
}

/// A remote set's fetching state.
struct RemoteKeys {
    source: Remote,
    fetcher: Fetcher,
    /// Held by the one fetch in flight.
    fetch: Mutex<FetchState>,
    /// Bumped at every change of the set.
    generation: AtomicU64,
    metrics: KeyMetrics,
    /// Called after the set changed (the verdict cache forgets what older keys passed).
    on_change: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

struct FetchState {
    /// When the latest fetch started.
    last: Option<Instant>,
    /// The key set's URL (from discovery, it may move).
    jwks_uri: Uri,
    /// SHA-256 of the current set's document: an unchanged document is not swapped.
    digest: [u8; 32],
    /// When the background refresh fetches next, from the latest fetch.
    next: Duration,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("current", &*self.current.load())
            .field("remote", &self.remote.as_ref().map(|r| &r.source))
            .finish()
    }
}

impl Keys {
    /// Reads a static `source` (a secret or a key file) and prepares its keys for
    /// `settings`; a remote source is an error here (see [`Keys::start`]).
    pub fn load(source: &KeySource, settings: Arc<VerifierSettings>) -> Result<Keys, KeyError> {
        let set = read(source, &settings.algorithms)?;
        Ok(Keys::with(set, settings, None))
    }

    /// Reads `source`, fetching a remote one: the first fetch must succeed, unless a
    /// fallback `jwt.jwks_file` is given (then the file's set is used until a fetch
    /// succeeds). Discovery fills in `settings.issuer` when it is not configured.
    pub async fn start(
        source: &KeySource,
        mut settings: VerifierSettings,
        metrics: KeyMetrics,
    ) -> Result<Arc<Keys>, KeyError> {
        let KeySource::Remote(remote) = source else {
            return Ok(Arc::new(Keys::load(source, Arc::new(settings))?));
        };
        let key = remote.provider.key();
        let fetcher = Fetcher::new(remote.ca_file.as_deref(), remote.fetch_timeout)
            .map_err(|e| KeyError::new("jwt.jwks_ca_file", e))?;
        let first = async {
            let jwks_uri = match &remote.provider {
                Provider::Jwks(url) => url.clone(),
                Provider::Discovery(url) => {
                    let (issuer, jwks_uri) =
                        discover(&fetcher, url, settings.issuer.as_deref()).await?;
                    settings.issuer.get_or_insert(issuer);
                    jwks_uri
                }
            };
            let fetched = fetch_set(&fetcher, &jwks_uri, &settings.algorithms).await?;
            Ok::<_, String>((jwks_uri, fetched))
        }
        .await;
        let (set, state) = match (first, &remote.fallback) {
            (Ok((jwks_uri, (set, digest, max_age))), _) => {
                metrics.refresh_ok.inc();
                tracing::info!(url = %jwks_uri, keys = set.entries.len(), "key set fetched");
                let next = next_refresh(remote.refresh, max_age);
                (
                    set,
                    FetchState {
                        last: Some(Instant::now()),
                        jwks_uri,
                        digest,
                        next,
                    },
                )
            }
            (Err(e), Some(file)) => {
                metrics.refresh_error.inc();
                let set = read(&KeySource::JwksFile(file.clone()), &settings.algorithms)?;
                tracing::warn!(url = %remote.provider.url(), error = %e, file = %file.display(), "first key set fetch failed; using jwt.jwks_file until a fetch succeeds");
                let jwks_uri = match &remote.provider {
                    Provider::Jwks(url) => url.clone(),
                    // Not reachable: discovery excludes a fallback file (config).
                    Provider::Discovery(url) => url.clone(),
                };
                let state = FetchState {
                    last: Some(Instant::now()),
                    jwks_uri,
                    digest: [0; 32],
                    next: MIN_REFRESH,
                };
                (set, state)
            }
            (Err(e), None) => {
                return Err(KeyError::new(
                    key,
                    format!("{}: {e}", remote.provider.url()),
                ))
            }
        };
        metrics.keys.set(set.entries.len() as i64);
        let remote = RemoteKeys {
            source: remote.clone(),
            fetcher,
            fetch: Mutex::new(state),
            generation: AtomicU64::new(0),
            metrics,
            on_change: OnceLock::new(),
        };
        Ok(Arc::new(Keys::with(set, Arc::new(settings), Some(remote))))
    }

    /// No keys: every token is refused as signed by an unknown key (for the commands
    /// that only touch the store).
    pub fn unloaded(settings: Arc<VerifierSettings>) -> Keys {
        Keys::with(KeySet::unloaded(), settings, None)
    }

    fn with(set: KeySet, settings: Arc<VerifierSettings>, remote: Option<RemoteKeys>) -> Keys {
        Keys {
            current: ArcSwap::from_pointee(set.prepared(&settings)),
            settings,
            remote,
        }
    }

    /// The current set, for one verification (do not hold it across an await).
    pub fn current(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// The settings the keys are prepared for (with a discovered issuer).
    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    /// Whether the set comes from a URL and can change.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Counts the set's changes; compare before and after [`Keys::refetch_after`].
    pub fn generation(&self) -> u64 {
        self.remote
            .as_ref()
            .map_or(0, |r| r.generation.load(Ordering::Acquire))
    }

    /// Calls `hook` after every change of a remote set (set once).
    pub fn on_change(&self, hook: impl Fn() + Send + Sync + 'static) {
        if let Some(remote) = &self.remote {
            let _ = remote.on_change.set(Box::new(hook));
        }
    }

    /// For a token the set of generation `seen` could not verify (unknown `kid`, or a
    /// failed signature): waits for the fetch in flight, or fetches unless one started
    /// within `jwt.jwks_min_refetch_seconds`. True when the set changed since `seen`,
    /// so that the token is worth verifying again.
    pub async fn refetch_after(&self, seen: u64) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        let mut state = remote.fetch.lock().await;
        if self.generation() != seen {
            return true;
        }
        if state
            .last
            .is_some_and(|at| at.elapsed() < remote.source.min_refetch)
        {
            return false;
        }
        self.fetch_locked(remote, &mut state, "unknown kid").await;
        self.generation() != seen
    }

    /// Refreshes a remote set on its schedule, in a task that ends when the last
    /// handle to `keys` is dropped (a reload replaced them); nothing for a static set.
    pub fn spawn_refresh(keys: &Arc<Keys>) {
        if keys.remote.is_none() {
            return;
        }
        let weak = Arc::downgrade(keys);
        tokio::spawn(async move {
            loop {
                let Some(wait) = Keys::next_refresh(&weak).await else {
                    return;
                };
                tokio::time::sleep(wait).await;
                let Some(keys) = weak.upgrade() else {
                    return;
                };
                if let Some(remote) = &keys.remote {
                    let mut state = remote.fetch.lock().await;
                    keys.fetch_locked(remote, &mut state, "schedule").await;
                }
            }
        });
    }

    async fn next_refresh(weak: &std::sync::Weak<Keys>) -> Option<Duration> {
        let keys = weak.upgrade()?;
        let remote = keys.remote.as_ref()?;
        let next = remote.fetch.lock().await.next;
        Some(next)
    }

    /// One fetch, with the fetch lock held: swaps in a changed set, keeps the old one
    /// on failure.
    async fn fetch_locked(&self, remote: &RemoteKeys, state: &mut FetchState, why: &str) {
        state.last = Some(Instant::now());
        let result = async {
            if let Provider::Discovery(url) = &remote.source.provider {
                let (_, jwks_uri) =
                    discover(&remote.fetcher, url, self.settings.issuer.as_deref()).await?;
                state.jwks_uri = jwks_uri;
            }
            fetch_set(&remote.fetcher, &state.jwks_uri, &self.settings.algorithms).await
        }
        .await;
        match result {
            Ok((set, digest, max_age)) => {
                remote.metrics.refresh_ok.inc();
                state.next = next_refresh(remote.source.refresh, max_age);
                if digest == state.digest {
                    tracing::debug!(url = %state.jwks_uri, reason = why, "key set unchanged");
                    return;
                }
                state.digest = digest;
                tracing::info!(url = %state.jwks_uri, reason = why, keys = set.entries.len(), "key set changed");
                remote.metrics.keys.set(set.entries.len() as i64);
                self.current.store(Arc::new(set.prepared(&self.settings)));
                remote.generation.fetch_add(1, Ordering::AcqRel);
                if let Some(hook) = remote.on_change.get() {
                    hook();
                }
            }
            Err(e) => {
                remote.metrics.refresh_error.inc();
                state.next = MIN_REFRESH.min(remote.source.refresh);
                tracing::warn!(url = %state.jwks_uri, reason = why, error = %e, "key set fetch failed; keeping the last good set");
            }
        }
    }
}

/// When to refresh after a good fetch: `jwt.jwks_refresh_seconds`, or the provider's
/// shorter `max-age`, never below [`MIN_REFRESH`].
fn next_refresh(refresh: Duration, max_age: Option<Duration>) -> Duration {
    max_age.map_or(refresh, |age| {
        age.clamp(MIN_REFRESH, refresh.max(MIN_REFRESH))
    })
}

/// Fetches and parses a JWK set: the set, its document's digest and its `max-age`.
async fn fetch_set(
    fetcher: &Fetcher,
    url: &Uri,
    algorithms: &[Algorithm],
) -> Result<(KeySet, [u8; 32], Option<Duration>), String> {
    let fetched = fetcher.get(url).await?;
    let set = KeySet::from_jwks(&fetched.body, algorithms)?;
    let digest: [u8; 32] = Sha256::digest(&fetched.body).into();
    Ok((set, digest, fetched.max_age))
}

/// Reads an OpenID discovery document: its `issuer` (which must be `configured` when
/// that is set) and its `jwks_uri`.
async fn discover(
    fetcher: &Fetcher,
    url: &Uri,
    configured: Option<&str>,
) -> Result<(String, Uri), String> {
    let fetched = fetcher.get(url).await?;
    let doc: serde_json::Value = serde_json::from_slice(&fetched.body)
        .map_err(|e| format!("the discovery document is not JSON ({e})"))?;
    let issuer = doc["issuer"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("the discovery document has no issuer")?;
    if let Some(configured) = configured {
        if issuer != configured {
            return Err(format!(
                "the discovery document's issuer {issuer:?} is not jwt.issuer {configured:?}"
            ));
        }
    }
    let jwks_uri = doc["jwks_uri"]
        .as_str()
        .ok_or("the discovery document has no jwks_uri")?;
    let jwks_uri = check_key_url(jwks_uri).map_err(|e| format!("jwks_uri {e}"))?;
    Ok((issuer.to_string(), jwks_uri))
}

/// Reads a static source into a key set for `algorithms`.
fn read(source: &KeySource, algorithms: &[Algorithm]) -> Result<KeySet, KeyError> {
    let key = source.key();
    let file = |path: &Path| {
        std::fs::read(path).map_err(|e| {
            KeyError::new(
                key,
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
            )
        })
    };
    match source {
        KeySource::Secret(bytes) => secret(key, bytes.clone(), algorithms),
        KeySource::SecretFile(path) => secret(key, trim_trailing_newline(file(path)?), algorithms),
        KeySource::SecretEnv(var) => {
            let value = std::env::var(var).map_err(|_| {
                KeyError::new(key, format!("environment variable {var} is not set"))
            })?;
            secret(key, value.into_bytes(), algorithms)
        }
        KeySource::PublicKeyFile(path) => KeySet::from_pem(&file(path)?, algorithms)
            .map_err(|e| KeyError::new(key, format!("{}: {e}", path.display()))),
        KeySource::JwksFile(path) => KeySet::from_jwks(&file(path)?, algorithms)
            .map_err(|e| KeyError::new(key, format!("{}: {e}", path.display()))),
        KeySource::Remote(_) => Err(KeyError::new(
            key,
            "is fetched when tokengate starts, not read as a file",
        )),
    }
}

fn secret(key: &'static str, bytes: Vec<u8>, algorithms: &[Algorithm]) -> Result<KeySet, KeyError> {
    if bytes.len() < MIN_HMAC_SECRET_BYTES {
        return Err(KeyError::new(
            key,
            format!(
                "the HMAC secret is {} bytes; at least {MIN_HMAC_SECRET_BYTES} are required (RFC 7518 §3.2)",
                bytes.len()
            ),
        ));
    }
    KeySet::from_secret(&bytes, algorithms).map_err(|e| KeyError::new(key, e))
}

pub(crate) fn trim_trailing_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    // Files written by editors and `echo` end in a newline that is not part of the secret.
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    bytes
}

/// An I/O error's reason, in the words of the config errors.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// One verification key with the validation rules that go with it.
#[derive(Clone)]
pub(super) struct KeyEntry {
    kid: Option<String>,
    pub(super) key: DecodingKey,
    /// The configured algorithms this key may verify (all of its family), and the rules
    /// of [`VerifierSettings`] ([`KeySet::prepared`]).
    pub(super) validation: Validation,
}

/// One loaded set of verification keys.
#[derive(Clone)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
    description: String,
    /// Whether `kid` selects among the keys (a JWK set) or is ignored (a single key).
    by_kid: bool,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.entries.len())
            .field("description", &self.description)
            .finish()
    }
}

impl KeySet {
    /// An HMAC secret for the HS* algorithms.
    pub fn from_secret(secret: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        let key = DecodingKey::from_secret(secret).map_err(|e| format!("unusable secret: {e}"))?;
        KeySet::single(key, algorithms, "an HMAC secret".into())
    }

    /// No keys, for a config loaded without them ([`crate::config::KeyLoading::Skip`]):
    /// every token is refused as signed by an unknown key.
    pub fn unloaded() -> KeySet {
        KeySet {
            entries: Vec::new(),
            description: "no keys (not loaded by this command)".into(),
            by_kid: false,
        }
    }

    /// A PEM public key (RSA, EC or Ed25519).
    pub fn from_pem(pem: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "is not a PEM file".to_string())?;
        if text.contains("PRIVATE KEY") {
            return Err("holds a private key; give tokengate the public key only".into());
        }
        let family = algorithms
            .first()
            .ok_or("no algorithms are configured")?
            .family();
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => return Err("a PEM key cannot verify HMAC algorithms".into()),
        }
        .map_err(|e| format!("is not a usable {family:?} public key ({e})"))?;
        KeySet::single(key, algorithms, format!("a {family:?} public key"))
    }

    fn single(
        key: DecodingKey,
        algorithms: &[Algorithm],
        description: String,
    ) -> Result<KeySet, String> {
        let family = key.family();
        let usable: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == family)
            .collect();
        if usable.is_empty() || usable.len() != algorithms.len() {
            return Err(format!(
                "a {family:?} key cannot verify {}",
                algorithms
                    .iter()
                    .filter(|a| a.family() != family)
                    .map(|a| algorithm_name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(KeySet {
            entries: vec![KeyEntry {
                kid: None,
                key,
                validation: base_validation(&usable),
            }],
            description,
            by_kid: false,
        })
    }

    /// A JWK set (RFC 7517): tokens pick a key by `kid`.
    pub fn from_jwks(json: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("is not a JWK set ({e})"))?;
        let mut entries = Vec::new();
        let mut kids = HashSet::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue; // an encryption key never verifies a signature
            }
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i} is not usable ({e})"))?;
            if key.family() == AlgorithmFamily::Hmac {
                return Err(format!(
                    "key {i} is a symmetric key; a JWK set holds public keys only"
                ));
            }
            let mut usable: Vec<Algorithm> = algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == key.family())
                .collect();
            if let Some(alg) = jwk.common.key_algorithm {
                // A key that names its algorithm verifies that algorithm only.
                usable.retain(|a| key_algorithm_matches(alg, *a));
            }
            if usable.is_empty() {
                continue; // a key for algorithms we do not accept
            }
            if let Some(kid) = &jwk.common.key_id {
                if !kids.insert(kid.clone()) {
                    return Err(format!("kid {kid:?} appears twice"));
                }
            }
            entries.push(KeyEntry {
                kid: jwk.common.key_id.clone(),
                key,
                validation: base_validation(&usable),
            });
        }
        if entries.is_empty() {
            return Err("holds no key for the configured algorithms".into());
        }
        let description = format!("a JWK set of {} key(s)", entries.len());
        Ok(KeySet {
            entries,
            description,
            by_kid: true,
        })
    }

    /// The set with every key's `Validation` configured for `settings`, once.
    fn prepared(mut self, settings: &VerifierSettings) -> KeySet {
        for entry in &mut self.entries {
            let v = &mut entry.validation;
            v.leeway = settings.leeway;
            v.validate_exp = true;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            if let Some(iss) = &settings.issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            if settings.audience.is_empty() {
                // jsonwebtoken refuses any token carrying `aud` when none is configured;
                // SPEC §5 checks `aud` only when configured.
                v.validate_aud = false;
            } else {
                v.set_audience(&settings.audience);
                v.validate_aud = true;
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
        }
        self
    }

    /// What the keys are, for summaries (never the key material).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no key (nothing verifies).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys that may verify a token with this header; empty when none.
    pub(super) fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        self.entries.iter().filter(move |e| {
            // In a JWK set a `kid` must name the key; without one, every key of the
            // algorithm is tried (all of them are trusted). A single key ignores `kid`.
            e.validation.algorithms.contains(&alg)
                && (!self.by_kid || kid.is_none() || e.kid.as_deref() == kid)
        })
    }
}

fn key_algorithm_matches(key_alg: KeyAlgorithm, alg: Algorithm) -> bool {
    format!("{key_alg:?}") == algorithm_name(alg)
}

/// The jsonwebtoken rules shared by every key. Time and claim rules that depend on the
/// settings are filled in by [`KeySet::prepared`].
fn base_validation(algorithms: &[Algorithm]) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms.to_vec();
    v
}
