//! Logout tokens of OpenID Connect Back-Channel Logout 1.0: what makes one valid
//! (§2.4 and §2.6), → a [`LogoutToken`].
//!
//! A logout token comes from the identity provider that signs the access tokens, so it
//! is verified with the same keys and algorithms, and the same strict parsing
//! (steps 1 to 5 of [`super`]). Its claims follow rules of their own, checked here
//! rather than by bending the access-token rules: `iss`, `aud`, `iat`, `exp` and `jti`
//! are required, `events` must hold the back-channel logout event, `nonce` is forbidden
//! (so an ID token can never pass for one), and `sub`, `sid` or both name what to end.
//! An access token's `jwt.user_claim`, `jwt.required_claims` and `jwt.required_typ` do
//! not apply. The reverse holds too: [`super::Verifier::verify`] refuses a token that
//! is typed or shaped as a logout token. What a logout ends is
//! [`crate::backchannel`]'s business.

use serde_json::{Map, Value};

use super::{same_media_type, valid_user, Verifier, VerifyError};
use crate::store::TokenHash;

/// The member of `events` that makes a token a back-channel logout token (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// The explicit type of a logout token (§2.4: `typ` `logout+jwt`).
pub const LOGOUT_TOKEN_TYPE: &str = "logout+jwt";
/// Longest `jti` accepted; it is kept in the store until the token expires.
pub const MAX_JTI_BYTES: usize = 256;

/// A logout token that passed verification. It no longer carries the raw token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// SHA-256 of the signing input, to name the token in logs.
    pub hash: TokenHash,
    /// `jti`: a logout token is acted on once.
    pub jti: String,
    /// `sub`: the user whose sessions end, when given.
    pub sub: Option<String>,
    /// `sid`: the provider's session whose sessions end, when given.
    pub sid: Option<String>,
    /// `iat`, unix seconds.
    pub issued_at: i64,
    /// `exp`, unix seconds.
    pub expires_at: i64,
}

/// Why a logout token was refused. The text is safe to send to the identity provider:
/// it names a rule, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// A rule it shares with access tokens: syntax, header, algorithm, key, signature,
    /// `exp`, `nbf`, `iat` in the future, `iss`, `aud` against the configuration.
    #[error("{0}")]
    Token(#[from] VerifyError),
    /// `typ` is present and is neither `JWT` nor `logout+jwt`.
    #[error("the logout token type (typ) is not JWT or logout+jwt")]
    Type,
    /// `iss` is missing or not a string.
    #[error("the logout token has no iss")]
    NoIssuer,
    /// `aud` is missing, or neither a string nor an array of strings.
    #[error("the logout token has no usable aud")]
    NoAudience,
    /// `iat` is missing.
    #[error("the logout token has no iat")]
    NoIssuedAt,
    /// `jti` is missing, not a string, empty or longer than [`MAX_JTI_BYTES`].
    #[error("the logout token has no usable jti")]
    NoJti,
    /// `events` is missing, not an object, or has no back-channel logout member whose
    /// value is an object.
    #[error("the logout token has no events claim with the back-channel logout event")]
    Events,
    /// A `nonce` is present (§2.4: forbidden, so that an ID token is never one).
    #[error("a logout token must not carry a nonce")]
    Nonce,
    /// Neither `sub` nor `sid`.
    #[error("the logout token has neither sub nor sid")]
    NoSubject,
    /// `sub` is not a usable user id (a non-empty string, safe in a header).
    #[error("the logout token sub is not a valid user")]
    Subject,
    /// `sid` is not a non-empty string of at most
    /// [`crate::strategy::MAX_SID_BYTES`].
    #[error("the logout token sid is not usable")]
    Sid,
}

/// Whether claims carry the back-channel logout event (a logout token's mark).
pub(super) fn has_logout_event(claims: &Map<String, Value>) -> bool {
    claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|events| events.contains_key(BACKCHANNEL_LOGOUT_EVENT))
}

impl Verifier {
    /// Verifies a logout token as of now, against the keys held now.
    pub fn verify_logout_token(&self, token: &str) -> Result<LogoutToken, LogoutTokenError> {
        self.verify_logout_token_at(token, super::now())
    }

    /// [`Verifier::verify_logout_token`], once more after a provider's key set was
    /// fetched again when no key verified it ([`Verifier::verify_fresh`]).
    pub async fn verify_logout_token_fresh(
        &self,
        token: &str,
    ) -> Result<LogoutToken, LogoutTokenError> {
        self.with_fresh_keys(
            || self.verify_logout_token(token),
            |e| {
                matches!(
                    e,
                    LogoutTokenError::Token(VerifyError::UnknownKey | VerifyError::Signature)
                )
            },
        )
        .await
    }

