//! Token verification: keys, algorithms and claims → a [`VerifiedToken`].
//!
//! This module owns what "cryptographically valid" means (SPEC §5 step 6). It does not
//! know about liveness: that is [`crate::strategy`]'s job. Verification is strict by
//! design, because jsonwebtoken's defaults are loose (leeway 60, no `nbf` check, `iss`
//! and `aud` optional even when set, an `iss` array accepted):
//!
//! 1. a token over [`MAX_TOKEN_BYTES`] is refused before any work;
//! 2. the compact form is checked by hand: three non-empty base64url segments, no
//!    padding, nothing else;
//! 3. the header is parsed strictly: an object without duplicate keys, `alg` among the
//!    configured algorithms (never `none`), no header-borne keys (`jwk`, `jku`, `x5u`,
//!    `x5c`), no `crit`/`b64` extensions, no nested (`cty: JWT`) or encrypted tokens;
//! 4. the key is chosen by `kid` from the current [`keys::KeySet`], and only keys of the
//!    algorithm's family are ever tried (no HMAC-keyed-with-a-public-key confusion);
//! 5. signature and the registered claims are checked by jsonwebtoken with a
//!    deliberately configured [`Validation`], then our own rules on top: `iat` not in the
//!    future, `iss` a single string, a usable user claim, sane numeric dates.
//!
//! Steps 1 to 5 are shared with the logout tokens of OIDC Back-Channel Logout
//! ([`logout`]), which have claim rules of their own: an access token's
//! `jwt.user_claim`, `jwt.required_claims` and `jwt.required_typ` are not theirs, and a
//! logout token is never accepted as an access token.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::store::TokenHash;

pub mod fetch;
pub mod keys;
pub mod logout;

pub use keys::{KeyError, KeySet, KeySource, Keys};
pub use logout::{LogoutToken, LogoutTokenError};

/// Tokens longer than this are refused before any parsing (SPEC §5).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user claim accepted; it travels in a header.
pub const MAX_USER_BYTES: usize = 1024;
/// Latest numeric date accepted (9999-12-31T23:59:59Z); later is a malformed claim.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// Checks, once at start, that exactly one crypto backend is compiled in.
///
/// jsonwebtoken panics at the first decode when both or neither of its backends are
/// enabled; this turns that into a start-up error.
pub fn check_crypto_provider() -> Result<(), String> {
    match jsonwebtoken::crypto::CryptoProvider::try_get_default() {
        Some(_) => Ok(()),
        None => Err("jsonwebtoken has no usable crypto provider (exactly one backend feature must be enabled)".into()),
    }
}

/// Parses a JOSE algorithm name (RFC 7518 §3.1), case-sensitively.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    name.parse().ok()
}

/// Algorithms are named as in JOSE (RFC 7518 §3.1).
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

/// Whether the algorithm is keyed with a shared secret.
pub fn is_hmac(alg: Algorithm) -> bool {
    alg.family() == AlgorithmFamily::Hmac
}

/// Why a token was refused. The `Display` text is safe to send to the client: it is fixed,
/// or names only a configured claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("the token is too long")]
    TooLong,
    /// Not three base64url segments, or a segment that does not decode.
    #[error("the token is malformed")]
    Malformed,
    /// The header is not a JSON object we accept.
    #[error("the token header is malformed")]
    BadHeader,
    /// A header parameter we refuse (`jwk`, `jku`, `x5u`, `x5c`, `crit`, `b64`, nested).
    #[error("the token header carries a parameter that is not accepted")]
    ForbiddenHeader,
    /// `alg` is `none`, unknown, or not configured.
    #[error("the token algorithm is not accepted")]
    Algorithm,
    /// No configured key matches the token's `kid`.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    Signature,
    /// The claims are not a JSON object we accept.
    #[error("the token claims are malformed")]
    BadClaims,
    /// `exp` is missing.
    #[error("the token has no expiry")]
    MissingExp,
    /// `exp` is in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token is issued in the future")]
    IssuedInFuture,
    /// `iss` missing, not a single string, or not the configured issuer.
    #[error("the token issuer is not accepted")]
    Issuer,
    /// `aud` missing, malformed or not the configured audience.
    #[error("the token audience is not accepted")]
    Audience,
    /// The user claim (named here, from `jwt.user_claim`) is missing or not a string.
    #[error("the token has no string claim \"{0}\" (jwt.user_claim)")]
    NoUserClaim(String),
    /// The user claim is a string, but empty or not usable as a header value.
    #[error("the token does not name a valid user")]
    User,
    /// A claim of `jwt.required_claims` (named here) is missing or has another value.
    #[error("the token lacks the required claim \"{0}\" (jwt.required_claims)")]
    RequiredClaim(String),
    /// The `typ` header is missing or not `jwt.required_typ`.
    #[error("the token type (typ) is not accepted")]
    Type,
}

