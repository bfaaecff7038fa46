//! tokengate: an authentication sidecar that makes JWTs revocable.
//!
//! A reverse proxy in front of an unmodified backend. It lets through only requests
//! whose JWT verifies *and* is still live in its token store, tells the backend who the
//! caller is in an injected header, and learns issued tokens by watching login
//! responses. `/logout` and `/logout-all` revoke tokens before they expire.
//!
//! ```text
//!  client ──▶ gate (path check, header hygiene, route, authenticate) ──▶ proxy ──▶ backend
//!                         │                                              ▲
//!                      strategy ──▶ store (SQLite | PostgreSQL)   capture ◀──┘ login responses
//! ```
//!
//! # Layout
//! - [`cli`]: subcommands (serve, check-config, tokens, prune, demo).
//! - [`config`]: the TOML file → a validated [`config::Config`], every error at load.
//! - [`jwt`]: verification → a [`jwt::VerifiedToken`]; where keys come from and the
//!   current set (`jwt/keys.rs`, a provider's JWKS refreshed in the background),
//!   fetching a provider's documents (`jwt/fetch.rs`), and OIDC logout tokens
//!   (`jwt/logout.rs`).
//! - [`extract`]: reading a request's token from its configured sources.
//! - [`strategy`]: allowlist / denylist / user-status: what "live" means.
//! - [`rules`]: per-route `[[rules]]` (scopes, claims) and what a token satisfies.
//! - [`revocations`]: the one door for revoking, listing sessions and pruning: the
//!   feed row, the cache, the metric and the audit line in one place.
//! - [`cache`]: the verdict cache and its staleness clock (SPEC §9).
//! - [`feed`]: the revocation feed reader that keeps the cache exact.
//! - [`idle`]: the last use of sessions and the sweep that revokes idle ones.
//! - [`store`]: the [`store::TokenStore`] trait; SQLite (one pod) and PostgreSQL
//!   (shared by replicas) implementations, with what they share in `store/schema.rs`.
//! - [`capture`]: learning tokens from login responses.
//! - [`gate`]: the request pipeline, step by step, and the refusal → response mapping.
//! - [`forward_auth`]: answering an ingress's authorization subrequest (nginx
//!   `auth_request`, Traefik ForwardAuth, Envoy `ext_authz`).
//! - [`backchannel`]: OIDC back-channel logout, an identity provider ending sessions.
//! - [`context`]: what is known about a connection and a request, worked out once.
//! - [`proxy`]: header hygiene (`proxy/headers.rs`) and the backend connections
//!   (`proxy/upstream.rs`).
//! - [`admin`]: health, readiness, metrics.
//! - [`server`]: listeners, graceful shutdown, background prune.
//! - [`transport`]: TCP or TLS on the public listener.
//! - [`tunnel`]: upgraded connections (WebSockets) tunnelled to the backend, closed when
//!   the token that opened them is revoked or expires.
//! - [`connection`]: what one client connection may hold: a place in its listener's
//!   budget, a deadline for its first request, an idle timeout.
//! - [`app`]: the shared state: what is built once at start, and the policy (config,
//!   keys, header rules) a reload swaps.
//! - [`reload`]: SIGHUP and `server.watch_config`.
//! - [`body`], [`form`], [`metrics`], [`timefmt`]: small shared pieces.
//! - [`demo`]: the walkthrough's sample backend.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod backchannel;
pub mod body;
pub mod cache;
pub mod capture;
pub mod cli;
pub mod config;
pub mod connection;
pub mod context;
pub mod demo;
pub mod extract;
pub mod feed;
pub mod form;
pub mod forward_auth;
pub mod gate;
pub mod idle;
pub mod jwt;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod revocations;
pub mod rules;
pub mod server;
pub mod store;
pub mod strategy;
pub mod timefmt;
pub mod transport;
pub mod tunnel;
