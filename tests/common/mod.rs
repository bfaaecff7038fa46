//! The end-to-end harness: a real backend, a real tokengate and a real HTTP client, all
//! on port-0 listeners, with a real SQLite file in a temporary directory.
//!
//! - [`backend`]: the [`Backend`] records every request it receives, so a test can prove
//!   that a refusal never reached it. Its `/login*` routes issue tokens like an
//!   unmodified backend.
//! - [`gate`]: [`Gate`] runs tokengate in-process from a TOML config (`{backend}` and
//!   `{db}` are filled in), and can be stopped and restarted on the same database.
//! - [`client`] and [`raw`] are the clients: hyper for HTTP, a TCP socket for framing.
//! - [`process`]: the `tokengate` binary as a child process.
//! - [`tokens`]: claims and signed tokens; [`pg`]: the PostgreSQL server of the tests.
//! - [`wait`]: deadlines for polling waits ([`eventually`]).

#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod client;
pub mod gate;
pub mod pg;
pub mod process;
pub mod raw;
pub mod tokens;
pub mod wait;

pub use backend::*;
pub use client::*;
pub use gate::*;
pub use pg::*;
pub use process::*;
pub use raw::*;
pub use tokens::*;
pub use wait::*;
