//! Capture parsing: a JSON pointer into an arbitrary body, and arbitrary `Set-Cookie`
//! and token headers. Nothing may panic.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tokengate::capture::{from_headers, from_json, CaptureSource};

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (pointer, body) = data.split_at(cut);
    if let Ok(pointer) = std::str::from_utf8(pointer) {
        if pointer.starts_with('/') {
            let _ = from_json(body, pointer);
        }
        let _ = CaptureSource::parse(pointer);
    }
    let _ = from_json(data, "/access_token");
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(http::header::SET_COOKIE, v.clone());
            headers.append(HeaderName::from_static("x-access-token"), v);
        }
    }
    let _ = from_headers(&CaptureSource::Cookie("access_token".into()), &headers);
    let _ = from_headers(&CaptureSource::Header(HeaderName::from_static("x-access-token")), &headers);
});
