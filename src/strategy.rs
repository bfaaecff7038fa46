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
use crate::store::{Change, RevocationKind, Session, SharedStore, StoreError};

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

    /// Whether a verified token is live. A store error is returned, never guessed.
    pub async fn check(&self, token: &VerifiedToken) -> Result<Liveness, StoreError> {
        match self.kind {
            StrategyKind::Allowlist => Ok(match self.store.find_session(token.hash).await? {
                Some(session) => Liveness::Live(Some(session)),
                None => Liveness::Dead(DeadReason::Unknown),
            }),
            StrategyKind::Denylist => {
                if token.issued_at.is_none() {
                    return Ok(Liveness::Dead(DeadReason::NoIssuedAt(self.kind)));
                }
                if self.store.is_denied(token.hash).await? {
                    return Ok(Liveness::Dead(DeadReason::Revoked));
                }
                self.check_cutoff(token).await
            }
            StrategyKind::UserStatus => {
                if token.issued_at.is_none() {
                    return Ok(Liveness::Dead(DeadReason::NoIssuedAt(self.kind)));
                }
                self.check_cutoff(token).await
            }
        }
    }

    async fn check_cutoff(&self, token: &VerifiedToken) -> Result<Liveness, StoreError> {
        let iat = token.issued_at.unwrap_or(i64::MIN);
        match self.store.cutoff(&token.user).await? {
            Some(cutoff) if iat <= cutoff => {
                Ok(match self.store.find_session(token.hash).await? {
                    // Captured after the cut-off: proof of a newer login (see module doc).
                    Some(session) => Liveness::Live(Some(session)),
                    None => Liveness::Dead(DeadReason::CutOff),
                })
            }
            _ => Ok(Liveness::Live(None)),
        }
    }

    /// Registers a token learnt by capture or by `tokens add`; returns the session row
    /// when one was written.
    pub async fn admit(
        &self,
        token: &VerifiedToken,
        meta: SessionMeta,
    ) -> Result<Option<Session>, AdmitError> {
        let session = Session {
            token_hash: token.hash,
            session_id: new_session_id(),
            user_id: token.user.clone(),
            issued_at: token.issued_at,
            expires_at: token.expires_at,
            created_at: now(),
            user_agent: meta.user_agent,
            client_addr: meta.client_addr,
        };
        match self.kind {
            StrategyKind::Allowlist => Ok(Some(self.store.insert_session(session).await?)),
            StrategyKind::Denylist | StrategyKind::UserStatus => {
                let iat = token.issued_at.ok_or(AdmitError::NoIssuedAt(self.kind))?;
                match self.store.cutoff(&token.user).await? {
                    Some(cutoff) if iat <= cutoff => {
                        Ok(Some(self.store.insert_session(session).await?))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// The rows a revocation changes under this strategy, and what the feed calls it;
    /// `None` when the strategy keeps no sessions to revoke by id.
    pub fn plan(&self, target: &Target<'_>) -> Option<(Change, RevocationKind)> {
        Some(match (self.kind, target) {
            // `/logout`
            (StrategyKind::Allowlist, Target::Token(token)) => (
                Change::DeleteToken {
                    hash: token.hash,
                    user: token.user.clone(),
                },
                RevocationKind::Logout,
            ),
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
        })
    }
}

/// What a revocation ends.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The token used (`/logout`).
    Token(&'a VerifiedToken),
    /// Every token of a user (logout-all).
    User(&'a str),
    /// One session, by id; only if it is `owner`'s when given.
    Session {
        /// The public session id.
        id: &'a str,
        /// The user it must belong to (`None`: the admin API and the CLI may end any).
        owner: Option<&'a str>,
    },
}

impl Target<'_> {
    /// How the audit line names the request.
    pub fn action(&self) -> &'static str {
        match self {
            Target::Token(_) => "logout",
            Target::User(_) => "logout-all",
            Target::Session { .. } => "session",
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
