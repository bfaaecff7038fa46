//! Adversarial tests of token verification through the real proxy (SPEC §5 step 6,
//! `src/jwt.rs`, `src/extract.rs`): token syntax, algorithm confusion, header
//! parameters, ECDSA malleability and claims.
//!
//! Under the default allowlist strategy a forged token that is merely *unknown* to the
//! store is refused even if verification were skipped entirely, which proves nothing.
//! So every attack token here is one the store would accept: it keeps the signing input
//! (`header.payload`, the store key) of a captured token, or its row is planted directly
//! through the strategy ([`plant`]). Each refusal is then checked to be a verification
//! refusal (its description is not the liveness one), and the backend is checked to
//! have received nothing. Where it matters a control shows that the same gate lets the
//! well-formed counterpart through.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use tokengate::jwt::VerifiedToken;
use tokengate::store::TokenHash;
use tokengate::strategy::SessionMeta;

// ---------------------------------------------------------------------------------------
// Refusal texts (src/gate.rs), so that a test can tell verification from liveness.

const REVOKED: &str = "the token has been revoked or is not known";
const BAD_BEARER: &str = "the bearer token is empty or malformed";
const TOO_LONG: &str = "the token is too long";
const MALFORMED: &str = "the token is malformed";
const BAD_HEADER: &str = "the token header is malformed";
const FORBIDDEN_HEADER: &str = "the token header carries a parameter that is not accepted";
const ALGORITHM: &str = "the token algorithm is not accepted";
const UNKNOWN_KEY: &str = "the token was signed by an unknown key";
const SIGNATURE: &str = "the token signature is invalid";
const BAD_CLAIMS: &str = "the token claims are malformed";
const NO_EXPIRY: &str = "the token has no expiry";
const EXPIRED: &str = "the token has expired";
const NOT_YET_VALID: &str = "the token is not valid yet";
const ISSUED_IN_FUTURE: &str = "the token is issued in the future";
const ISSUER: &str = "the token issuer is not accepted";
const AUDIENCE: &str = "the token audience is not accepted";
const USER: &str = "the token does not name a valid user";
const NO_SUB: &str = "the token has no string claim \"sub\" (jwt.user_claim)";

/// The challenge of a request without a token.
const PLAIN_CHALLENGE: &str = "Bearer realm=\"tokengate\"";

// ---------------------------------------------------------------------------------------
// Configs.

/// The default config with a strategy and another `[jwt]` section.
fn config(strategy: &str, jwt: &str) -> GateConfig {
    GateConfig::default()
        .strategy(strategy)
        .replace_sections(jwt)
}

/// A `[jwt]` section verifying `alg` with a public key file of `tests/keys`.
fn public_key_jwt(alg: &str, file: &str) -> String {
    format!(
        "[jwt]\nalgorithms = [\"{alg}\"]\npublic_key_file = \"{{keys}}/{file}\"\nleeway_seconds = 5\n"
    )
}

/// A `[jwt]` section verifying RS256 with the JWK set of `tests/keys/jwks.json`.
const JWKS_JWT: &str =
    "[jwt]\nalgorithms = [\"RS256\"]\njwks_file = \"{keys}/jwks.json\"\nleeway_seconds = 5\n";

/// A backend issuing tokens signed with a private key of `tests/keys`.
async fn backend_signing(alg: Algorithm, file: &str, kid: Option<&'static str>) -> Backend {
    let key = private_key(alg, file);
    Backend::start_with(Arc::new(move |user: &str| {
        mint_with(alg, &key, &claims(user), kid)
    }))
    .await
}

/// The HS256 default gate (allowlist) and its backend.
async fn default_gate() -> (Backend, Gate) {
    let backend = Backend::start().await;
    let gate = Gate::start(&backend).await;
    (backend, gate)
}

/// An RS256 gate with `rsa_public.pem` (allowlist), its backend signing with
/// `rsa_private.pem`.
async fn rs256_gate() -> (Backend, Gate) {
    let backend = backend_signing(Algorithm::RS256, "rsa_private.pem", None).await;
    let gate = Gate::start_config(
        &backend,
        &config("allowlist", &public_key_jwt("RS256", "rsa_public.pem")),
    )
    .await;
    (backend, gate)
}

/// An RS256 gate with the JWK set (allowlist), its backend signing with
/// `rsa_private.pem` as `rsa-1`.
async fn jwks_gate() -> (Backend, Gate) {
    let backend = backend_signing(Algorithm::RS256, "rsa_private.pem", Some("rsa-1")).await;
    let gate = Gate::start_config(&backend, &config("allowlist", JWKS_JWT)).await;
    (backend, gate)
}

/// An ES256 gate with `ec256_public.pem` under a strategy, its backend signing with
/// `ec256_private.pem`.
async fn es256_gate(strategy: &str) -> (Backend, Gate) {
    let backend = backend_signing(Algorithm::ES256, "ec256_private.pem", None).await;
    let gate = Gate::start_config(
        &backend,
        &config(strategy, &public_key_jwt("ES256", "ec256_public.pem")),
    )
    .await;
    (backend, gate)
}

// ---------------------------------------------------------------------------------------
// Token surgery.

