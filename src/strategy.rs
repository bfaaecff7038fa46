//! Revocation strategies: what "live" means (SPEC §1).
//!
//! The strategy is chosen once at start ([`StrategyKind`]) and held as a value; handlers
//! call [`Strategy::check`] and [`Strategy::admit`] and never ask which strategy is
//! running. Revocations go through [`crate::revocations`], which asks
//! [`Strategy::plan`] which rows a revocation changes. Rows live in the
//! [`crate::store`]; this module only decides which rows to read and write.
//!
//! # The cut-off and the second
//! `iat` has one-second resolution, so a cut-off (denylist `logout-all`, user-status
//! logout) is a second too. The rule: a token whose `iat` is **at or before** the
//! cut-off second is refused, so the token used to log out and every older token die at
//! once. A token that comes through a capture route after the cut-off was set is proof
//! of a newer login even when its `iat` is the cut-off second; such a token is recorded
//! as an exception (a `valid_token` row) and passes. A later cut-off deletes the
//! user's exceptions, so it kills them too.

use std::fmt;
use std::str::FromStr;

use crate::jwt::{now, VerifiedToken};
use crate::store::{Change, RevocationKind, Session, SharedStore, StoreError, TokenKind};

/// The three strategies of SPEC §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    /// Only tokens in `valid_token` pass.
    Allowlist,
    /// Tokens pass unless listed in `invalid_token` or issued before the user's cut-off.
    Denylist,
    /// Tokens pass unless issued before the user's logout (one row per user).
    UserStatus,
}

impl FromStr for StrategyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allowlist" => Ok(StrategyKind::Allowlist),
            "denylist" => Ok(StrategyKind::Denylist),
            "user-status" => Ok(StrategyKind::UserStatus),
            other => Err(format!(
                "{other:?} is not one of allowlist, denylist, user-status"
            )),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrategyKind::Allowlist => "allowlist",
            StrategyKind::Denylist => "denylist",
            StrategyKind::UserStatus => "user-status",
        })
    }
}

/// Whether a verified token may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It passes; the allowlist row when the strategy keeps one.
    Live(Option<Session>),
    /// It was revoked, or was never registered.
    Dead(DeadReason),
}

/// Why a verified token does not pass (logged; the client sees one generic message,
/// except for a missing `iat`, which only the issuer can fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Not in the allowlist: revoked, or never captured.
    Unknown,
    /// In the denylist.
    Revoked,
    /// Issued at or before the user's cut-off.
    CutOff,
    /// The strategy (named) needs `iat` and the token has none.
    NoIssuedAt(StrategyKind),
    /// A refresh token presented as a bearer token, or an access token presented as a
    /// refresh token (SPEC §15).
    WrongKind,
}

/// Request metadata recorded with a session.
#[derive(Debug, Clone, Default)]
pub struct SessionMeta {
    /// `User-Agent` of the login request.
    pub user_agent: Option<String>,
    /// The client address of the login request.
    pub client_addr: Option<String>,
}

/// Why a token could not be admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The strategy needs `iat` and the token has none.
    #[error("the token has no iat, which the {0} strategy needs")]
    NoIssuedAt(StrategyKind),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The strategy chosen at start, bound to the store.
#[derive(Clone)]
pub struct Strategy {
    kind: StrategyKind,
    store: SharedStore,
}

impl Strategy {
    /// Binds a strategy to a store.
    pub fn new(kind: StrategyKind, store: SharedStore) -> Strategy {
        Strategy { kind, store }
    }

    /// Which strategy this is.
    pub fn kind(&self) -> StrategyKind {
        self.kind
    }

    /// Whether this strategy keeps a list of sessions (only the allowlist does).
    pub fn keeps_sessions(&self) -> bool {
        self.kind == StrategyKind::Allowlist
    }

