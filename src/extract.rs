//! Reading a request's token from its configured sources (`[token] sources`).
//!
//! Sources are tried in the configured order; the first that holds a token wins. What
//! is ambiguous is refused rather than guessed: two `Authorization` headers, or the
//! same cookie twice. Verification is left to [`crate::jwt`].

use http::header::{HeaderMap, HeaderName, COOKIE};

/// One place a request may carry its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `header:NAME`: `NAME: Bearer <jwt>` (RFC 6750 §2.1); other schemes are ignored.
    Header(HeaderName),
    /// `cookie:NAME`: the cookie's value is the token.
    Cookie(String),
}

impl TokenSource {
    /// Parses `header:NAME` or `cookie:NAME`.
    pub fn parse(text: &str) -> Result<TokenSource, String> {
        match text.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(TokenSource::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            Some(("cookie", name)) if valid_cookie_name(name) => {
                Ok(TokenSource::Cookie(name.to_string()))
            }
            Some(("cookie", name)) => Err(format!("{name:?} is not a valid cookie name")),
            _ => Err(format!("{text:?} is not header:NAME or cookie:NAME")),
        }
    }
}

/// RFC 6265 §4.1.1 cookie-name: a token (no separators, no controls).
pub(crate) fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Why a request's token could not be read. The text is safe to send to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The same header more than once.
    #[error("more than one credential header")]
    DuplicateHeader,
    /// The same cookie more than once.
    #[error("more than one token cookie")]
    DuplicateCookie,
    /// `Bearer` with nothing usable after it.
    #[error("the bearer token is empty or malformed")]
    BadBearer,
}

/// The token of a request, or `None` when no source holds one.
pub fn extract<'h>(
    headers: &'h HeaderMap,
    sources: &[TokenSource],
) -> Result<Option<&'h str>, ExtractError> {
    Ok(extract_with_source(headers, sources)?.map(|(token, _)| token))
}

/// The token of a request and the source it came from (a cookie token is held to the
/// same-site rule of SPEC §10 on state-changing routes).
pub fn extract_with_source<'h, 's>(
    headers: &'h HeaderMap,
    sources: &'s [TokenSource],
) -> Result<Option<(&'h str, &'s TokenSource)>, ExtractError> {
    for source in sources {
        let found = match source {
            TokenSource::Header(name) => from_header(headers, name)?,
            TokenSource::Cookie(name) => from_cookie(headers, name)?,
        };
        if let Some(token) = found {
            return Ok(Some((token, source)));
        }
    }
    Ok(None)
}

fn from_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, ExtractError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::DuplicateHeader);
    }
    let Ok(value) = value.to_str() else {
        return Err(ExtractError::BadBearer);
    };
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) => (scheme, rest.trim_start_matches([' ', '\t'])),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None); // another scheme (Basic, ...) is not ours to judge
    }
    if rest.is_empty() || rest.contains([' ', '\t', ',']) {
        return Err(ExtractError::BadBearer);
    }
    Ok(Some(rest))
}

/// The value of the request cookie `name` (across every `Cookie` header; quotes
/// removed); two of that name are refused, an empty one is none. Also what a refresh
/// route reads a presented `cookie:` refresh token with ([`crate::capture`]).
pub(crate) fn from_cookie<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, ExtractError> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for pair in header.split(';') {
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            if n.trim() != name {
                continue;
            }
            if found.is_some() {
                // Cookie tossing: a sibling domain may set a second cookie of the same name.
                return Err(ExtractError::DuplicateCookie);
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            found = Some(v);
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::test_headers as headers;

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource::parse("header:Authorization").unwrap(),
            TokenSource::parse("cookie:access_token").unwrap(),
        ]
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc", "Bearer abc "] {
            assert_eq!(
                extract(&headers(&[("authorization", v)]), &sources()),
                Ok(Some("abc")),
                "{v}"
            );
        }
    }

    #[test]
    fn an_empty_or_spaced_bearer_is_malformed() {
        for v in ["Bearer", "Bearer ", "Bearer a b", "Bearer a,b"] {
            assert_eq!(
                extract(&headers(&[("authorization", v)]), &sources()),
                Err(ExtractError::BadBearer),
                "{v}"
            );
        }
    }

    #[test]
    fn other_schemes_fall_through_to_the_next_source() {
        let h = headers(&[
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", "a=1; access_token=tok"),
        ]);
        assert_eq!(extract(&h, &sources()), Ok(Some("tok")));
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(extract(&h, &sources()), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(extract(&h, &sources()), Err(ExtractError::DuplicateHeader));
    }

    #[test]
    fn sources_are_tried_in_order() {
        let h = headers(&[
            ("authorization", "Bearer head"),
            ("cookie", "access_token=cook"),
        ]);
        assert_eq!(extract(&h, &sources()), Ok(Some("head")));
        let reversed: Vec<_> = sources().into_iter().rev().collect();
        assert_eq!(extract(&h, &reversed), Ok(Some("cook")));
    }

    #[test]
    fn cookies_are_found_across_headers_and_duplicates_refused() {
        let h = headers(&[("cookie", "x=1"), ("cookie", "access_token=\"tok\"")]);
        assert_eq!(extract(&h, &sources()), Ok(Some("tok")));
        let h = headers(&[("cookie", "access_token=a; access_token=b")]);
        assert_eq!(extract(&h, &sources()), Err(ExtractError::DuplicateCookie));
        let h = headers(&[("cookie", "access_token=")]);
        assert_eq!(extract(&h, &sources()), Ok(None));
    }

    #[test]
    fn source_syntax() {
        assert!(TokenSource::parse("query:t").is_err());
        assert!(TokenSource::parse("cookie:a b").is_err());
        assert!(TokenSource::parse("header:").is_err());
    }
}