/// A token that passed verification. It no longer carries the raw token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// SHA-256 of the signing input: the store key.
    pub hash: TokenHash,
    /// The user claim.
    pub user: String,
    /// `iat`, if the token has one.
    pub issued_at: Option<i64>,
    /// `exp`.
    pub expires_at: i64,
    /// `nbf`, if the token has one (re-checked on every verdict-cache hit).
    pub not_before: Option<i64>,
    /// Every claim, for `forward.claim_headers`.
    pub claims: Map<String, Value>,
}

/// What the verifier checks, besides keys.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Accepted algorithms (one key family).
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Accepted audiences; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed for `exp`, `nbf`, `iat`.
    pub leeway: u64,
    /// The claim naming the user.
    pub user_claim: String,
    /// Claims every token must carry with these values (`jwt.required_claims`, SPEC §14):
    /// a string equal to the value, or an array holding it.
    pub required_claims: Vec<(String, String)>,
    /// The `typ` header every token must carry (`jwt.required_typ`, e.g. RFC 9068's
    /// `at+jwt`), compared as a media type: case-insensitive, `application/` optional.
    pub required_typ: Option<String>,
}

/// Verifies tokens against the current keys and the configured rules. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Arc<Keys>,
}

impl Verifier {
    /// A verifier over `keys` and the settings they were prepared for.
    pub fn new(keys: Arc<Keys>) -> Verifier {
        Verifier { keys }
    }

    /// Reads a static key source (a secret or a key file) and builds the verifier.
    pub fn load(source: &KeySource, settings: VerifierSettings) -> Result<Verifier, KeyError> {
        Ok(Verifier::new(Arc::new(Keys::load(
            source,
            Arc::new(settings),
        )?)))
    }

