//! Verification past the signature: the input is a header and a payload (split at the
//! first newline), signed here with the configured HMAC key, so that the fuzzer reaches
//! the header rules and every claim rule instead of stopping at the signature. Nothing
//! may panic, and whatever verifies must satisfy the rules the proxy relies on. The same
//! input goes through the logout-token rules too.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use tokengate::app::KeyLoading;
use tokengate::config::Config;
use tokengate::jwt::Verifier;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123456789";

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let text = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[jwt]\nalgorithms = [\"HS256\"]\nsecret = \"fuzz-secret-0123456789abcdef0123456789\"\nissuer = \"https://idp\"\naudience = [\"api\"]";
        let config = Config::from_toml(text, std::path::Path::new(".")).expect("fuzz config");
        tokengate::app::verifier(&config, KeyLoading::Load).expect("fuzz keys")
    })
}

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, payload) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let Ok(key) = EncodingKey::from_secret(SECRET) else { return };
    let Ok(signature) = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256) else { return };
    let token = format!("{input}.{signature}");
    if let Ok(verified) = verifier().verify(&token) {
        let claims: serde_json::Value = serde_json::from_slice(payload).expect("verified claims are JSON");
        assert!(HeaderValue::from_str(&verified.user).is_ok());
        assert_eq!(claims["iss"], "https://idp");
        assert!(claims["exp"].is_number());
        assert!(verified.expires_at >= 0);
    }
    // The logout-token rules (OIDC Back-Channel Logout) on the same input: nothing may
    // panic, whatever verifies names someone, and nothing is both kinds of token.
    if let Ok(logout) = verifier().verify_logout_token(&token) {
        assert!(logout.sub.is_some() || logout.sid.is_some());
        assert!(!logout.jti.is_empty());
        assert!(verifier().verify(&token).is_err(), "a logout token passed as an access token");
    }
});
