//! Every supported algorithm family through the real proxy (SPEC §4 `[jwt]`, §5 step 6):
//! a token issued by the backend with the right key is captured and passes; a forged
//! one is refused before the backend.
//!
//! A forgery that is merely *unknown* to the allowlist would be refused even if the
//! signature were never checked, which proves nothing. So every forged token here is
//! live as far as the store is concerned: either it keeps the signing input of a
//! captured token (the store key is the hash of `header.payload`, so the allowlist row
//! is already there) and only its signature differs, or its row is planted directly
//! through the strategy. Its refusal can then only come from verification.

mod common;
use common::*;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use tokengate::jwt::VerifiedToken;
use tokengate::store::TokenHash;
use tokengate::strategy::SessionMeta;

/// The default config with another `[jwt]` section (allowlist strategy).
fn config_with_jwt(jwt: &str) -> GateConfig {
    GateConfig::default().replace_sections(jwt)
}

/// A `[jwt]` section verifying `alg` with a public key file of `tests/keys`.
fn public_key_jwt(alg: &str, file: &str) -> String {
    format!(
        "[jwt]\nalgorithms = [\"{alg}\"]\npublic_key_file = \"{{keys}}/{file}\"\nleeway_seconds = 5\n"
    )
}

/// A `[jwt]` section verifying `alg` with the default HMAC secret.
fn secret_jwt(alg: &str) -> String {
    format!("[jwt]\nalgorithms = [\"{alg}\"]\nsecret = \"{SECRET}\"\nleeway_seconds = 5\n")
}

/// A backend issuing tokens signed with `key`, optionally naming a `kid`.
async fn backend_signing(alg: Algorithm, key: EncodingKey, kid: Option<&'static str>) -> Backend {
    Backend::start_with(Arc::new(move |user: &str| {
        mint_with(alg, &key, &claims(user), kid)
    }))
    .await
}

/// `header.payload` of a token.
fn signing_input(token: &str) -> &str {
    &token[..token.rfind('.').unwrap()]
}

/// The same header and claims, signed again with another key.
fn resign(token: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let input = signing_input(token);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

/// The same header and claims with one bit of the signature flipped (in its middle, so
/// that it is a real change, not a base64 padding bit).
fn flip_signature(token: &str) -> String {
    let input = signing_input(token);
    let mut signature = URL_SAFE_NO_PAD.decode(&token[input.len() + 1..]).unwrap();
    let middle = signature.len() / 2;
    signature[middle] ^= 0x01;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The `alg` named in a token's header.
fn header_alg(token: &str) -> Algorithm {
    jsonwebtoken::decode_header(token).unwrap().alg
}

/// Writes the allowlist row of a token without verifying it, so that only verification
/// stands between it and the backend.
async fn plant(gate: &Gate, token: &str) {
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap()
        .claims;
    let claims = claims.as_object().unwrap().clone();
    let unverified = VerifiedToken {
        hash: TokenHash::of_signing_input(signing_input(token).as_bytes()),
        user: claims["sub"].as_str().unwrap().to_string(),
        issued_at: claims.get("iat").and_then(Value::as_i64),
        expires_at: claims["exp"].as_i64().unwrap(),
        not_before: None,
        claims,
    };
    gate.app
        .strategy
        .admit(&unverified, SessionMeta::default())
        .await
        .unwrap()
        .expect("the allowlist keeps a row");
}

/// Asserts a token is refused by verification (not by liveness) and never reaches the
/// backend.
async fn assert_forgery_refused(gate: &Gate, backend: &Backend, token: &str) {
    let before = backend.count();
    let r = get_with(&gate.url("/api/me"), token).await;
    assert_refusal(&r, 401);
    let description = r.json()["error_description"].as_str().unwrap().to_string();
    assert_ne!(
        description, "the token has been revoked or is not known",
        "the forgery was live in the store: it must be refused by verification"
    );
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_token\"")),
        "{:?}",
        r.headers
    );
    backend.assert_untouched_because(before, "a forged token reached the backend");
}

/// A forgery of a captured token; keeps its signing input, so its allowlist row exists.
enum Forge {
    /// Sign the same `header.payload` with another key.
    Resign(EncodingKey),
    /// Flip a bit of the signature.
    Flip,
}