    /// The keys, for refreshes and summaries.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// The accepted algorithm names, for summaries.
    pub fn algorithm_names(&self) -> Vec<&'static str> {
        self.settings()
            .algorithms
            .iter()
            .map(|a| algorithm_name(*a))
            .collect()
    }

    /// What the current keys are, for summaries (never the key material).
    pub fn key_description(&self) -> String {
        self.keys.current().description().to_string()
    }

    /// The clock skew allowed for `exp`, `nbf`, `iat`, in seconds.
    pub fn leeway(&self) -> i64 {
        i64::try_from(self.settings().leeway).unwrap_or(i64::MAX)
    }

    fn settings(&self) -> &VerifierSettings {
        self.keys.settings()
    }

    /// Verifies a compact JWS as of now, against the keys held now.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        self.verify_at(token, now())
    }

    /// [`Verifier::verify`], and when the keys come from a provider and none of them
    /// verified the token (an unknown `kid`, or a failed signature, as after a key
    /// rotated under the same `kid`): once more after the provider's set was fetched
    /// again, or after the fetch in flight ended (SPEC §11). The refetch is bounded by
    /// `jwt.jwks_min_refetch_seconds`, so a flood of made-up kids costs one fetch.
    pub async fn verify_fresh(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        self.with_fresh_keys(
            || self.verify(token),
            |e| matches!(e, VerifyError::UnknownKey | VerifyError::Signature),
        )
        .await
    }

    /// Runs `verify`, and once more after the provider's key set was fetched again when
    /// keys come from a provider and `key_miss` says no key verified the token
    /// ([`Verifier::verify_fresh`]).
    async fn with_fresh_keys<T, E>(
        &self,
        verify: impl Fn() -> Result<T, E>,
        key_miss: fn(&E) -> bool,
    ) -> Result<T, E> {
        let seen = self.keys.generation();
        match verify() {
            Err(e) if key_miss(&e) && self.keys.is_remote() => {
                if self.keys.refetch_after(seen).await {
                    verify()
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// Verifies a compact JWS as of `now` (unix seconds); used by tests for time rules.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<VerifiedToken, VerifyError> {
        let (signing_input, header) = self.parse(token)?;
        if let Some(required) = &self.settings().required_typ {
            if !header
                .typ
                .as_deref()
                .is_some_and(|t| same_media_type(t, required))
            {
                return Err(VerifyError::Type);
            }
        }
        // A logout token is signed by the same keys: never a bearer token (OIDC
        // Back-Channel Logout 1.0 §2.4, RFC 8725 §3.11).
        if header
            .typ
            .as_deref()
            .is_some_and(|t| same_media_type(t, logout::LOGOUT_TOKEN_TYPE))
        {
            return Err(VerifyError::Type);
        }
        let claims = self.signed_claims(token, &header)?;
        if logout::has_logout_event(&claims) {
            return Err(VerifyError::Type);
        }
        self.check_claims(claims, signing_input, now)
    }

    /// Steps 1 to 3: the length, the compact form and the header, its `alg` among the
    /// configured algorithms; returns the signing input and the header.
    fn parse<'t>(&self, token: &'t str) -> Result<(&'t str, ParsedHeader), VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::TooLong);
        }
        let (signing_input, header_b64) = split_compact(token)?;
        let header = parse_header(header_b64)?;
        if !self.settings().algorithms.contains(&header.alg) {
            return Err(VerifyError::Algorithm);
        }
        Ok((signing_input, header))
    }

    /// Steps 4 and 5: the signature by a key the header may pick, and jsonwebtoken's
    /// claim rules; returns the claims.
    fn signed_claims(
        &self,
        token: &str,
        header: &ParsedHeader,
    ) -> Result<Map<String, Value>, VerifyError> {
        let mut result = Err(VerifyError::UnknownKey);
        let keys = self.keys.current();
        for entry in keys.candidates(header.alg, header.kid.as_deref()) {
            result = jsonwebtoken::decode::<StrictObject>(token, &entry.key, &entry.validation)
                .map(|data| data.claims.0)
                .map_err(map_jwt_error);
            if !matches!(result, Err(VerifyError::Signature)) {
                break;
            }
        }
        result
    }

    /// The registered claims every token shares: `exp` required and not passed, `nbf`
    /// and `iat` not in the future, `iss` the configured issuer and `aud` one of the
    /// configured audiences when they are set (all with the leeway).
    fn check_registered(
        &self,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<Registered, VerifyError> {
        let leeway = self.leeway();
        let expires_at = numeric_date(claims.get("exp"))?.ok_or(VerifyError::MissingExp)?;
        if expires_at.saturating_add(leeway) < now {
            return Err(VerifyError::Expired);
        }
        let not_before = numeric_date(claims.get("nbf"))?;
        if not_before.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(VerifyError::NotYetValid);
        }
        let issued_at = numeric_date(claims.get("iat"))?;
        if issued_at.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(VerifyError::IssuedInFuture);
        }
        if let Some(iss) = &self.settings().issuer {
            // jsonwebtoken accepts an array with one matching element; RFC 7519 §4.1.1
            // makes `iss` a single StringOrURI.
            match claims.get("iss") {
                Some(Value::String(s)) if s == iss => {}
                _ => return Err(VerifyError::Issuer),
            }
        }
        if !self.settings().audience.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.settings().audience.contains(a),
                Some(Value::Array(items)) => {
                    items.iter().all(Value::is_string)
                        && items.iter().any(|i| {
                            i.as_str()
                                .is_some_and(|a| self.settings().audience.iter().any(|c| c == a))
                        })
                }
                _ => false,
            };
            if !ok {
                return Err(VerifyError::Audience);
            }
        }
        Ok(Registered {
            expires_at,
            not_before,
            issued_at,
        })
    }

    /// Our rules on top of jsonwebtoken's, for an access token.
    fn check_claims(
        &self,
        claims: Map<String, Value>,
        signing_input: &str,
        now: i64,
    ) -> Result<VerifiedToken, VerifyError> {
        let Registered {
            expires_at,
            not_before,
            issued_at,
        } = self.check_registered(&claims, now)?;
        let user = match claims.get(&self.settings().user_claim) {
            Some(Value::String(u)) if valid_user(u) => u.clone(),
            Some(Value::String(_)) => return Err(VerifyError::User),
            // Numeric ids (Django's primary keys, GitHub's): a non-negative integer,
            // forwarded as its decimal text (SPEC §14). Floats, negatives and numbers
            // beyond u64 are refused.
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                n.as_u64().map(|id| id.to_string()).unwrap_or_default()
            }
            _ => return Err(VerifyError::NoUserClaim(self.settings().user_claim.clone())),
        };
        for (claim, value) in &self.settings().required_claims {
            if !claim_holds(&claims, claim, value) {
                return Err(VerifyError::RequiredClaim(claim.clone()));
            }
        }
        Ok(VerifiedToken {
            hash: TokenHash::of_signing_input(signing_input.as_bytes()),
            user,
            issued_at,
            expires_at,
            not_before,
            claims,
        })
    }
}