    /// Answers when the store is reachable (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// How many allowlist rows are live now (the live-sessions gauge).
    pub async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.store.count_sessions(now()).await
    }

    /// The store behind it, for the revocation door and the feed reader only: handlers
    /// go through [`crate::revocations::Revocations`].
    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Whether a verified token is live as an access (bearer) token.
    pub async fn check(&self, token: &VerifiedToken) -> Result<Liveness, StoreError> {
        self.check_as(token, TokenKind::Access).await
    }

    /// Whether a verified token is live as whichever kind it is, access or refresh, and
    /// which: for the standard endpoints, which take either (RFC 7009, RFC 7662).
    pub async fn check_any(
        &self,
        token: &VerifiedToken,
    ) -> Result<(TokenKind, Liveness), StoreError> {
        match self.check_as(token, TokenKind::Access).await? {
            Liveness::Dead(DeadReason::WrongKind) => Ok((
                TokenKind::Refresh,
                self.check_as(token, TokenKind::Refresh).await?,
            )),
            liveness => Ok((TokenKind::Access, liveness)),
        }
    }

    /// Whether a verified token is live as a token of `kind`. A store error is
    /// returned, never guessed. The session row comes back when there is one (the
    /// allowlist row; under the other strategies the row of a captured refresh token or
    /// of an exception), so that a refresh can join its session.
    pub async fn check_as(
        &self,
        token: &VerifiedToken,
        kind: TokenKind,
    ) -> Result<Liveness, StoreError> {
        if self.kind == StrategyKind::Allowlist {
            return Ok(match self.store.find_session(token.hash).await? {
                Some(session) if session.kind == kind => Liveness::Live(Some(session)),
                Some(_) => Liveness::Dead(DeadReason::WrongKind),
                None => Liveness::Dead(DeadReason::Unknown),
            });
        }
        let Some(iat) = token.issued_at else {
            return Ok(Liveness::Dead(DeadReason::NoIssuedAt(self.kind)));
        };
        if self.kind == StrategyKind::Denylist && self.store.is_denied(token.hash).await? {
            return Ok(Liveness::Dead(DeadReason::Revoked));
        }
        // A captured refresh token is known by its row: it is never a bearer token.
        let row = self.store.find_session(token.hash).await?;
        if row.as_ref().is_some_and(|s| s.kind != kind) {
            return Ok(Liveness::Dead(DeadReason::WrongKind));
        }
        match self.store.cutoff(&token.user).await? {
            // Captured after the cut-off: proof of a newer login (see module doc).
            Some(cutoff) if iat <= cutoff => Ok(match row {
                Some(session) => Liveness::Live(Some(session)),
                None => Liveness::Dead(DeadReason::CutOff),
            }),
            _ => Ok(Liveness::Live(row)),
        }
    }

    /// Registers an access token learnt by capture or by `tokens add` in a new session;
    /// returns the session row when one was written.
    pub async fn admit(
        &self,
        token: &VerifiedToken,
        meta: SessionMeta,
    ) -> Result<Option<Session>, AdmitError> {
        self.admit_as(token, meta, TokenKind::Access, None).await
    }

    /// Registers a token learnt by capture, as a token of `kind`, in
    /// the session `session_id` when it joins one (a refresh) or a new one; returns the
    /// row when one was written. Refresh tokens are written under every strategy, so
    /// that they are known as such (and, under the cut-off strategies, as captured after
    /// the last cut-off); access tokens under denylist and user-status only as an
    /// exception to a cut-off.
    pub async fn admit_as(
        &self,
        token: &VerifiedToken,
        meta: SessionMeta,
        kind: TokenKind,
        session_id: Option<String>,
    ) -> Result<Option<Session>, AdmitError> {
        let session = Session {
            token_hash: token.hash,
            session_id: session_id.unwrap_or_else(new_session_id),
            user_id: token.user.clone(),
            issued_at: token.issued_at,
            expires_at: token.expires_at,
            created_at: now(),
            user_agent: meta.user_agent,
            client_addr: meta.client_addr,
            kind,
            sid: sid_claim(token),
        };
        if self.kind == StrategyKind::Allowlist {
            return Ok(Some(self.store.insert_session(session).await?));
        }
        let iat = token.issued_at.ok_or(AdmitError::NoIssuedAt(self.kind))?;
        let cut_off = match self.store.cutoff(&token.user).await? {
            Some(cutoff) => iat <= cutoff,
            None => false,
        };
        if cut_off || kind == TokenKind::Refresh {
            Ok(Some(self.store.insert_session(session).await?))
        } else {
            Ok(None)
        }
    }

    /// The rows a revocation changes under this strategy, and what the feed calls it;
    /// `None` when the strategy has no rows for it (sessions by id outside the
    /// allowlist; one rotated token under user-status).
    pub fn plan(&self, target: &Target<'_>) -> Option<(Change, RevocationKind)> {
        Some(match (self.kind, target) {
            // `/logout`: the token's session, its refresh token included.
            (StrategyKind::Allowlist, Target::Token(token)) => (
                Change::DeleteTokenSession {
                    hash: token.hash,
                    user: token.user.clone(),
                },
                RevocationKind::Logout,
            ),
            // A refresh token rotated away: that one token.
            (StrategyKind::Allowlist, Target::Replaced(token)) => (
                Change::DeleteToken {
                    hash: token.hash,
                    user: token.user.clone(),
                },
                RevocationKind::Logout,
            ),
            (StrategyKind::Denylist, Target::Replaced(token)) => (
                Change::DenyToken {
                    hash: token.hash,
                    user: token.user.clone(),
                    expires_at: token.expires_at,
                },
                RevocationKind::Logout,
            ),
            // One row per user: no single token can be ended (it dies at the next cut-off).
            (StrategyKind::UserStatus, Target::Replaced(_)) => return None,
            (StrategyKind::Denylist, Target::Token(token)) => (
                Change::DenyToken {
                    hash: token.hash,
                    user: token.user.clone(),
                    expires_at: token.expires_at,
                },
                RevocationKind::Logout,
            ),
            // One row per user: this strategy cannot tell one token from all of them.
            (StrategyKind::UserStatus, Target::Token(token)) => cut_off(&token.user),
            // `/logout-all`, `tokens revoke --user`, `DELETE /admin/users/{id}/sessions`
            (StrategyKind::Allowlist, Target::User(user)) => (
                Change::DeleteUserSessions {
                    user: (*user).to_owned(),
                },
                RevocationKind::LogoutAll,
            ),
            (StrategyKind::Denylist | StrategyKind::UserStatus, Target::User(user)) => {
                cut_off(user)
            }
            // `DELETE /sessions/{id}`, `tokens revoke --session`, the admin API
            (StrategyKind::Allowlist, Target::Session { id, owner }) => (
                Change::DeleteSession {
                    id: (*id).to_owned(),
                    owner: owner.map(str::to_owned),
                },
                RevocationKind::Session,
            ),
            (_, Target::Session { .. }) => return None,
            // An OIDC back-channel logout by `sid`: the sessions whose tokens carried it.
            (StrategyKind::Allowlist, Target::Sid { sid, user }) => (
                Change::DeleteSidSessions {
                    sid: (*sid).to_owned(),
                    user: user.map(str::to_owned),
                },
                RevocationKind::Session,
            ),
            // No session list to find the `sid` in: the user's cut-off is the nearest
            // thing that ends them all (more than asked, never less); without a user,
            // nothing can be ended.
            (StrategyKind::Denylist | StrategyKind::UserStatus, Target::Sid { user, .. }) => {
                cut_off(user.as_ref()?)
            }
        })
    }
}

