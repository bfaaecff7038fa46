//! Config loading: arbitrary TOML through both layers. Nothing may panic; every error
//! is a `ConfigError` whose text is one line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = tokengate::config::Config::from_toml(text, std::path::Path::new("/nonexistent")) {
        assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
    }
});
