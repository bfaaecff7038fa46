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
    /// The body is not UTF-8 text.
    #[error("the form is not UTF-8")]
    NotText,
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
    /// Parses `a=1&b=2` (`+` for space, `%XX` escapes; an invalid escape is kept as
    /// written).
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        let text = std::str::from_utf8(body).map_err(|_| FormError::NotText)?;
        let fields = text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(name), decode(value))
            })
            .collect();
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

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    String::from_utf8_lossy(&crate::gate::percent_decode(&spaced)).into_owned()
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
        assert_eq!(Form::parse(b"\xff=1"), Err(FormError::NotText));
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
