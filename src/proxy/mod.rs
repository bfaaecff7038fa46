//! Forwarding: what goes to the backend and what comes back.
//!
//! [`headers`] holds every header rule of SPEC §5 step 2 and the forwarding paragraph,
//! as two calls (sanitize the inbound request, prepare the upstream one); [`upstream`]
//! owns the backend connections. Deciding *whether* to forward is [`crate::gate`]'s job.

pub mod headers;
pub mod upstream;

pub use headers::{
    normalize_header_name, HeaderPolicy, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_REQUEST_ID,
};
pub use upstream::{Upstream, UpstreamError, UpstreamLink};