/// base64url without padding.
fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` of a token.
fn signing_input(token: &str) -> &str {
    &token[..token.rfind('.').unwrap()]
}

/// The three segments of a compact token.
fn segments(token: &str) -> (&str, &str, &str) {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("not a compact token: {token}");
    };
    (h, p, s)
}

/// The decoded payload (claims JSON text) of a token.
fn payload_text(token: &str) -> String {
    String::from_utf8(URL_SAFE_NO_PAD.decode(segments(token).1).unwrap()).unwrap()
}

/// HMAC-SHA-256 (RFC 2104), by hand, so that any key can be used (jsonwebtoken refuses
/// an empty one).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// `b64(header).b64(payload)` from JSON texts written by hand.
fn input_of(header: &str, payload: &str) -> String {
    format!("{}.{}", b64(header), b64(payload))
}

/// A signing input completed with an HS256 signature under `key`.
fn hs256(input: &str, key: &[u8]) -> String {
    format!("{input}.{}", b64(hmac_sha256(key, input.as_bytes())))
}

/// A signing input completed with a signature by a private key of `tests/keys`.
fn signed_by(input: &str, alg: Algorithm, file: &str) -> String {
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &private_key(alg, file), alg).unwrap();
    format!("{input}.{signature}")
}

/// A raw token from hand-written header and payload JSON, HS256-signed with [`SECRET`].
fn raw_hs256(header: &str, payload: &str) -> String {
    hs256(&input_of(header, payload), SECRET.as_bytes())
}

/// The usual HS256 header.
const HS_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Fresh claims for `user` (valid ten minutes, `iat` now), as JSON text.
fn fresh_payload(user: &str) -> String {
    let n = now();
    json!({"sub": user, "iat": n, "exp": n + 600, "jti": hex::encode(rand::random::<[u8; 8]>())})
        .to_string()
}

/// A shortened token for messages.
fn short(token: &str) -> String {
    if token.len() > 100 {
        format!("{}…({} bytes)", &token[..100], token.len())
    } else {
        token.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Store and HTTP helpers.

/// Writes an allowlist row for the signing input of `token` (everything before its last
/// dot) without verifying it, so that only verification stands between the token and
/// the backend.
async fn plant(gate: &Gate, token: &str) {
    let input = match token.rfind('.') {
        Some(i) => &token[..i],
        None => token,
    };
    plant_input(gate, input).await;
}

/// Writes an allowlist row keyed by the hash of a signing input.
async fn plant_input(gate: &Gate, signing_input: &str) {
    let n = now();
    let unverified = VerifiedToken {
        hash: TokenHash::of_signing_input(signing_input.as_bytes()),
        user: "alice".into(),
        issued_at: Some(n),
        expires_at: n + 600,
        not_before: None,
        claims: Default::default(),
    };
    gate.app
        .strategy
        .admit(&unverified, SessionMeta::default())
        .await
        .unwrap()
        .expect("the allowlist keeps a row");
}

/// Sends a protected request with these headers; asserts a 401 `invalid_token` that is
/// not the liveness refusal and that never reached the backend. Returns the description.
async fn refused_request(gate: &Gate, backend: &Backend, headers: &[(&str, &str)]) -> String {
    let before = backend.count();
    let r = get(&gate.url("/api/me"), headers).await;
    let shown: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, short(v))).collect();
    assert_refusal(&r, 401);
    let body = r.json();
    let description = body["error_description"].as_str().unwrap().to_string();
    assert_ne!(
        description, REVOKED,
        "refused by liveness, not by verification: {shown:?}"
    );
    assert_eq!(body["error"], "invalid_token", "{shown:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(PLAIN_CHALLENGE) && challenge.contains("error=\"invalid_token\""),
        "{challenge:?} for {shown:?}"
    );
    backend.assert_untouched_because(before, &format!("an attack reached the backend: {shown:?}"));
    description
}

/// [`refused_request`] with `Authorization: Bearer <token>`.
async fn refused(gate: &Gate, backend: &Backend, token: &str) -> String {
    refused_request(
        gate,
        backend,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// [`refused`], and the description is one of `expected`.
async fn refused_as(gate: &Gate, backend: &Backend, token: &str, expected: &[&str]) {
    let description = refused(gate, backend, token).await;
    assert!(
        expected.contains(&description.as_str()),
        "{description:?} is none of {expected:?} for {}",
        short(token)
    );
}

/// Asserts the refusal of a request that carries no usable token: 401 with the plain
/// challenge, and nothing reached the backend.
async fn refused_as_no_token(gate: &Gate, backend: &Backend, headers: &[(&str, &str)]) {
    let before = backend.count();
    let r = get(&gate.url("/api/me"), headers).await;
    assert_refusal(&r, 401);
    assert_eq!(r.json()["error"], "unauthorized", "{headers:?}");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(PLAIN_CHALLENGE),
        "{headers:?}"
    );
    backend.assert_untouched_because(
        before,
        &format!("an attack reached the backend: {headers:?}"),
    );
}

/// A listener that counts the connections it receives and answers each with the JWK set
/// (so a verifier that fetched keys would get a usable set).
struct Sentinel {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sentinel {
    async fn start() -> Sentinel {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let jwks = std::fs::read_to_string(key_path("jwks.json")).unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                        jwks.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Sentinel { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// =======================================================================================
// Token syntax.

#[tokio::test]
async fn a_request_without_any_token_is_refused_with_a_plain_bearer_challenge() {
    let (backend, gate) = default_gate().await;
    refused_as_no_token(&gate, &backend, &[]).await;
    // An empty cookie is no token either.
    refused_as_no_token(&gate, &backend, &[("cookie", "access_token=")]).await;
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_bearer_scheme_with_nothing_after_it_is_refused() {
    let (backend, gate) = default_gate().await;
    for value in ["Bearer", "Bearer ", "Bearer    ", "bearer\t", "BEARER"] {
        let description = refused_request(&gate, &backend, &[("authorization", value)]).await;
        assert_eq!(description, BAD_BEARER, "{value:?}");
    }
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_basic_scheme_credential_is_treated_as_no_token() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    // A live token under another scheme, or with no scheme at all, is not a bearer token.
    for value in [
        "Basic dXNlcjpwYXNz".to_string(),
        format!("Basic {token}"),
        format!("Token {token}"),
        format!("JWT {token}"),
        format!("Bearer-{token}"),
        token.clone(),
    ] {
        refused_as_no_token(&gate, &backend, &[("authorization", &value)]).await;
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused_even_when_one_is_live() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let live = format!("Bearer {token}");
    for other in ["Bearer x.y.z", live.as_str(), "Basic dXNlcjpwYXNz"] {
        let description = refused_request(
            &gate,
            &backend,
            &[("authorization", &live), ("authorization", other)],
        )
        .await;
        assert_eq!(description, "more than one credential header");
    }
}

#[tokio::test]
async fn a_token_with_two_segments_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let (h, p, _) = segments(&token);
    // The signing input alone: its row exists.
    refused_as(&gate, &backend, &format!("{h}.{p}"), &[MALFORMED]).await;
    refused_as(&gate, &backend, h, &[MALFORMED]).await;
}

#[tokio::test]
async fn a_token_with_four_segments_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    for bad in [
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}.x"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{h}.{p}.{s}"),
    ] {
        refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_five_segments_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    for bad in [
        format!("{h}.{p}.{s}.x.y"),
        format!("{h}.{p}.{s}.{p}.{s}"),
        // JWE-shaped: header, encrypted key, iv, ciphertext, tag.
        format!("{h}.{s}.{s}.{p}.{s}"),
    ] {
        refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_an_empty_segment_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    // Empty header or payload, correctly signed and with a row: only syntax refuses them.
    for input in [format!("{h}."), format!(".{p}"), ".".to_string()] {
        let bad = hs256(&input, SECRET.as_bytes());
        plant(&gate, &bad).await;
        refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
    }
    for bad in [format!("{h}..{s}"), format!(".{p}.{s}"), "..".to_string()] {
        refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_base64_padding_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    // The signature padded: the same bytes to a lenient decoder, and the row exists.
    let signature = URL_SAFE_NO_PAD.decode(s).unwrap();
    let padded = URL_SAFE.encode(&signature);
    assert!(padded.ends_with('='), "{padded}");
    refused_as(&gate, &backend, &format!("{h}.{p}.{padded}"), &[MALFORMED]).await;
    refused_as(&gate, &backend, &format!("{h}.{p}.{s}=="), &[MALFORMED]).await;

    // A padded header, correctly signed over its padded form, with a row.
    let header = r#"{"alg":"HS256","kid":"k1"}"#;
    let padded_header = URL_SAFE.encode(header);
    assert!(padded_header.ends_with('='), "{padded_header}");
    let bad = hs256(&format!("{padded_header}.{p}"), SECRET.as_bytes());
    plant(&gate, &bad).await;
    refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
    // Control: the same header unpadded passes (a single key ignores kid).
    let good = hs256(&format!("{}.{p}", b64(header)), SECRET.as_bytes());
    plant(&gate, &good).await;
    assert_passes(&gate, &backend, &good, "alice").await;
}

#[tokio::test]
async fn a_token_with_plus_or_slash_in_its_base64_is_refused() {
    let (backend, gate) = default_gate().await;
    // A token whose signature uses `-` or `_`, so that the standard alphabet differs.
    let token = (0..200)
        .map(|_| mint(&claims("alice")))
        .find(|t| segments(t).2.contains(['-', '_']))
        .expect("a signature with - or _");
    plant(&gate, &token).await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let (h, p, s) = segments(&token);
    let standard = s.replace('-', "+").replace('_', "/");
    assert_eq!(
        STANDARD.decode(format!("{standard}=")).unwrap(),
        URL_SAFE_NO_PAD.decode(s).unwrap(),
        "the same signature bytes in the standard alphabet"
    );
    for bad in [
        format!("{h}.{p}.{standard}"),
        format!("{h}.{p}.{standard}="),
        format!("{h}.{p}.{s}+"),
        format!("{h}.{p}/.{s}"),
    ] {
        refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_whitespace_inside_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    // In the Authorization header: the bearer value is malformed.
    for bad in [
        format!("{h}.{p}. {s}"),
        format!("{h} .{p}.{s}"),
        format!("{h}.{p}.\t{s}"),
        format!("{h}.{p}.{} {}", &s[..10], &s[10..]),
    ] {
        let value = format!("Bearer {bad}");
        let description = refused_request(&gate, &backend, &[("authorization", &value)]).await;
        assert_eq!(description, BAD_BEARER, "{value:?}");
    }
    // In the cookie the whitespace reaches the verifier.
    for bad in [
        format!("{h}.{p}. {s}"),
        format!("{h}. {p}.{s}"),
        format!("{h}.{p}.{}\t{}", &s[..10], &s[10..]),
    ] {
        let cookie = format!("access_token={bad}");
        let description = refused_request(&gate, &backend, &[("cookie", &cookie)]).await;
        assert_eq!(description, MALFORMED, "{cookie:?}");
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_characters_outside_base64url_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    for c in ["!", "~", "*", "$", "%3D", "\\", "\"", "'", "=", "@", ":"] {
        for bad in [
            format!("{h}.{p}.{s}{c}"),
            format!("{h}.{p}.{c}{s}"),
            format!("{h}.{p}{c}.{s}"),
        ] {
            refused_as(&gate, &backend, &bad, &[MALFORMED]).await;
        }
    }
    // Through the cookie too (no bearer parsing in between).
    let cookie = format!("access_token={h}.{p}.{s}!");
    let description = refused_request(&gate, &backend, &[("cookie", &cookie)]).await;
    assert_eq!(description, MALFORMED);

    // A non-ASCII byte (obs-text, which HTTP allows in a header value): sent raw.
    let before = backend.count();
    let request = format!(
        "GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {h}.{p}.{s}\u{e9}\r\nConnection: close\r\n\r\n"
    );
    let response = raw(gate.addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(
        response.contains("\"error\":\"invalid_token\""),
        "{response}"
    );
    assert!(!response.contains(REVOKED), "{response}");
    backend.assert_untouched(before);

    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_json_serialised_jws_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    let flattened = json!({"payload": p, "protected": h, "signature": s}).to_string();
    let general =
        json!({"payload": p, "signatures": [{"protected": h, "signature": s}]}).to_string();
    for serialised in [&flattened, &general] {
        // As a bearer token (its commas make it malformed there)...
        let value = format!("Bearer {serialised}");
        let description = refused_request(&gate, &backend, &[("authorization", &value)]).await;
        assert!([BAD_BEARER, MALFORMED].contains(&description.as_str()));
        // ...and as the cookie, where it reaches the verifier.
        let cookie = format!("access_token={serialised}");
        let description = refused_request(&gate, &backend, &[("cookie", &cookie)]).await;
        assert_eq!(description, MALFORMED, "{cookie}");
        // Base64url-wrapped into one opaque segment.
        refused_as(&gate, &backend, &b64(serialised), &[MALFORMED]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_a_null_signature_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, _) = segments(&token);
    refused_as(&gate, &backend, &format!("{h}.{p}."), &[MALFORMED]).await;
    // All-zero signature bytes of the right length.
    refused_as(
        &gate,
        &backend,
        &format!("{h}.{p}.{}", b64([0u8; 32])),
        &[SIGNATURE],
    )
    .await;
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_with_a_truncated_signature_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (h, p, s) = segments(&token);
    assert_eq!(s.len(), 43);
    for keep in [42, 41, 40, 32, 22, 4, 2, 1] {
        let bad = format!("{h}.{p}.{}", &s[..keep]);
        refused_as(&gate, &backend, &bad, &[MALFORMED, SIGNATURE]).await;
    }
    // A truncated signature that still decodes must fail as a signature, not pass as
    // a prefix match.
    refused_as(
        &gate,
        &backend,
        &format!("{h}.{p}.{}", &s[..40]),
        &[SIGNATURE],
    )
    .await;
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_token_over_8_kib_is_refused_before_any_work() {
    let (backend, gate) = default_gate().await;
    // Correctly signed, with a row, and with a valid user: only its length is wrong.
    let n = now();
    let payload = json!({"sub": "alice", "iat": n, "exp": n + 600, "pad": "x".repeat(9000)});
    let big = raw_hs256(HS_HEADER, &payload.to_string());
    assert!(big.len() > 8 * 1024);
    plant(&gate, &big).await;
    refused_as(&gate, &backend, &big, &[TOO_LONG]).await;
}

// =======================================================================================
// Algorithms.

#[tokio::test]
async fn alg_none_in_every_casing_without_a_signature_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (_, p, _) = segments(&token);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let input = format!("{}.{p}", b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)));
        plant_input(&gate, &input).await;
        refused_as(
            &gate,
            &backend,
            &format!("{input}."),
            &[MALFORMED, ALGORITHM],
        )
        .await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn alg_none_in_every_casing_with_a_signature_is_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    let (_, p, s) = segments(&token);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let input = format!("{}.{p}", b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)));
        plant_input(&gate, &input).await;
        // The captured token's signature, junk, and a signature that is a valid HMAC of
        // this very input under the gate's secret (a verifier ignoring `alg` accepts it).
        for bad in [
            format!("{input}.{s}"),
            format!("{input}.c2ln"),
            hs256(&input, SECRET.as_bytes()),
        ] {
            refused_as(&gate, &backend, &bad, &[ALGORITHM]).await;
        }
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

/// The PEM, the PEM without its trailing newline, and the DER of a public key file.
fn public_key_encodings(file: &str) -> Vec<(&'static str, Vec<u8>)> {
    let pem = std::fs::read(key_path(file)).unwrap();
    assert!(pem.ends_with(b"\n"));
    let trimmed = pem.trim_ascii_end().to_vec();
    let text = String::from_utf8(pem.clone()).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = STANDARD.decode(body).unwrap();
    vec![("pem", pem), ("pem-trimmed", trimmed), ("der", der)]
}

/// A JWK of `tests/keys/jwks.json` by kid.
fn jwk(kid: &str) -> Value {
    let set: Value =
        serde_json::from_str(&std::fs::read_to_string(key_path("jwks.json")).unwrap()).unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

/// HS256 tokens over the claims of `token`, keyed with each secret, each planted, are
/// refused by the algorithm check.
async fn hmac_confusion_is_refused(
    gate: &Gate,
    backend: &Backend,
    token: &str,
    header: &str,
    secrets: &[(&str, Vec<u8>)],
) {
    let payload = payload_text(token);
    for (what, secret) in secrets {
        let forged = hs256(&input_of(header, &payload), secret);
        plant(gate, &forged).await;
        let description = refused(gate, backend, &forged).await;
        assert_eq!(description, ALGORITHM, "HMAC keyed with the {what}");
    }
}

#[tokio::test]
async fn an_rs256_gate_refuses_hs256_tokens_keyed_with_its_public_key_in_any_encoding() {
    let (backend, gate) = rs256_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let mut secrets = public_key_encodings("rsa_public.pem");
    let n = jwk("rsa-1")["n"].as_str().unwrap().to_string();
    secrets.push(("jwk-n-text", n.clone().into_bytes()));
    secrets.push(("jwk-n-bytes", URL_SAFE_NO_PAD.decode(&n).unwrap()));
    hmac_confusion_is_refused(&gate, &backend, &token, HS_HEADER, &secrets).await;
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_jwks_gate_refuses_hs256_tokens_keyed_with_a_key_of_its_set() {
    let (backend, gate) = jwks_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let n = jwk("rsa-1")["n"].as_str().unwrap().to_string();
    let mut secrets = public_key_encodings("rsa_public.pem");
    secrets.push(("jwk-n-text", n.clone().into_bytes()));
    secrets.push(("jwk-n-bytes", URL_SAFE_NO_PAD.decode(&n).unwrap()));
    secrets.push(("jwk-json", jwk("rsa-1").to_string().into_bytes()));
    let header = r#"{"alg":"HS256","typ":"JWT","kid":"rsa-1"}"#;
    hmac_confusion_is_refused(&gate, &backend, &token, header, &secrets).await;
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn an_es256_gate_refuses_hs256_tokens_keyed_with_its_public_key_in_any_encoding() {
    let (backend, gate) = es256_gate("allowlist").await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let mut secrets = public_key_encodings("ec256_public.pem");
    // The bare uncompressed point (the end of the SubjectPublicKeyInfo).
    let der = secrets[2].1.clone();
    secrets.push(("ec-point", der[der.len() - 65..].to_vec()));
    hmac_confusion_is_refused(&gate, &backend, &token, HS_HEADER, &secrets).await;
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn a_ps256_or_rs512_token_signed_with_the_right_key_is_refused_when_only_rs256_is_configured()
{
    let (backend, gate) = rs256_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let payload = payload_text(&token);
    for alg in [Algorithm::PS256, Algorithm::RS512, Algorithm::PS512] {
        let header = json!({"alg": format!("{alg:?}"), "typ": "JWT"}).to_string();
        let forged = signed_by(&input_of(&header, &payload), alg, "rsa_private.pem");
        // The signature itself is genuine.
        let public = jsonwebtoken::DecodingKey::from_rsa_pem(
            &std::fs::read(key_path("rsa_public.pem")).unwrap(),
        )
        .unwrap();
        let (_, _, signature) = segments(&forged);
        let input = signing_input(&forged).as_bytes();
        assert!(
            jsonwebtoken::crypto::verify(signature, input, &public, alg).unwrap(),
            "{alg:?}"
        );
        plant(&gate, &forged).await;
        refused_as(&gate, &backend, &forged, &[ALGORITHM]).await;
    }
    // Control: the same claims under RS256 with a planted row pass.
    let good = signed_by(
        &input_of(r#"{"alg":"RS256","typ":"JWT","x":1}"#, &payload),
        Algorithm::RS256,
        "rsa_private.pem",
    );
    plant(&gate, &good).await;
    assert_passes(&gate, &backend, &good, "alice").await;
}

#[tokio::test]
async fn hs256_tokens_signed_with_a_blank_or_well_known_weak_secret_are_refused() {
    let (backend, gate) = default_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let input = signing_input(&token);
    // The hand-made HMAC agrees with the gate's secret: re-signing is the identity.
    assert_eq!(hs256(input, SECRET.as_bytes()), token);
    for weak in ["", "secret", "your-256-bit-secret", "\0", " "] {
        // Same header and claims as the captured token: its row is the store key.
        let forged = hs256(input, weak.as_bytes());
        refused_as(&gate, &backend, &forged, &[SIGNATURE]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

// =======================================================================================
// Header parameters.

/// Tokens with these hand-written headers over fresh claims, HS256-signed with the
/// gate's own secret and planted, are refused with `expected`; a plain header passes.
async fn headers_are_refused(headers: &[&str], expected: &[&str]) {
    let (backend, gate) = default_gate().await;
    let good = raw_hs256(HS_HEADER, &fresh_payload("alice"));
    plant(&gate, &good).await;
    assert_passes(&gate, &backend, &good, "alice").await;
    for header in headers {
        let bad = raw_hs256(header, &fresh_payload("alice"));
        plant(&gate, &bad).await;
        let description = refused(&gate, &backend, &bad).await;
        assert!(
            expected.contains(&description.as_str()),
            "{description:?} for header {header}"
        );
    }
}

#[tokio::test]
async fn an_embedded_jwk_of_the_attackers_own_hmac_key_is_refused() {
    let (backend, gate) = default_gate().await;
    let attacker = b"attacker-secret-0123456789abcdef";
    let header = json!({"alg": "HS256", "typ": "JWT", "jwk": {"kty": "oct", "k": b64(attacker)}})
        .to_string();
    let forged = hs256(&input_of(&header, &fresh_payload("alice")), attacker);
    plant(&gate, &forged).await;
    refused_as(&gate, &backend, &forged, &[FORBIDDEN_HEADER]).await;
    // Even signed with the gate's own secret, a header-borne key is refused.
    let with_secret = raw_hs256(&header, &fresh_payload("alice"));
    plant(&gate, &with_secret).await;
    refused_as(&gate, &backend, &with_secret, &[FORBIDDEN_HEADER]).await;
}

#[tokio::test]
async fn an_embedded_jwk_of_the_attackers_own_rsa_key_is_refused() {
    let (backend, gate) = rs256_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    // The attacker holds rsa2_private; the gate trusts only rsa_public.
    let mut attacker = jwk("rsa-2");
    attacker.as_object_mut().unwrap().remove("kid");
    let header = json!({"alg": "RS256", "typ": "JWT", "jwk": attacker}).to_string();
    let forged = signed_by(
        &input_of(&header, &payload_text(&token)),
        Algorithm::RS256,
        "rsa2_private.pem",
    );
    plant(&gate, &forged).await;
    refused_as(&gate, &backend, &forged, &[FORBIDDEN_HEADER]).await;
    // x5c carrying the attacker's key material is refused the same way.
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [b64(b"not-a-cert")]}).to_string();
    let forged = signed_by(
        &input_of(&header, &payload_text(&token)),
        Algorithm::RS256,
        "rsa2_private.pem",
    );
    plant(&gate, &forged).await;
    refused_as(&gate, &backend, &forged, &[FORBIDDEN_HEADER]).await;
}

/// A token naming a key URL in `param` (signed by the key served there) is refused and
/// the URL is never fetched.
async fn a_key_url_is_refused_without_a_fetch(param: &str) {
    let sentinel = Sentinel::start().await;
    for (backend, gate) in [rs256_gate().await, jwks_gate().await] {
        let token = login(&gate, "alice").await;
        assert_passes(&gate, &backend, &token, "alice").await;
        let url = format!("http://{}/.well-known/jwks.json", sentinel.addr);
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-2", param: url}).to_string();
        let forged = signed_by(
            &input_of(&header, &payload_text(&token)),
            Algorithm::RS256,
            "rsa2_private.pem",
        );
        plant(&gate, &forged).await;
        refused_as(&gate, &backend, &forged, &[FORBIDDEN_HEADER]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sentinel.hits(), 0, "tokengate fetched the {param} URL");
    // The sentinel does count connections.
    let _probe = tokio::net::TcpStream::connect(sentinel.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sentinel.hits(), 1);
}

#[tokio::test]
async fn a_jku_header_pointing_to_an_attacker_url_is_refused_without_any_fetch() {
    a_key_url_is_refused_without_a_fetch("jku").await;
}

#[tokio::test]
async fn an_x5u_header_pointing_to_an_attacker_url_is_refused_without_any_fetch() {
    a_key_url_is_refused_without_a_fetch("x5u").await;
}

/// On the JWK-set gate, a token signed by the trusted rsa_private.pem but naming `kid`
/// (planted) is refused as signed by an unknown key.
async fn a_hostile_kid_is_refused(kid: &str) {
    let (backend, gate) = jwks_gate().await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let payload = payload_text(&token);
    // Control: the same key and claims under its right kid pass.
    let good_header = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "x": 1}).to_string();
    let good = signed_by(
        &input_of(&good_header, &payload),
        Algorithm::RS256,
        "rsa_private.pem",
    );
    plant(&gate, &good).await;
    assert_passes(&gate, &backend, &good, "alice").await;

    let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
    let forged = signed_by(
        &input_of(&header, &payload),
        Algorithm::RS256,
        "rsa_private.pem",
    );
    plant(&gate, &forged).await;
    refused_as(&gate, &backend, &forged, &[UNKNOWN_KEY]).await;

    // The classic pairing: an HMAC token keyed with what the kid "points to" (an empty
    // file) is refused on the algorithm, by the JWK-set gate and by an HS256 gate.
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string();
    let empty_keyed = hs256(&input_of(&header, &payload), b"");
    plant(&gate, &empty_keyed).await;
    refused_as(&gate, &backend, &empty_keyed, &[ALGORITHM, UNKNOWN_KEY]).await;
    let (backend, gate) = default_gate().await;
    plant(&gate, &empty_keyed).await;
    refused_as(&gate, &backend, &empty_keyed, &[SIGNATURE, UNKNOWN_KEY]).await;
    backend.assert_untouched(0);
}

#[tokio::test]
async fn a_kid_with_path_traversal_is_refused() {
    a_hostile_kid_is_refused("../../../../dev/null").await;
}

#[tokio::test]
async fn a_kid_with_sql_injection_is_refused() {
    a_hostile_kid_is_refused("' OR 1=1 --").await;
}

#[tokio::test]
async fn a_kid_with_shell_metacharacters_is_refused() {
    a_hostile_kid_is_refused("$(id);|").await;
}

#[tokio::test]
async fn an_empty_kid_is_refused() {
    a_hostile_kid_is_refused("").await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    a_hostile_kid_is_refused("rsa-9").await;
}

#[tokio::test]
async fn a_non_string_kid_is_refused() {
    let (backend, gate) = jwks_gate().await;
    let token = login(&gate, "alice").await;
    let payload = payload_text(&token);
    for kid in [
        json!(1),
        json!(null),
        json!(["rsa-1"]),
        json!({"kid": "rsa-1"}),
    ] {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string();
        let forged = signed_by(
            &input_of(&header, &payload),
            Algorithm::RS256,
            "rsa_private.pem",
        );
        plant(&gate, &forged).await;
        refused_as(&gate, &backend, &forged, &[UNKNOWN_KEY, BAD_HEADER]).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

#[tokio::test]
async fn an_unknown_crit_extension_is_refused() {
    headers_are_refused(
        &[
            r#"{"alg":"HS256","typ":"JWT","crit":["x-evil"],"x-evil":true}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
}

#[tokio::test]
async fn an_empty_crit_list_is_refused() {
    headers_are_refused(
        &[
            r#"{"alg":"HS256","typ":"JWT","crit":[]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":null}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
}

#[tokio::test]
async fn an_unencoded_payload_b64_false_is_refused() {
    headers_are_refused(
        &[
            r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
            r#"{"alg":"HS256","b64":false}"#,
            r#"{"alg":"HS256","b64":true}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
}

#[tokio::test]
async fn a_nested_token_cty_jwt_is_refused() {
    headers_are_refused(
        &[
            r#"{"alg":"HS256","cty":"JWT"}"#,
            r#"{"alg":"HS256","cty":"jwt"}"#,
            r#"{"alg":"HS256","cty":5}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
}

#[tokio::test]
async fn a_nested_token_declared_with_the_full_media_type_application_jwt_is_refused() {
    // RFC 7515 §4.1.10: a `cty` without a slash means "application/" + cty, so
    // "application/jwt" declares a nested JWT exactly as "JWT" does (media types are
    // case-insensitive). `parse_header` in src/jwt.rs only compares `cty` with "jwt".
    headers_are_refused(
        &[
            r#"{"alg":"HS256","cty":"application/jwt"}"#,
            r#"{"alg":"HS256","cty":"application/JWT"}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
}

#[tokio::test]
async fn an_encrypted_token_header_is_refused() {
    headers_are_refused(
        &[
            r#"{"alg":"HS256","enc":"A256GCM"}"#,
            r#"{"alg":"HS256","zip":"DEF"}"#,
            r#"{"alg":"HS256","epk":{"kty":"EC"}}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
}

#[tokio::test]
async fn a_header_that_is_not_a_json_object_is_refused() {
    headers_are_refused(
        &[
            r#"["HS256"]"#,
            r#"[{"alg":"HS256"}]"#,
            r#""HS256""#,
            "null",
            "5",
            r#"{"alg":"HS256""#,
            r#"{"alg":"HS256"}{}"#,
        ],
        &[BAD_HEADER],
    )
    .await;
}

#[tokio::test]
async fn a_header_with_a_duplicate_alg_is_refused() {
    headers_are_refused(
        &[
            r#"{"alg":"none","alg":"HS256"}"#,
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"alg":"HS256","alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"a","kid":"b"}"#,
        ],
        &[BAD_HEADER],
    )
    .await;
}

#[tokio::test]
async fn header_parameters_hidden_behind_json_escapes_are_still_seen() {
    // JSON escapes decode before any check: `\u006awk` is `jwk`, `\u0061lg` is `alg`.
    headers_are_refused(
        &[
            r#"{"alg":"HS256","\u006awk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"alg":"HS256","\u006Aku":"http://127.0.0.1:1/jwks"}"#,
            r#"{"alg":"HS256","\u0063rit":["x"]}"#,
            r#"{"alg":"HS256","cty":"\u004aWT"}"#,
        ],
        &[FORBIDDEN_HEADER],
    )
    .await;
    headers_are_refused(
        &[
            r#"{"alg":"HS256","\u0061lg":"none"}"#,
            r#"{"\u0061lg":"none","alg":"HS256"}"#,
        ],
        &[BAD_HEADER],
    )
    .await;
    headers_are_refused(
        &[r#"{"alg":"\u006eone"}"#, r#"{"alg":"HS256\u0000"}"#],
        &[ALGORITHM],
    )
    .await;
}

#[tokio::test]
async fn a_header_without_a_string_alg_is_refused() {
    headers_are_refused(
        &[
            r#"{"typ":"JWT"}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256 "}"#,
            r#"{"alg":""}"#,
        ],
        &[ALGORITHM],
    )
    .await;
}

// =======================================================================================
// ECDSA malleability.

/// The order n of the P-256 group, big-endian.
const P256_N: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";

/// a − b for 256-bit big-endian numbers with a ≥ b.
fn sub_256(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = a[i] as i16 - b[i] as i16 - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "a < b");
    out
}

/// The same ES256 token with its signature (r, s) replaced by (r, n − s).
fn ecdsa_twin(token: &str) -> String {
    let (h, p, s) = segments(token);
    let signature = URL_SAFE_NO_PAD.decode(s).unwrap();
    assert_eq!(signature.len(), 64, "an ES256 signature is r || s");
    let n: [u8; 32] = hex::decode(P256_N).unwrap().try_into().unwrap();
    let s_value: [u8; 32] = signature[32..].try_into().unwrap();
    assert!(s_value < n && s_value != [0u8; 32]);
    let twin_s = sub_256(&n, &s_value);
    assert_ne!(twin_s, s_value);
    let mut twin = signature[..32].to_vec();
    twin.extend_from_slice(&twin_s);
    format!("{h}.{p}.{}", b64(twin))
}

#[test]
fn the_256_bit_subtraction_is_right() {
    let n: [u8; 32] = hex::decode(P256_N).unwrap().try_into().unwrap();
    let mut one = [0u8; 32];
    one[31] = 1;
    assert_eq!(
        hex::encode_upper(sub_256(&n, &one)),
        "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632550"
    );
    let mut b = [0u8; 32];
    b[31] = 0x52; // borrows across bytes: ...2551 - 0x52 = ...24FF
    assert_eq!(
        hex::encode_upper(sub_256(&n, &b)),
        "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC6324FF"
    );
    assert_eq!(sub_256(&n, &sub_256(&n, &b)), b);
}

/// A DER INTEGER of an unsigned big-endian number.
fn der_integer(x: &[u8]) -> Vec<u8> {
    let first = x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1);
    let mut body = x[first..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    let mut out = vec![0x02, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test]
async fn an_ecdsa_signature_in_der_or_of_the_wrong_length_is_refused() {
    let (backend, gate) = es256_gate("allowlist").await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;
    let (h, p, s) = segments(&token);
    let signature = URL_SAFE_NO_PAD.decode(s).unwrap();
    let (r, s_value) = signature.split_at(32);
    // The same (r, s) as an ASN.1 DER sequence, as some libraries accept.
    let mut der_body = der_integer(r);
    der_body.extend(der_integer(s_value));
    let mut der = vec![0x30, der_body.len() as u8];
    der.extend(der_body);
    let mut padded = vec![0u8];
    padded.extend_from_slice(&signature);
    let mut zero_r = signature.clone();
    zero_r[..32].fill(0);
    let mut zero_s = signature.clone();
    zero_s[32..].fill(0);
    for (what, bytes) in [
        ("der", der),
        ("r only", r.to_vec()),
        ("leading zero", padded),
        ("trailing byte", [signature.as_slice(), &[0]].concat()),
        ("one byte short", signature[..63].to_vec()),
        ("r = 0", zero_r),
        ("s = 0", zero_s),
        ("all zero", vec![0u8; 64]),
    ] {
        let bad = format!("{h}.{p}.{}", b64(&bytes));
        let description = refused(&gate, &backend, &bad).await;
        assert!(
            [SIGNATURE, MALFORMED].contains(&description.as_str()),
            "{what}: {description}"
        );
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}

const STRATEGIES: [&str; 3] = ["allowlist", "denylist", "user-status"];

#[tokio::test]
async fn the_ecdsa_twin_of_a_live_token_passes_under_every_strategy() {
    for strategy in STRATEGIES {
        let (backend, gate) = es256_gate(strategy).await;
        let token = login(&gate, "alice").await;
        assert_passes(&gate, &backend, &token, "alice").await;
        let twin = ecdsa_twin(&token);
        assert_ne!(twin, token);
        assert_eq!(signing_input(&twin), signing_input(&token));
        // A valid signature: proof that the refusals below come from revocation.
        assert_passes(&gate, &backend, &twin, "alice").await;
        assert_eq!(
            ecdsa_twin(&twin),
            token,
            "the twin of the twin is the original"
        );
    }
}

#[tokio::test]
async fn the_ecdsa_twin_of_a_logged_out_token_is_refused_under_every_strategy() {
    for strategy in STRATEGIES {
        let (backend, gate) = es256_gate(strategy).await;
        let token = login(&gate, "alice").await;
        assert_passes(&gate, &backend, &token, "alice").await;
        let r = post_with(&gate.url("/logout"), &token).await;
        assert_eq!(r.status, 204, "{strategy}: {:?}", r.body);
        let twin = ecdsa_twin(&token);
        for (what, t) in [("original", &token), ("twin", &twin)] {
            let before = backend.count();
            let r = get_with(&gate.url("/api/me"), t).await;
            assert_refusal(&r, 401);
            assert_eq!(
                r.json()["error_description"],
                REVOKED,
                "{strategy}: the {what} must be refused as revoked"
            );
            backend
                .assert_untouched_because(before, &format!("{strategy}: the {what} got through"));
        }
        // Logging out with the twin is refused too (it is dead), and changes nothing.
        let r = post_with(&gate.url("/logout"), &twin).await;
        assert_refusal(&r, 401);
    }
}

#[tokio::test]
async fn logging_out_with_the_ecdsa_twin_revokes_the_original_under_every_strategy() {
    for strategy in STRATEGIES {
        let (backend, gate) = es256_gate(strategy).await;
        let token = login(&gate, "alice").await;
        assert_passes(&gate, &backend, &token, "alice").await;
        let twin = ecdsa_twin(&token);
        let r = post_with(&gate.url("/logout"), &twin).await;
        assert_eq!(r.status, 204, "{strategy}: {:?}", r.body);
        for (what, t) in [("original", &token), ("twin", &twin)] {
            let before = backend.count();
            let r = get_with(&gate.url("/api/me"), t).await;
            assert_refusal(&r, 401);
            assert_eq!(
                r.json()["error_description"],
                REVOKED,
                "{strategy}: the {what} must be refused as revoked"
            );
            backend
                .assert_untouched_because(before, &format!("{strategy}: the {what} got through"));
        }
    }
}

// =======================================================================================
// Claims. Tokens are signed with the gate's own secret and planted, so the signature and
// the store would let them through: only the claim rule refuses them.

/// A default-HS256 gate with extra `[jwt]` lines (allowlist).
async fn claims_gate(extra_jwt: &str) -> (Backend, Gate) {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &GateConfig::default().set("jwt", extra_jwt)).await;
    (backend, gate)
}

/// Signs and plants a token with this payload text; asserts it passes.
async fn claims_pass(gate: &Gate, backend: &Backend, payload: &str, user: &str) {
    let token = raw_hs256(HS_HEADER, payload);
    plant(gate, &token).await;
    assert_passes(gate, backend, &token, user).await;
}

/// Signs and plants a token with this payload text; asserts it is refused as expected.
async fn claims_refused(gate: &Gate, backend: &Backend, payload: &str, expected: &[&str]) {
    let token = raw_hs256(HS_HEADER, payload);
    plant(gate, &token).await;
    refused_as(gate, backend, &token, expected).await;
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    claims_pass(&gate, &backend, &fresh_payload("alice"), "alice").await;
    claims_refused(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n}).to_string(),
        &[NO_EXPIRY],
    )
    .await;
}

#[tokio::test]
async fn a_token_with_a_string_exp_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for exp in [json!((n + 600).to_string()), json!("soon"), json!("")] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": "alice", "iat": n, "exp": exp}).to_string(),
            &[BAD_CLAIMS, NO_EXPIRY],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_with_a_null_exp_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    claims_refused(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n, "exp": null}).to_string(),
        &[BAD_CLAIMS, NO_EXPIRY],
    )
    .await;
}

#[tokio::test]
async fn a_token_with_a_negative_exp_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for exp in [json!(-5), json!(-1), json!(i64::MIN)] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": "alice", "iat": n, "exp": exp}).to_string(),
            &[BAD_CLAIMS, EXPIRED, NO_EXPIRY],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_with_a_huge_exp_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for exp in [
        "1e300",
        "1.8e19",
        "18446744073709551615",
        "9223372036854775807",
        "253402300800",
    ] {
        claims_refused(
            &gate,
            &backend,
            &format!(r#"{{"sub":"alice","iat":{n},"exp":{exp}}}"#),
            // jsonwebtoken reports an exp it cannot read as a u64 as missing.
            &[BAD_CLAIMS, NO_EXPIRY],
        )
        .await;
    }
    // A fractional exp within range is still a valid NumericDate.
    claims_pass(
        &gate,
        &backend,
        &format!(r#"{{"sub":"alice","iat":{n},"exp":{}.5}}"#, n + 600),
        "alice",
    )
    .await;
}

#[tokio::test]
async fn a_token_expired_just_past_the_leeway_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    claims_refused(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n - 600, "exp": n - 7}).to_string(),
        &[EXPIRED],
    )
    .await;
}

#[tokio::test]
async fn a_token_not_valid_before_a_future_nbf_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    claims_refused(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n, "nbf": n + 60, "exp": n + 600}).to_string(),
        &[NOT_YET_VALID],
    )
    .await;
    claims_refused(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n, "nbf": "later", "exp": n + 600}).to_string(),
        &[BAD_CLAIMS, NOT_YET_VALID],
    )
    .await;
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    claims_refused(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n + 60, "exp": n + 600}).to_string(),
        &[ISSUED_IN_FUTURE],
    )
    .await;
}

const ISSUER_JWT: &str = "issuer = \"https://idp.example\"\n";

#[tokio::test]
async fn an_iss_given_as_an_array_is_refused() {
    let (backend, gate) = claims_gate(ISSUER_JWT).await;
    let n = now();
    claims_pass(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n, "exp": n + 600, "iss": "https://idp.example"})
            .to_string(),
        "alice",
    )
    .await;
    for iss in [
        json!(["https://idp.example"]),
        json!(["https://idp.example", "https://evil.example"]),
        json!({"iss": "https://idp.example"}),
    ] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": "alice", "iat": n, "exp": n + 600, "iss": iss}).to_string(),
            &[ISSUER],
        )
        .await;
    }
}

#[tokio::test]
async fn an_iss_in_the_wrong_case_is_refused() {
    let (backend, gate) = claims_gate(ISSUER_JWT).await;
    let n = now();
    for iss in [
        "https://IDP.example",
        "HTTPS://idp.example",
        "https://idp.example/",
        "https://idp.example ",
        "https://idp.example\u{0}",
        "https://evil.example",
    ] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": "alice", "iat": n, "exp": n + 600, "iss": iss}).to_string(),
            &[ISSUER],
        )
        .await;
    }
}

#[tokio::test]
async fn a_missing_iss_is_refused_when_an_issuer_is_configured() {
    let (backend, gate) = claims_gate(ISSUER_JWT).await;
    let n = now();
    for payload in [
        json!({"sub": "alice", "iat": n, "exp": n + 600}),
        json!({"sub": "alice", "iat": n, "exp": n + 600, "iss": null}),
        json!({"sub": "alice", "iat": n, "exp": n + 600, "iss": ""}),
    ] {
        claims_refused(&gate, &backend, &payload.to_string(), &[ISSUER]).await;
    }
}

const AUDIENCE_JWT: &str = "audience = [\"api\"]\n";

#[tokio::test]
async fn a_missing_aud_is_refused_when_an_audience_is_configured() {
    let (backend, gate) = claims_gate(AUDIENCE_JWT).await;
    let n = now();
    claims_pass(
        &gate,
        &backend,
        &json!({"sub": "alice", "iat": n, "exp": n + 600, "aud": "api"}).to_string(),
        "alice",
    )
    .await;
    for payload in [
        json!({"sub": "alice", "iat": n, "exp": n + 600}),
        json!({"sub": "alice", "iat": n, "exp": n + 600, "aud": null}),
        json!({"sub": "alice", "iat": n, "exp": n + 600, "aud": []}),
    ] {
        claims_refused(&gate, &backend, &payload.to_string(), &[AUDIENCE]).await;
    }
}

#[tokio::test]
async fn a_wrong_aud_is_refused() {
    let (backend, gate) = claims_gate(AUDIENCE_JWT).await;
    let n = now();
    for aud in [
        json!("web"),
        json!("API"),
        json!("api "),
        json!(["web"]),
        json!(["web", "admin"]),
        json!(""),
    ] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": "alice", "iat": n, "exp": n + 600, "aud": aud}).to_string(),
            &[AUDIENCE],
        )
        .await;
    }
}

#[tokio::test]
async fn a_numeric_aud_is_refused() {
    let (backend, gate) = claims_gate(AUDIENCE_JWT).await;
    let n = now();
    for aud in [
        json!(5),
        json!([5]),
        json!(["api", 5]),
        json!({"api": true}),
    ] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": "alice", "iat": n, "exp": n + 600, "aud": aud}).to_string(),
            &[AUDIENCE],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_without_sub_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    claims_refused(
        &gate,
        &backend,
        &json!({"iat": n, "exp": n + 600, "user": "alice"}).to_string(),
        &[NO_SUB],
    )
    .await;
}

#[tokio::test]
async fn a_token_without_the_configured_user_claim_is_refused_naming_it() {
    let (backend, gate) = claims_gate("user_claim = \"user_id\"\n").await;
    let n = now();
    claims_pass(
        &gate,
        &backend,
        &json!({"user_id": "alice", "iat": n, "exp": n + 600}).to_string(),
        "alice",
    )
    .await;
    for payload in [
        json!({"sub": "alice", "iat": n, "exp": n + 600}),
        json!({"user_id": -7, "iat": n, "exp": n + 600}),
    ] {
        let token = raw_hs256(HS_HEADER, &payload.to_string());
        plant(&gate, &token).await;
        let r = get_with(&gate.url("/api/me"), &token).await;
        assert_refusal(&r, 401);
        assert_eq!(
            r.json()["error_description"],
            "the token has no string claim \"user_id\" (jwt.user_claim)",
            "{payload}"
        );
        // RFC 6750 §3: no `"` inside error_description, so the header quotes it with `'`.
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            "Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"the token has no string claim 'user_id' (jwt.user_claim)\"",
        );
    }
    assert_eq!(
        backend.count(),
        1,
        "only the control token reached the backend"
    );
}

