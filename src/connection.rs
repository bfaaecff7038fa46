//! What one client connection may hold (SPEC §10): a place in its listener's budget of
//! open connections, a deadline for its first request head counted from accept, an
//! idle timeout after that, and a socket whose writes give up on a client that stops
//! reading ([`WriteDeadline`]).
//!
//! [`Activity`] is what the two deadlines are judged on: when the connection was
//! accepted and when it last started a request. The first deadline covers the bytes
//! hyper-util reads to tell HTTP/1.1 from HTTP/2 and an HTTP/2 connection that sends
//! its preface and settings but never a request: a socket that sends nothing, or too
//! little, is closed when it passes. The idle timeout then closes, gracefully, a
//! connection that starts no request for as long (an HTTP/2 connection answers pings
//! for ever otherwise); responses still streaming finish first. Later HTTP/1.1 heads
//! are also hyper's to time (`header_read_timeout`, from the end of the previous
//! response). [`crate::server`] drives the connection against both.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

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

/// When a connection was accepted and when it last started a request.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    /// Milliseconds from `accepted` to the latest request, plus one; 0 before the first.
    last: AtomicU64,
    /// Told once, at the first request, so that a waiter re-arms for the idle timeout.
    first: Notify,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            accepted: Instant::now(),
            last: AtomicU64::new(0),
            first: Notify::new(),
        })
    }

    /// Notes that a request started.
    fn touch(&self) {
        let since = self.accepted.elapsed().as_millis() as u64;
        if self.last.swap(since + 1, Ordering::Relaxed) == 0 {
            self.first.notify_one();
        }
    }

    /// Resolves once the first request has started.
    pub async fn first_request(&self) {
        self.first.notified().await
    }

    /// When the connection's deadline passes: `first_request` after accept while it
    /// has sent no request, `idle` after its latest request since.
    pub fn deadline(&self, first_request: Duration, idle: Duration) -> Deadline {
        match self.last.load(Ordering::Relaxed) {
            0 => Deadline::FirstRequest(self.accepted + first_request),
            n => Deadline::Idle(self.accepted + Duration::from_millis(n - 1) + idle),
        }
    }
}

/// What a connection is waiting for, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Its first request head.
    FirstRequest(Instant),
    /// Another request, after the latest.
    Idle(Instant),
}

impl Deadline {
    /// The instant it passes.
    pub fn at(self) -> Instant {
        match self {
            Deadline::FirstRequest(at) | Deadline::Idle(at) => at,
        }
    }
}

/// A service that notes in an [`Activity`] each request it is given.
#[derive(Debug, Clone)]
pub struct Noting<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Noting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Noting<S> {
        Noting { inner, activity }
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
        self.activity.touch();
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

    #[tokio::test]
    async fn the_deadline_is_the_first_requests_then_the_idle_one_from_the_latest() {
        let activity = Activity::new();
        let (first, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(
            activity.deadline(first, idle),
            Deadline::FirstRequest(activity.accepted + first)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        activity.touch();
        let Deadline::Idle(at) = activity.deadline(first, idle) else {
            panic!("a request was seen");
        };
        assert!(at >= activity.accepted + Duration::from_millis(20) + idle);
        assert!(at <= Instant::now() + idle);
    }
}
