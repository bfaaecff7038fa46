//! What one client connection may hold (SPEC §10): a place in its listener's budget of
//! open connections, and a deadline for its first request head counted from accept.
//!
//! The deadline covers the bytes hyper-util reads to tell HTTP/1.1 from HTTP/2 and an
//! HTTP/2 connection that sends its preface and settings but never a request: a socket
//! that sends nothing, or too little, is closed when it passes. Later request heads are
//! hyper's to time (`header_read_timeout` on HTTP/1.1, keep-alive pings on HTTP/2).
//! [`crate::server`] applies both.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::service::Service;

/// The open connections of one listener, at most `max`.
#[derive(Debug)]
pub struct Budget {
    open: AtomicUsize,
    max: usize,
}

impl Budget {
    /// A budget of `max` open connections.
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more connection, or `None` when the listener is full.
    pub fn take(self: &Arc<Self>) -> Option<Place> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Place(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's place in its budget, given back when dropped.
#[derive(Debug)]
pub struct Place(Arc<Budget>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service that notes that a request head arrived, for the first-request deadline.
#[derive(Debug, Clone)]
pub struct Noting<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S> Noting<S> {
    /// Wraps `inner`; `seen` turns true at the first request.
    pub fn new(inner: S, seen: Arc<AtomicBool>) -> Noting<S> {
        Noting { inner, seen }
    }
}

impl<S, R> Service<R> for Noting<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        self.seen.store(true, Ordering::Release);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_max_places_and_takes_them_back() {
        let budget = Budget::new(2);
        let a = budget.take().unwrap();
        let _b = budget.take().unwrap();
        assert!(budget.take().is_none());
        assert_eq!(budget.open(), 2);
        drop(a);
        assert!(budget.take().is_some());
    }
}