#[tokio::test]
async fn a_token_with_an_empty_or_blank_sub_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for sub in ["", " ", "\t", " alice", "alice "] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": sub, "iat": n, "exp": n + 600}).to_string(),
            &[USER],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_with_a_negative_fractional_or_structured_sub_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    // A non-negative integer is a user id (SPEC §14), forwarded as decimal text; any
    // other number or type is refused.
    for sub in [json!(-1), json!(1.5), json!(5.0), json!(null), json!(true)] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": sub, "iat": n, "exp": n + 600}).to_string(),
            &[NO_SUB],
        )
        .await;
    }
    // jsonwebtoken's own claim parsing may already stumble on a structured `sub`.
    for sub in [json!(["alice"]), json!({"id": "alice"})] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": sub, "iat": n, "exp": n + 600}).to_string(),
            &[NO_SUB, BAD_CLAIMS],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_with_a_10_kib_sub_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    let payload = json!({"sub": "x".repeat(10 * 1024), "iat": n, "exp": n + 600}).to_string();
    claims_refused(&gate, &backend, &payload, &[TOO_LONG]).await;
    // Under the token limit but over the user limit: refused by the user rule.
    let payload = json!({"sub": "x".repeat(2000), "iat": n, "exp": n + 600}).to_string();
    claims_refused(&gate, &backend, &payload, &[USER]).await;
}