/// Whether a token carries `claim` with `value`: a string equal to it, or an array
/// holding it (`jwt.required_claims`, SPEC §14, and `[[rules]]` claims, §13).
pub fn claim_holds(claims: &Map<String, Value>, claim: &str, value: &str) -> bool {
    match claims.get(claim) {
        Some(Value::String(s)) => s == value,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(value)),
        _ => false,
    }
}

/// The time claims of a token that passed [`Verifier::check_registered`].
struct Registered {
    expires_at: i64,
    not_before: Option<i64>,
    issued_at: Option<i64>,
}

/// The current time in unix milliseconds (the revocation feed's clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current time in unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A user id must be safe to put in a header as is: non-empty, bounded, no control
/// characters, and no surrounding whitespace that a backend might trim away.
fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= MAX_USER_BYTES
        && u.trim() == u
        && !u.chars().any(char::is_control)
        && HeaderValue::from_str(u).is_ok()
}

/// Checks the compact form; returns the signing input and the header segment.
fn split_compact(token: &str) -> Result<(&str, &str), VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    for part in [h, p, s] {
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(VerifyError::Malformed);
        }
    }
    // A base64url string of length 1 (mod 4) cannot be canonical.
    if s.len() % 4 == 1 {
        return Err(VerifyError::Malformed);
    }
    Ok((&token[..h.len() + 1 + p.len()], h))
}

/// The header fields we act on.
struct ParsedHeader {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
}

/// Header parameters that are refused outright: keys carried by the token itself
/// (RFC 8725 §3.10: never trust them), extensions we do not implement (RFC 7515
/// §4.1.11: a `crit` we do not understand must be refused), and JWE/nesting.
const FORBIDDEN_HEADER_PARAMS: &[&str] = &[
    "jwk", "jku", "x5u", "x5c", "crit", "b64", "enc", "zip", "epk",
];

fn parse_header(segment: &str) -> Result<ParsedHeader, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::Malformed)?;
    let StrictObject(header) =
        serde_json::from_slice(&bytes).map_err(|_| VerifyError::BadHeader)?;
    if FORBIDDEN_HEADER_PARAMS
        .iter()
        .any(|p| header.contains_key(*p))
    {
        return Err(VerifyError::ForbiddenHeader);
    }
    if let Some(cty) = header.get("cty") {
        // A nested JWT would have us verify a token inside a token.
        // RFC 7515 §4.1.10: `JWT` is short for `application/jwt`; media types ignore case.
        let nested = |c: &str| {
            let c = c.to_ascii_lowercase();
            c == "jwt" || c == "application/jwt"
        };
        if cty.as_str().is_none_or(nested) {
            return Err(VerifyError::ForbiddenHeader);
        }
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => parse_algorithm(name).ok_or(VerifyError::Algorithm)?,
        _ => return Err(VerifyError::Algorithm),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err(VerifyError::UnknownKey),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(VerifyError::BadHeader),
    };
    Ok(ParsedHeader { alg, kid, typ })
}

