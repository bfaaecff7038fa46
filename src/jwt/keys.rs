//! Where verification keys come from, and the current set of them.
//!
//! The config names a [`KeySource`] (a secret, a PEM file, a JWK set file; later a JWKS
//! URL); [`Keys::load`] reads it into a [`KeySet`] prepared for the
//! [`VerifierSettings`], and [`Keys`] hands out the current set behind a cheap swappable
//! handle (one atomic load per verification), so that a set can be replaced while
//! requests are verified against the old one.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use super::{algorithm_name, VerifierSettings};

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
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(<redacted>)"),
            KeySource::SecretFile(p) => f.debug_tuple("SecretFile").field(p).finish(),
            KeySource::SecretEnv(v) => f.debug_tuple("SecretEnv").field(v).finish(),
            KeySource::PublicKeyFile(p) => f.debug_tuple("PublicKeyFile").field(p).finish(),
            KeySource::JwksFile(p) => f.debug_tuple("JwksFile").field(p).finish(),
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

/// The current key set, swappable while tokens are verified.
pub struct Keys {
    current: ArcSwap<KeySet>,
    settings: Arc<VerifierSettings>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("current", &*self.current.load())
            .finish()
    }
}

impl Keys {
    /// Reads `source` and prepares its keys for `settings`.
    pub fn load(source: &KeySource, settings: Arc<VerifierSettings>) -> Result<Keys, KeyError> {
        let set = read(source, &settings.algorithms)?;
        Ok(Keys::with(set, settings))
    }

    /// No keys: every token is refused as signed by an unknown key (for the commands
    /// that only touch the store).
    pub fn unloaded(settings: Arc<VerifierSettings>) -> Keys {
        Keys::with(KeySet::unloaded(), settings)
    }

    fn with(set: KeySet, settings: Arc<VerifierSettings>) -> Keys {
        Keys {
            current: ArcSwap::from_pointee(set.prepared(&settings)),
            settings,
        }
    }

    /// The current set, for one verification (do not hold it across an await).
    pub fn current(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// The settings the keys are prepared for.
    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }
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
