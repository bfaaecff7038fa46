//! Token extraction and verification: arbitrary `Authorization` and `Cookie` headers
//! through `extract` and `Verifier::verify`. Nothing may panic, and a token that
//! verifies must carry a user that is a valid header value.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tokengate::app::KeyLoading;
use tokengate::config::Config;
use tokengate::jwt::Verifier;

fn config() -> &'static (Config, Verifier) {
    static CONFIG: OnceLock<(Config, Verifier)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[jwt]\nalgorithms = [\"HS256\", \"HS384\"]\nsecret = \"fuzz-secret-0123456789abcdef0123456789\"\nissuer = \"https://idp\"\naudience = [\"api\"]";
        let config = Config::from_toml(text, std::path::Path::new(".")).expect("fuzz config");
        let verifier = tokengate::app::verifier(&config, KeyLoading::Load).expect("fuzz keys");
        (config, verifier)
    })
}

fuzz_target!(|data: &[u8]| {
    let (config, verifier) = config();
    // Split the input: the first part is the Authorization header, the rest a Cookie.
    let cut = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(&data[..cut]) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    if cut < data.len() {
        if let Ok(v) = HeaderValue::from_bytes(&data[cut + 1..]) {
            headers.insert(http::header::COOKIE, v);
        }
    }
    if let Ok(Some(token)) = tokengate::extract::extract(&headers, &config.token_sources) {
        if let Ok(verified) = verifier.verify(token) {
            assert!(HeaderValue::from_str(&verified.user).is_ok());
        }
    }
    // And the raw bytes as a token, straight to the verifier.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verifier.verify(text);
    }
});