/// Whether two media types are the same (RFC 7515 §4.1.9: case-insensitive, and the
/// `application/` prefix may be left out).
fn same_media_type(a: &str, b: &str) -> bool {
    let bare = |t: &str| {
        let t = t.trim().to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    };
    bare(a) == bare(b)
}

/// A NumericDate (RFC 7519 §2): a non-negative number of seconds, up to year 9999.
fn numeric_date(value: Option<&Value>) -> Result<Option<i64>, VerifyError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&f) => {
                Ok(Some(f.floor() as i64))
            }
            _ => Err(VerifyError::BadClaims),
        },
        Some(_) => Err(VerifyError::BadClaims),
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> VerifyError {
    match e.kind() {
        ErrorKind::InvalidSignature => VerifyError::Signature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::Issuer,
        ErrorKind::InvalidAudience => VerifyError::Audience,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => VerifyError::MissingExp,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => VerifyError::Issuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => VerifyError::Audience,
        ErrorKind::InvalidClaimFormat(c) if c == "iss" => VerifyError::Issuer,
        ErrorKind::InvalidClaimFormat(c) if c == "aud" => VerifyError::Audience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => VerifyError::Algorithm,
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            VerifyError::BadClaims
        }
        ErrorKind::Base64(_) | ErrorKind::InvalidToken => VerifyError::Malformed,
        // Key errors at verify time mean the key cannot check this token at all.
        _ => VerifyError::Signature,
    }
}

