//! Form bodies (`application/x-www-form-urlencoded`, as the WHATWG URL standard
//! defines them): what RFC 7009 revocation, RFC 7662 introspection and a refresh token
//! presented in a form send. Bodies are read to a bound and never further, and a field
//! named twice is ambiguous, never "the first one".

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONTENT_TYPE};
use http_body_util::BodyExt;

use crate::body::Body;

/// The largest form body read.
pub const MAX_FORM_BODY: usize = 64 * 1024;

/// Why a form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The request does not say `Content-Type: application/x-www-form-urlencoded`.
    #[error("the body must be application/x-www-form-urlencoded")]
    NotAForm,
    /// The body is larger than the bound, or broke off.
    #[error("the body is too large or could not be read")]
    Unreadable,
    /// The body is not UTF-8 text, or holds a broken `%` escape.
    #[error("the body is not a valid form")]
    Malformed,
    /// A field appears more than once.
    #[error("a field appears more than once")]
    Ambiguous,
}

/// Whether a request's `Content-Type` is a form (parameters such as `charset` allowed).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A body of at most `limit` bytes, whole; `None` when it is larger or broke off.
pub async fn collect_limited(mut body: Body, limit: usize) -> Option<Bytes> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.ok()?.data_ref() {
            buffer.extend_from_slice(data);
        }
        if buffer.len() > limit {
            return None;
        }
    }
    Some(buffer.freeze())
}

/// A form request's body, checked to be one and read to [`MAX_FORM_BODY`].
pub async fn read(headers: &HeaderMap, body: Body) -> Result<Form, FormError> {
    if !is_form(headers) {
        return Err(FormError::NotAForm);
    }
    let bytes = collect_limited(body, MAX_FORM_BODY)
        .await
        .ok_or(FormError::Unreadable)?;
    Form::parse(&bytes)
}

/// A parsed form: its fields in order, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Parses `a=1&b=2` (`+` for space, `%XX` escapes), strictly: a broken escape or
    /// text that does not decode to UTF-8 is not a form.
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        let text = std::str::from_utf8(body).map_err(|_| FormError::Malformed)?;
        let fields = text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((decode(name)?, decode(value)?))
            })
            .collect::<Result<_, FormError>>()?;
        Ok(Form { fields })
    }

    /// The one value of a field; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Result<Option<&str>, FormError> {
        let mut values = self.fields.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(FormError::Ambiguous),
            (Some((_, v)), None) if !v.is_empty() => Ok(Some(v)),
            _ => Ok(None),
        }
    }
}

/// Decodes one form component (WHATWG URL `application/x-www-form-urlencoded`), with
/// invalid escapes refused rather than kept.
fn decode(component: &str) -> Result<String, FormError> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |at: usize| {
                    bytes
                        .get(at)
                        .and_then(|&b| char::from(b).to_digit(16))
                        .ok_or(FormError::Malformed)
                };
                // Two hex digits, nothing else (`%+1` is not 0x01).
                out.push((digit(i + 1)? * 16 + digit(i + 2)?) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded_and_must_be_single() {
        let form = Form::parse(b"a=1&token=x%2Ey+z&&hint=").unwrap();
        assert_eq!(form.get("token").unwrap(), Some("x.y z"));
        assert_eq!(form.get("a").unwrap(), Some("1"));
        assert_eq!(form.get("hint").unwrap(), None);
        assert_eq!(form.get("missing").unwrap(), None);
        let twice = Form::parse(b"token=a&token=b").unwrap();
        assert_eq!(twice.get("token"), Err(FormError::Ambiguous));
        let named = Form::parse(b"logout%5Ftoken=t").unwrap();
        assert_eq!(named.get("logout_token").unwrap(), Some("t"));
        for bad in [&b"\xff=1"[..], b"t=a%2", b"t=a%zz", b"t=%ff", b"t=%+1"] {
            assert_eq!(Form::parse(bad), Err(FormError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_form_is_told_by_its_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_form(&h));
        h.insert(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(is_form(&h));
        h.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_form(&h));
    }
}
