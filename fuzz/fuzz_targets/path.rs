//! The path check: never panics, and whatever it accepts has no dot-segment that a
//! backend decoding once would see.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if tokengate::gate::path_is_unsafe(path) {
        return;
    }
    assert!(path.starts_with('/'));
    for segment in path.split('/') {
        let lower = segment.to_ascii_lowercase();
        let decoded = lower.replace("%2e", ".");
        let bare = decoded.split(';').next().unwrap_or("");
        assert!(bare != "." && bare != "..", "accepted a dot-segment: {path:?}");
        assert!(!lower.contains("%2f") && !lower.contains("%5c"), "accepted an encoded slash: {path:?}");
    }
});