/// A JSON object whose keys are all distinct.
///
/// serde_json keeps the last of duplicate keys; a token with two `sub` or two `alg`
/// could mean different things to different parsers, so it is refused.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(issuer: Option<&str>, audience: &[&str]) -> Verifier {
        let algs = vec![Algorithm::HS256];
        Verifier::load(
            &KeySource::Secret(SECRET.to_vec()),
            VerifierSettings {
                algorithms: algs,
                issuer: issuer.map(String::from),
                audience: audience.iter().map(|s| s.to_string()).collect(),
                leeway: 30,
                user_claim: "sub".into(),
                required_claims: Vec::new(),
                required_typ: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn media_types_compare_without_case_or_prefix() {
        assert!(same_media_type("at+jwt", "at+JWT"));
        assert!(same_media_type("application/at+jwt", "at+jwt"));
        assert!(!same_media_type("JWT", "at+jwt"));
    }

    fn mint(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    fn mint_raw(header: &str, payload: &str) -> String {
        use hmac_sign::sign;
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(payload);
        let input = format!("{h}.{p}");
        let sig = sign(&input);
        format!("{input}.{sig}")
    }

    mod hmac_sign {
        pub fn sign(input: &str) -> String {
            jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(super::SECRET).unwrap(),
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap()
        }
    }

    fn good() -> Value {
        let n = now();
        json!({"sub": "alice", "exp": n + 600, "iat": n})
    }

    fn at(v: &Verifier, token: &str) -> Result<VerifiedToken, VerifyError> {
        v.verify_at(token, now())
    }

    #[test]
    fn a_good_token_verifies_and_is_keyed_by_its_signing_input() {
        let n = now();
        let t = mint(good());
        let ok = at(&verifier(None, &[]), &t).unwrap();
        assert_eq!(ok.user, "alice");
        assert_eq!(ok.expires_at, n + 600);
        assert_eq!(ok.issued_at, Some(n));
        let input = &t[..t.rfind('.').unwrap()];
        assert_eq!(ok.hash, TokenHash::of_signing_input(input.as_bytes()));
    }

    #[test]
    fn exp_is_required_and_checked_with_the_configured_leeway() {
        let n = now();
        let v = verifier(None, &[]);
        assert_eq!(
            at(&v, &mint(json!({"sub": "a"}))).unwrap_err(),
            VerifyError::MissingExp
        );
        assert!(
            at(&v, &mint(json!({"sub": "a", "exp": n - 29}))).is_ok(),
            "within leeway"
        );
        assert_eq!(
            at(&v, &mint(json!({"sub": "a", "exp": n - 32}))).unwrap_err(),
            VerifyError::Expired
        );
        for bad in [json!("soon"), json!(null), json!(-5), json!(1e300)] {
            assert!(
                at(&v, &mint(json!({"sub": "a", "exp": bad}))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused_beyond_the_leeway() {
        let n = now();
        let v = verifier(None, &[]);
        let exp = n + 600;
        assert!(at(&v, &mint(json!({"sub": "a", "exp": exp, "nbf": n + 29}))).is_ok());
        assert_eq!(
            at(&v, &mint(json!({"sub": "a", "exp": exp, "nbf": n + 32}))).unwrap_err(),
            VerifyError::NotYetValid
        );
        assert!(at(&v, &mint(json!({"sub": "a", "exp": exp, "iat": n + 29}))).is_ok());
        assert_eq!(
            at(&v, &mint(json!({"sub": "a", "exp": exp, "iat": n + 32}))).unwrap_err(),
            VerifyError::IssuedInFuture
        );
    }

    #[test]
    fn issuer_must_be_the_single_configured_string() {
        let n = now();
        let v = verifier(Some("https://idp"), &[]);
        let exp = n + 600;
        assert!(at(
            &v,
            &mint(json!({"sub": "a", "exp": exp, "iss": "https://idp"}))
        )
        .is_ok());
        for bad in [
            json!(["https://idp"]),
            json!("https://IDP"),
            json!("other"),
            json!(5),
        ] {
            assert_eq!(
                at(&v, &mint(json!({"sub": "a", "exp": exp, "iss": bad}))).unwrap_err(),
                VerifyError::Issuer
            );
        }
        assert_eq!(
            at(&v, &mint(json!({"sub": "a", "exp": exp}))).unwrap_err(),
            VerifyError::Issuer
        );
    }

    #[test]
    fn audience_is_required_when_configured_and_ignored_otherwise() {
        let n = now();
        let v = verifier(None, &["api"]);
        let exp = n + 600;
        assert!(at(&v, &mint(json!({"sub": "a", "exp": exp, "aud": "api"}))).is_ok());
        assert!(at(
            &v,
            &mint(json!({"sub": "a", "exp": exp, "aud": ["x", "api"]}))
        )
        .is_ok());
        for bad in [json!("web"), json!(["web"]), json!(5), json!([5])] {
            assert_eq!(
                at(&v, &mint(json!({"sub": "a", "exp": exp, "aud": bad}))).unwrap_err(),
                VerifyError::Audience
            );
        }
        assert_eq!(
            at(&v, &mint(json!({"sub": "a", "exp": exp}))).unwrap_err(),
            VerifyError::Audience
        );
        let open = verifier(None, &[]);
        assert!(at(
            &open,
            &mint(json!({"sub": "a", "exp": exp, "aud": "anything"}))
        )
        .is_ok());
    }

    #[test]
    fn the_user_claim_must_be_a_clean_non_empty_string() {
        let n = now();
        let v = verifier(None, &[]);
        let exp = n + 600;
        for bad in [
            json!(""),
            json!("a\r\nX-Admin: 1"),
            json!("a\u{0}"),
            json!(" a"),
            json!("x".repeat(2000)),
        ] {
            assert_eq!(
                at(&v, &mint(json!({"sub": bad, "exp": exp}))).unwrap_err(),
                VerifyError::User,
                "{bad}"
            );
        }
        // A non-negative integer is an id, forwarded as decimal text (SPEC §14).
        for (id, text) in [
            (json!(5), "5"),
            (json!(0), "0"),
            (json!(u64::MAX), "18446744073709551615"),
        ] {
            let token = at(&v, &mint(json!({"sub": id, "exp": exp}))).unwrap();
            assert_eq!(token.user, text);
        }
        // Missing, or neither a string nor such a number: the error names the claim.
        let no_sub = VerifyError::NoUserClaim("sub".into());
        for bad in [json!(-5), json!(5.5), json!(null), json!(true)] {
            assert_eq!(
                at(&v, &mint(json!({"sub": bad, "exp": exp}))).unwrap_err(),
                no_sub,
                "{bad}"
            );
        }
        assert_eq!(at(&v, &mint(json!({"exp": exp}))).unwrap_err(), no_sub);
        assert_eq!(
            no_sub.to_string(),
            "the token has no string claim \"sub\" (jwt.user_claim)"
        );
    }

    #[test]
    fn duplicate_claims_and_duplicate_header_keys_are_refused() {
        let n = now();
        let v = verifier(None, &[]);
        let t = mint_raw(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(r#"{{"sub":"a","sub":"b","exp":{}}}"#, n + 60),
        );
        assert_eq!(at(&v, &t).unwrap_err(), VerifyError::BadClaims);
        let t = mint_raw(
            r#"{"alg":"HS256","alg":"none"}"#,
            &format!(r#"{{"sub":"a","exp":{}}}"#, n + 60),
        );
        assert_eq!(at(&v, &t).unwrap_err(), VerifyError::BadHeader);
        let t = mint_raw(
            r#"["HS256"]"#,
            &format!(r#"{{"sub":"a","exp":{}}}"#, n + 60),
        );
        assert_eq!(at(&v, &t).unwrap_err(), VerifyError::BadHeader);
    }

    #[test]
    fn none_and_unlisted_algorithms_are_refused() {
        let v = verifier(None, &[]);
        let payload = URL_SAFE_NO_PAD.encode(good().to_string());
        for alg in ["none", "None", "NONE", "nOnE", "HS384", "RS256"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            assert!(
                at(&v, &format!("{h}.{payload}.")).is_err(),
                "{alg} without signature"
            );
            assert_eq!(
                at(&v, &format!("{h}.{payload}.c2ln")).unwrap_err(),
                VerifyError::Algorithm,
                "{alg}"
            );
        }
    }

    #[test]
    fn header_borne_keys_and_extensions_are_refused() {
        let v = verifier(None, &[]);
        let payload = good().to_string();
        for header in [
            r#"{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"alg":"HS256","jku":"http://127.0.0.1:1/jwks"}"#,
            r#"{"alg":"HS256","x5u":"http://127.0.0.1:1/x"}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
            r#"{"alg":"HS256","cty":"JWT"}"#,
        ] {
            assert_eq!(
                at(&v, &mint_raw(header, &payload)).unwrap_err(),
                VerifyError::ForbiddenHeader,
                "{header}"
            );
        }
    }

    #[test]
    fn syntax_is_checked_before_anything_else() {
        let v = verifier(None, &[]);
        let t = mint(good());
        let (h, rest) = t.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for bad in [
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.x"),
            format!("{h}.{p}.{s}.x.y"),
            format!("{h}..{s}"),
            format!(".{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/") + "+"),
            format!("{h}.{p}. {s}"),
            format!("{h}.{p}.{}", &s[..s.len() - 2]),
            format!("{h}.{p}."),
            format!("{{\"payload\":\"{p}\",\"signature\":\"{s}\"}}"),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(at(&v, &bad).is_err(), "{bad}");
        }
        assert_eq!(
            at(&v, &"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(),
            VerifyError::TooLong
        );
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let v = verifier(None, &[]);
        let other = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx").unwrap(),
        )
        .unwrap();
        assert_eq!(at(&v, &other).unwrap_err(), VerifyError::Signature);
    }

    #[test]
    fn the_crypto_provider_is_usable() {
        check_crypto_provider().unwrap();
    }
}