/// Logs in through capture on a gate configured with `jwt`, against a backend signing
/// with `alg` and `key`; the token passes, and its forgery is refused.
async fn one_passes_one_forged_fails(alg: Algorithm, jwt: &str, key: EncodingKey, forge: Forge) {
    let backend = backend_signing(alg, key, None).await;
    let gate = Gate::start_config(&backend, &config_with_jwt(jwt)).await;
    let token = login(&gate, "alice").await;
    assert_eq!(header_alg(&token), alg);
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
    assert_eq!(rows(&gate, "valid_token"), 1);
    assert_passes(&gate, &backend, &token, "alice").await;

    let forged = match forge {
        Forge::Resign(other) => resign(&token, alg, &other),
        Forge::Flip => flip_signature(&token),
    };
    assert_ne!(forged, token);
    assert_eq!(signing_input(&forged), signing_input(&token));
    assert_forgery_refused(&gate, &backend, &forged).await;

    // The forgery revoked nothing.
    assert_passes(&gate, &backend, &token, "alice").await;
}

fn other_secret() -> EncodingKey {
    EncodingKey::from_secret(b"another-secret-0123456789abcdef0123456789").unwrap()
}

#[tokio::test]
async fn hs256_passes_with_the_secret_and_a_token_signed_with_another_secret_fails() {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    one_passes_one_forged_fails(
        Algorithm::HS256,
        &secret_jwt("HS256"),
        key,
        Forge::Resign(other_secret()),
    )
    .await;
}

#[tokio::test]
async fn hs384_passes_with_the_secret_and_a_token_signed_with_another_secret_fails() {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    one_passes_one_forged_fails(
        Algorithm::HS384,
        &secret_jwt("HS384"),
        key,
        Forge::Resign(other_secret()),
    )
    .await;
}

#[tokio::test]
async fn hs512_passes_with_the_secret_and_a_token_signed_with_another_secret_fails() {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    one_passes_one_forged_fails(
        Algorithm::HS512,
        &secret_jwt("HS512"),
        key,
        Forge::Resign(other_secret()),
    )
    .await;
}

#[tokio::test]
async fn rs256_passes_with_the_public_key_and_a_token_signed_by_another_rsa_key_fails() {
    one_passes_one_forged_fails(
        Algorithm::RS256,
        &public_key_jwt("RS256", "rsa_public.pem"),
        private_key(Algorithm::RS256, "rsa_private.pem"),
        Forge::Resign(private_key(Algorithm::RS256, "rsa2_private.pem")),
    )
    .await;
}

#[tokio::test]
async fn ps256_passes_with_the_public_key_and_a_token_signed_by_another_rsa_key_fails() {
    one_passes_one_forged_fails(
        Algorithm::PS256,
        &public_key_jwt("PS256", "rsa_public.pem"),
        private_key(Algorithm::PS256, "rsa_private.pem"),
        Forge::Resign(private_key(Algorithm::PS256, "rsa2_private.pem")),
    )
    .await;
}

#[tokio::test]
async fn es256_passes_with_the_public_key_and_a_token_with_a_tampered_signature_fails() {
    one_passes_one_forged_fails(
        Algorithm::ES256,
        &public_key_jwt("ES256", "ec256_public.pem"),
        private_key(Algorithm::ES256, "ec256_private.pem"),
        Forge::Flip,
    )
    .await;
}

#[tokio::test]
async fn es384_passes_with_the_public_key_and_a_token_with_a_tampered_signature_fails() {
    one_passes_one_forged_fails(
        Algorithm::ES384,
        &public_key_jwt("ES384", "ec384_public.pem"),
        private_key(Algorithm::ES384, "ec384_private.pem"),
        Forge::Flip,
    )
    .await;
}

#[tokio::test]
async fn eddsa_passes_with_the_public_key_and_a_token_with_a_tampered_signature_fails() {
    one_passes_one_forged_fails(
        Algorithm::EdDSA,
        &public_key_jwt("EdDSA", "ed25519_public.pem"),
        private_key(Algorithm::EdDSA, "ed25519_private.pem"),
        Forge::Flip,
    )
    .await;
}

#[tokio::test]
async fn rs256_refuses_a_tampered_signature_too() {
    one_passes_one_forged_fails(
        Algorithm::RS256,
        &public_key_jwt("RS256", "rsa_public.pem"),
        private_key(Algorithm::RS256, "rsa_private.pem"),
        Forge::Flip,
    )
    .await;
}

const JWKS_JWT: &str =
    "[jwt]\nalgorithms = [\"RS256\"]\njwks_file = \"{keys}/jwks.json\"\nleeway_seconds = 5\n";

