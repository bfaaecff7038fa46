//! What one client connection may hold (SPEC §10): a place in its listener's budget of
//! open connections, a deadline for its first request head counted from accept, and a
//! socket whose writes give up on a client that stops reading ([`WriteDeadline`]).
//!
//! The deadline covers the bytes hyper-util reads to tell HTTP/1.1 from HTTP/2 and an
//! HTTP/2 connection that sends its preface and settings but never a request: a socket
//! that sends nothing, or too little, is closed when it passes. Later request heads are
//! hyper's to time (`header_read_timeout` on HTTP/1.1, keep-alive pings on HTTP/2).
//! [`crate::server`] applies both.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

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

/// A client connection's socket whose writes give up when the client reads nothing
/// for `timeout` (SPEC §10): a stalled write fails, hyper closes the connection, and
/// the backend connection streaming the response is released with it. Any progress
/// resets the clock, so a slow reader is not cut off.
#[derive(Debug)]
pub struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Running while a write is stalled.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a write step: clears the clock on progress, starts or checks it on a stall.
    fn judge<R>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match step {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let clock = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match clock.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing of the response in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.judge(cx, step)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.judge(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = Pin::new(&mut self.inner).poll_flush(cx);
        self.judge(cx, step)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
        drop(a);
        assert!(budget.take().is_some());
    }
}