#[tokio::test]
async fn a_token_whose_sub_smuggles_a_header_with_cr_lf_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for sub in [
        "alice\r\nX-Admin: 1",
        "alice\nX-Admin: 1",
        "alice\r",
        "alice\r\n\r\nGET /admin HTTP/1.1",
    ] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": sub, "iat": n, "exp": n + 600}).to_string(),
            &[USER],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_whose_sub_holds_a_nul_or_control_character_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for sub in [
        "alice\u{0}",
        "\u{0}alice",
        "al\u{0}ice",
        "alice\u{7f}",
        "alice\u{1b}[31m",
        "alice\u{85}",
    ] {
        claims_refused(
            &gate,
            &backend,
            &json!({"sub": sub, "iat": n, "exp": n + 600}).to_string(),
            &[USER],
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_with_a_duplicated_sub_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    let exp = n + 600;
    for payload in [
        format!(r#"{{"sub":"alice","sub":"admin","iat":{n},"exp":{exp}}}"#),
        format!(r#"{{"sub":"admin","sub":"alice","iat":{n},"exp":{exp}}}"#),
        // The same duplicate, hidden behind a JSON escape.
        format!(r#"{{"sub":"alice","\u0073ub":"admin","iat":{n},"exp":{exp}}}"#),
        // Duplicated exp: a past one hidden behind a future one, either way round.
        format!(
            r#"{{"sub":"alice","iat":{n},"exp":{},"exp":{exp}}}"#,
            n - 600
        ),
        format!(
            r#"{{"sub":"alice","iat":{n},"exp":{exp},"exp":{}}}"#,
            n - 600
        ),
    ] {
        claims_refused(&gate, &backend, &payload, &[BAD_CLAIMS]).await;
    }
    assert!(backend
        .seen()
        .iter()
        .all(|s| s.all("x-user-id").iter().all(|u| u != "admin")));
}

#[tokio::test]
async fn a_payload_that_is_not_a_json_object_is_refused() {
    let (backend, gate) = claims_gate("").await;
    let n = now();
    for payload in [
        format!(r#"[{{"sub":"alice","exp":{}}}]"#, n + 600),
        r#""alice""#.to_string(),
        "null".to_string(),
        format!(r#"{{"sub":"alice","exp":{}"#, n + 600),
        format!(r#"{{"sub":"alice","exp":{}}}{{}}"#, n + 600),
    ] {
        claims_refused(&gate, &backend, &payload, &[BAD_CLAIMS, NO_EXPIRY]).await;
    }
}