/// Longest `sid` claim recorded; a longer one is not kept (the session can then be
/// ended by its user, not by `sid`).
pub const MAX_SID_BYTES: usize = 1024;

/// The `sid` claim of a token (its identity provider's session, OpenID Connect
/// Front-/Back-Channel Logout), when it is a non-empty string of at most
/// [`MAX_SID_BYTES`].
pub fn sid_claim(token: &VerifiedToken) -> Option<String> {
    match token.claims.get("sid") {
        Some(serde_json::Value::String(sid)) if !sid.is_empty() && sid.len() <= MAX_SID_BYTES => {
            Some(sid.clone())
        }
        _ => None,
    }
}

/// What a revocation ends.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The token used (`/logout`).
    Token(&'a VerifiedToken),
    /// Every token of a user (logout-all).
    User(&'a str),
    /// A refresh token replaced by a rotated one (SPEC §15).
    Replaced(&'a VerifiedToken),
    /// One session, by id; only if it is `owner`'s when given.
    Session {
        /// The public session id.
        id: &'a str,
        /// The user it must belong to (`None`: the admin API and the CLI may end any).
        owner: Option<&'a str>,
    },
    /// Every session whose token carried this `sid` claim, only `user`'s when given
    /// (an OIDC back-channel logout token with `sid`).
    Sid {
        /// The identity provider's session id.
        sid: &'a str,
        /// The logout token's `sub`, when it has one.
        user: Option<&'a str>,
    },
}

impl Target<'_> {
    /// How the audit line names the request.
    pub fn action(&self) -> &'static str {
        match self {
            Target::Token(_) => "logout",
            Target::User(_) => "logout-all",
            Target::Replaced(_) => "refresh-rotated",
            Target::Session { .. } => "session",
            Target::Sid { .. } => "sid-logout",
        }
    }
}

/// A cut-off now: from here on every older token is dead, and the exceptions captured
/// before this moment go with it (in the same transaction).
fn cut_off(user: &str) -> (Change, RevocationKind) {
    (
        Change::CutOff {
            user: user.to_owned(),
            at: now(),
        },
        RevocationKind::Cutoff,
    )
}

/// A new random session id: 128 bits, hex.
fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
