//! Tokens as the backend issues them: claims, HS256 with the default [`SECRET`], and
//! any other algorithm with the key files of `tests/keys`.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The HMAC secret of the default config.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// Path of a test key file.
pub fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// Unix seconds now.
pub fn now() -> i64 {
    tokengate::jwt::now()
}

/// Claims of a fresh token for `user`, valid for an hour, unique (`jti`).
pub fn claims(user: &str) -> Value {
    let n = now();
    json!({"sub": user, "iat": n, "exp": n + 3600, "jti": hex::encode(rand::random::<[u8; 8]>())})
}

/// Signs claims with HS256 and the default secret.
pub fn mint(claims: &Value) -> String {
    mint_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        claims,
        None,
    )
}

/// Signs claims with any algorithm and key, optionally with a `kid`.
pub fn mint_with(alg: Algorithm, key: &EncodingKey, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// An encoding key from a PEM file in `tests/keys`.
pub fn private_key(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = std::fs::read(key_path(file)).unwrap();
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_secret(&pem).unwrap(),
    }
}

/// Claims of a token of a simplejwt `token_type`, valid for `ttl` seconds.
pub fn token_of_type(user: &str, token_type: &str, ttl: i64) -> Value {
    let mut c = claims(user);
    c["token_type"] = json!(token_type);
    c["exp"] = json!(now() + ttl);
    c
}