#[tokio::test]
async fn a_jwk_set_picks_the_key_by_kid_and_a_token_signed_by_the_other_key_fails() {
    let backend = backend_signing(
        Algorithm::RS256,
        private_key(Algorithm::RS256, "rsa2_private.pem"),
        Some("rsa-2"),
    )
    .await;
    let gate = Gate::start_config(&backend, &config_with_jwt(JWKS_JWT)).await;

    // kid rsa-2, signed by rsa2_private: captured and passes.
    let token = login(&gate, "alice").await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some("rsa-2")
    );
    assert_eq!(gate.app.metrics.capture_count("stored"), 1);
    assert_passes(&gate, &backend, &token, "alice").await;

    // kid rsa-1 but signed by rsa2_private: the key named does not verify it.
    let rsa2 = private_key(Algorithm::RS256, "rsa2_private.pem");
    let mislabelled = mint_with(Algorithm::RS256, &rsa2, &claims("alice"), Some("rsa-1"));
    plant(&gate, &mislabelled).await;
    assert_forgery_refused(&gate, &backend, &mislabelled).await;

    // The token of rsa-2 with its header re-signed under rsa-1's name: same story.
    let renamed = {
        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
            .unwrap()
            .claims;
        mint_with(Algorithm::RS256, &rsa2, &claims, Some("rsa-1"))
    };
    plant(&gate, &renamed).await;
    assert_forgery_refused(&gate, &backend, &renamed).await;
}

#[tokio::test]
async fn a_jwk_set_refuses_a_token_naming_an_unknown_kid() {
    let backend = backend_signing(
        Algorithm::RS256,
        private_key(Algorithm::RS256, "rsa_private.pem"),
        Some("rsa-1"),
    )
    .await;
    let gate = Gate::start_config(&backend, &config_with_jwt(JWKS_JWT)).await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;

    // Control: a planted row makes a well-signed out-of-band token pass, so a refusal
    // below can only come from verification.
    let rsa1 = private_key(Algorithm::RS256, "rsa_private.pem");
    let genuine = mint_with(Algorithm::RS256, &rsa1, &claims("alice"), Some("rsa-1"));
    plant(&gate, &genuine).await;
    assert_passes(&gate, &backend, &genuine, "alice").await;

    // Signed by a key the set trusts, but naming a kid the set does not hold.
    let unknown = mint_with(Algorithm::RS256, &rsa1, &claims("alice"), Some("rsa-9"));
    plant(&gate, &unknown).await;
    assert_forgery_refused(&gate, &backend, &unknown).await;
}

#[tokio::test]
async fn a_jwk_set_verifies_every_key_it_holds() {
    let backend = Backend::start().await;
    let gate = Gate::start_config(&backend, &config_with_jwt(JWKS_JWT)).await;
    for (kid, file) in [("rsa-1", "rsa_private.pem"), ("rsa-2", "rsa2_private.pem")] {
        let key = private_key(Algorithm::RS256, file);
        let token = mint_with(Algorithm::RS256, &key, &claims("erin"), Some(kid));
        let verified = gate
            .app
            .policy()
            .verifier
            .verify(&token)
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
        gate.app
            .strategy
            .admit(&verified, SessionMeta::default())
            .await
            .unwrap();
        assert_passes(&gate, &backend, &token, "erin").await;
    }
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused_by_an_rs256_gate() {
    let backend = backend_signing(
        Algorithm::RS256,
        private_key(Algorithm::RS256, "rsa_private.pem"),
        None,
    )
    .await;
    let gate = Gate::start_config(
        &backend,
        &config_with_jwt(&public_key_jwt("RS256", "rsa_public.pem")),
    )
    .await;
    let token = login(&gate, "alice").await;
    assert_passes(&gate, &backend, &token, "alice").await;

    // The classic confusion: the public key's PEM bytes used as an HMAC secret, with
    // and without the trailing newline a verifier might strip.
    let pem = std::fs::read(key_path("rsa_public.pem")).unwrap();
    let trimmed = pem.trim_ascii_end().to_vec();
    for secret in [pem, trimmed] {
        let key = EncodingKey::from_secret(&secret).unwrap();
        let confused = mint_with(Algorithm::HS256, &key, &claims("alice"), None);
        plant(&gate, &confused).await;
        assert_forgery_refused(&gate, &backend, &confused).await;

        // The same with the captured token's own claims.
        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
            .unwrap()
            .claims;
        let confused = mint_with(Algorithm::HS256, &key, &claims, None);
        plant(&gate, &confused).await;
        assert_forgery_refused(&gate, &backend, &confused).await;
    }
    assert_passes(&gate, &backend, &token, "alice").await;
}