    /// Verifies a logout token as of `now` (unix seconds), by OIDC Back-Channel Logout
    /// 1.0 §2.6.
    pub fn verify_logout_token_at(
        &self,
        token: &str,
        now: i64,
    ) -> Result<LogoutToken, LogoutTokenError> {
        let (signing_input, header) = self.parse(token)?;
        // §2.4: `logout+jwt` is recommended; plain `JWT` (or no `typ`) is still seen.
        if let Some(typ) = &header.typ {
            if !same_media_type(typ, "JWT") && !same_media_type(typ, LOGOUT_TOKEN_TYPE) {
                return Err(LogoutTokenError::Type);
            }
        }
        let claims = self.signed_claims(token, &header)?;
        // exp (required), nbf, iat in the future, and iss / aud as configured: the ID
        // token rules of §2.6 step 3, which access tokens share.
        let registered = self.check_registered(&claims, now)?;
        // Required whether or not tokengate is configured to check their values.
        if !claims.get("iss").is_some_and(Value::is_string) {
            return Err(LogoutTokenError::NoIssuer);
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => !a.is_empty(),
            Some(Value::Array(items)) => {
                !items.is_empty()
                    && items
                        .iter()
                        .all(|i| i.as_str().is_some_and(|a| !a.is_empty()))
            }
            _ => false,
        };
        if !audience_ok {
            return Err(LogoutTokenError::NoAudience);
        }
        let issued_at = registered.issued_at.ok_or(LogoutTokenError::NoIssuedAt)?;
        let jti = match claims.get("jti") {
            Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_BYTES => j.clone(),
            _ => return Err(LogoutTokenError::NoJti),
        };
        let event_ok = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !event_ok {
            return Err(LogoutTokenError::Events);
        }
        if claims.contains_key("nonce") {
            return Err(LogoutTokenError::Nonce);
        }
        let sub = match claims.get("sub") {
            None => None,
            Some(Value::String(s)) if valid_user(s) => Some(s.clone()),
            Some(_) => return Err(LogoutTokenError::Subject),
        };
        let sid = match claims.get("sid") {
            None => None,
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= crate::strategy::MAX_SID_BYTES =>
            {
                Some(s.clone())
            }
            Some(_) => return Err(LogoutTokenError::Sid),
        };
        if sub.is_none() && sid.is_none() {
            return Err(LogoutTokenError::NoSubject);
        }
        Ok(LogoutToken {
            hash: TokenHash::of_signing_input(signing_input.as_bytes()),
            jti,
            sub,
            sid,
            issued_at,
            expires_at: registered.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::jwt::{now, KeySource, VerifierSettings};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A verifier as a strict access-token config would have it: its user claim,
    /// required claims and `typ` must not apply to logout tokens.
    fn verifier(issuer: Option<&str>, audience: &[&str]) -> Verifier {
        Verifier::new(Arc::new(
            crate::jwt::Keys::load(
                &KeySource::Secret(SECRET.to_vec()),
                Arc::new(VerifierSettings {
                    algorithms: vec![Algorithm::HS256],
                    issuer: issuer.map(String::from),
                    audience: audience.iter().map(|s| s.to_string()).collect(),
                    leeway: 30,
                    user_claim: "user_id".into(),
                    required_claims: vec![("token_type".into(), "access".into())],
                    required_typ: Some("at+jwt".into()),
                }),
            )
            .unwrap(),
        ))
    }

    fn mint_typed(claims: &Value, typ: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(String::from);
        encode(&header, claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
    }

    fn mint(claims: &Value) -> String {
        mint_typed(claims, Some("logout+jwt"))
    }

    fn good() -> Value {
        let n = now();
        json!({
            "iss": "https://idp",
            "aud": "api",
            "iat": n,
            "exp": n + 120,
            "jti": "j-1",
            "sub": "alice",
            "sid": "sid-1",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        })
    }

    fn with(changes: &[(&str, Option<Value>)]) -> Value {
        let mut claims = good();
        for (name, value) in changes {
            match value {
                Some(v) => claims[*name] = v.clone(),
                None => {
                    claims.as_object_mut().unwrap().remove(*name);
                }
            }
        }
        claims
    }

    #[test]
    fn a_good_logout_token_verifies_without_the_access_token_rules() {
        let v = verifier(Some("https://idp"), &["api"]);
        let t = v.verify_logout_token(&mint(&good())).unwrap();
        assert_eq!(t.jti, "j-1");
        assert_eq!(t.sub.as_deref(), Some("alice"));
        assert_eq!(t.sid.as_deref(), Some("sid-1"));
        // `typ` JWT (any case, with or without `application/`) or none at all.
        for typ in [Some("JWT"), Some("application/logout+JWT"), None] {
            assert!(
                v.verify_logout_token(&mint_typed(&good(), typ)).is_ok(),
                "{typ:?}"
            );
        }
        // sub alone and sid alone are enough.
        assert!(v
            .verify_logout_token(&mint(&with(&[("sid", None)])))
            .is_ok());
        assert!(v
            .verify_logout_token(&mint(&with(&[("sub", None)])))
            .is_ok());
        // `aud` as an array holding the configured audience.
        let aud = with(&[("aud", Some(json!(["other", "api"])))]);
        assert!(v.verify_logout_token(&mint(&aud)).is_ok());
    }

    #[test]
    fn every_rule_of_the_specification_is_checked() {
        let v = verifier(Some("https://idp"), &["api"]);
        let n = now();
        let cases: Vec<(Value, LogoutTokenError)> = vec![
            (
                with(&[("nonce", Some(json!("n")))]),
                LogoutTokenError::Nonce,
            ),
            (with(&[("events", None)]), LogoutTokenError::Events),
            (
                with(&[(
                    "events",
                    Some(json!({"http://schemas.openid.net/event/other": {}})),
                )]),
                LogoutTokenError::Events,
            ),
            (
                with(&[("events", Some(json!({BACKCHANNEL_LOGOUT_EVENT: "yes"})))]),
                LogoutTokenError::Events,
            ),
            (
                with(&[("events", Some(json!([BACKCHANNEL_LOGOUT_EVENT])))]),
                LogoutTokenError::Events,
            ),
            (
                with(&[("sub", None), ("sid", None)]),
                LogoutTokenError::NoSubject,
            ),
            (with(&[("jti", None)]), LogoutTokenError::NoJti),
            (with(&[("jti", Some(json!("")))]), LogoutTokenError::NoJti),
            (with(&[("jti", Some(json!(7)))]), LogoutTokenError::NoJti),
            (
                with(&[("jti", Some(json!("j".repeat(MAX_JTI_BYTES + 1))))]),
                LogoutTokenError::NoJti,
            ),
            (with(&[("iat", None)]), LogoutTokenError::NoIssuedAt),
            (
                with(&[("exp", None)]),
                LogoutTokenError::Token(VerifyError::MissingExp),
            ),
            (
                with(&[("exp", Some(json!(n - 60)))]),
                LogoutTokenError::Token(VerifyError::Expired),
            ),
            (
                with(&[("iat", Some(json!(n + 60)))]),
                LogoutTokenError::Token(VerifyError::IssuedInFuture),
            ),
            (
                with(&[("iss", Some(json!("https://evil")))]),
                LogoutTokenError::Token(VerifyError::Issuer),
            ),
            (
                with(&[("aud", Some(json!("web")))]),
                LogoutTokenError::Token(VerifyError::Audience),
            ),
            (
                with(&[("aud", None)]),
                LogoutTokenError::Token(VerifyError::Audience),
            ),
            (with(&[("sub", Some(json!(5)))]), LogoutTokenError::Subject),
            (with(&[("sub", Some(json!("")))]), LogoutTokenError::Subject),
            (with(&[("sid", Some(json!("")))]), LogoutTokenError::Sid),
            (with(&[("sid", Some(json!(["s"])))]), LogoutTokenError::Sid),
        ];
        for (claims, expected) in cases {
            assert_eq!(
                v.verify_logout_token(&mint(&claims)).unwrap_err(),
                expected,
                "{claims}"
            );
        }
        for typ in ["at+jwt", "secevent+jwt", "JWS"] {
            assert_eq!(
                v.verify_logout_token(&mint_typed(&good(), Some(typ)))
                    .unwrap_err(),
                LogoutTokenError::Type,
                "{typ}"
            );
        }
    }

    #[test]
    fn iss_and_aud_are_required_even_when_not_configured() {
        let v = verifier(None, &[]);
        assert!(v.verify_logout_token(&mint(&good())).is_ok());
        assert_eq!(
            v.verify_logout_token(&mint(&with(&[("iss", None)])))
                .unwrap_err(),
            LogoutTokenError::NoIssuer
        );
        for aud in [None, Some(json!([])), Some(json!(5)), Some(json!([""]))] {
            assert_eq!(
                v.verify_logout_token(&mint(&with(&[("aud", aud.clone())])))
                    .unwrap_err(),
                LogoutTokenError::NoAudience,
                "{aud:?}"
            );
        }
    }

    #[test]
    fn a_forged_or_foreign_signature_is_refused() {
        let v = verifier(None, &[]);
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx").unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify_logout_token(&forged).unwrap_err(),
            LogoutTokenError::Token(VerifyError::Signature)
        );
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &good(),
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.verify_logout_token(&hs384).unwrap_err(),
            LogoutTokenError::Token(VerifyError::Algorithm)
        );
    }

    #[test]
    fn a_logout_token_is_never_an_access_token() {
        // A lenient access-token config: only the logout shape can refuse it.
        let v = Verifier::load(
            &KeySource::Secret(SECRET.to_vec()),
            VerifierSettings {
                algorithms: vec![Algorithm::HS256],
                issuer: None,
                audience: Vec::new(),
                leeway: 30,
                user_claim: "sub".into(),
                required_claims: Vec::new(),
                required_typ: None,
            },
        )
        .unwrap();
        assert_eq!(v.verify(&mint(&good())).unwrap_err(), VerifyError::Type);
        let untyped = mint_typed(&good(), Some("JWT"));
        assert_eq!(v.verify(&untyped).unwrap_err(), VerifyError::Type);
        let mut plain = good();
        plain.as_object_mut().unwrap().remove("events");
        assert!(v.verify(&mint_typed(&plain, Some("JWT"))).is_ok());
    }
}
