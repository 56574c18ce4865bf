//! Bounds on what clients can make the broker hold: how long a request body may take to arrive (one
//! total deadline from the end of the headers, not per chunk), and how many request-body bytes all
//! requests together may hold at once. Connections are bounded in [`crate::edge::server`].
//!
//! Every request body reaches the handlers as a [`RequestBody`]: the client's body with its deadline
//! and its share of the in-flight budget. When either runs out the body ends with an error, which the
//! handler meets while reading it (before anything is forwarded: handlers read the whole body first),
//! and the [`BodyGuard`] records why, so the front door answers 408 or 503 instead of the handler's
//! generic "could not be read". The bytes a request holds go back to the budget when the request is
//! done with them: when both its body and its guard are dropped. A body over budget is read to its end
//! and thrown away (bounded) before the 503, so the client reads the answer rather than a reset.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::backend::body::BoxError;
use crate::mcp::errors::ProxyError;

/// Request-body bytes all requests of a listener may hold at once.
#[derive(Debug)]
pub struct Inflight {
    limit: usize,
    used: AtomicUsize,
}

impl Inflight {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The limits every request body of one listener gets.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// From the end of the headers to the end of the body.
    pub timeout: Duration,
    /// Shared by every request; `None`: no bound.
    pub inflight: Option<Arc<Inflight>>,
    /// Most bytes one request is charged for (its largest acceptable body): bytes past it are only
    /// read to be thrown away (the 413 drain).
    pub per_request: usize,
}

impl BodyLimits {
    /// Wraps a client's body; the guard is the handler side's view of it. A declared length
    /// (`Content-Length`) is charged to the budget at once, so a request that cannot fit is cut
    /// before a byte of it is read (and a reader may size its buffer by it).
    pub fn wrap(&self, body: Incoming) -> RequestBody {
        let guard = Arc::new(BodyGuard {
            timeout: self.timeout,
            inflight: self.inflight.clone(),
            per_request: self.per_request,
            received: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            verdict: AtomicU8::new(FINE),
        });
        let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
        if !guard.hold(declared) {
            guard.cut(OVER_BUDGET);
        }
        RequestBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(self.timeout)),
            guard,
            drained: 0,
        }
    }
}

const FINE: u8 = 0;
const TIMED_OUT: u8 = 1;
const OVER_BUDGET: u8 = 2;

/// What became of one request's body, and the budget bytes it holds.
#[derive(Debug)]
pub struct BodyGuard {
    timeout: Duration,
    inflight: Option<Arc<Inflight>>,
    per_request: usize,
    /// Bytes of the body read so far.
    received: AtomicUsize,
    /// Bytes charged to the budget (given back on drop).
    held: AtomicUsize,
    verdict: AtomicU8,
}

impl BodyGuard {
    /// Why the body was cut, as the error the client gets; `None` when it was not.
    pub fn verdict(&self) -> Option<ProxyError> {
        match self.verdict.load(Ordering::Acquire) {
            TIMED_OUT => Some(ProxyError::BodyTimeout(self.timeout)),
            OVER_BUDGET => Some(ProxyError::Overloaded(
                "the broker is holding as many request bytes as it may; retry shortly",
            )),
            _ => None,
        }
    }

    /// `bytes` more of the body arrived; `false` when they do not fit in the budget.
    fn charge(&self, bytes: usize) -> bool {
        let received = self.received.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.hold(received)
    }

    /// Makes sure `total` bytes (at most the request's share) are charged; `false` when the budget
    /// cannot take them. Only the body's reader calls it, so `held` has one writer.
    fn hold(&self, total: usize) -> bool {
        let Some(inflight) = &self.inflight else {
            return true;
        };
        let wanted = total.min(self.per_request);
        let held = self.held.load(Ordering::Acquire);
        if wanted <= held {
            return true;
        }
        if !inflight.try_take(wanted - held) {
            return false;
        }
        self.held.store(wanted, Ordering::Release);
        true
    }

    fn cut(&self, why: u8) {
        let _ = self
            .verdict
            .compare_exchange(FINE, why, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        if let Some(inflight) = &self.inflight {
            inflight.give(*self.held.get_mut());
        }
    }
}

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("the broker holds as many request-body bytes as it may")]
    OverBudget,
}

/// A client's request body under its deadline and the in-flight budget.
pub struct RequestBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    guard: Arc<BodyGuard>,
    /// Bytes thrown away once over budget.
    drained: usize,
}

impl RequestBody {
    /// The guard, for whoever answers the request (see [`BodyGuard::verdict`]).
    pub fn guard(&self) -> Arc<BodyGuard> {
        self.guard.clone()
    }

    /// Over budget: reads the rest of the body and throws it away (nothing is held), up to
    /// [`DRAIN_BYTES`] and the body's deadline, then ends it with the error. A client still sending
    /// when the connection closes would see a reset instead of the 503 that follows.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let over = || Poll::Ready(Some(Err(BodyError::OverBudget.into())));
        while self.drained < DRAIN_BYTES {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.drained += frame.data_ref().map_or(0, Bytes::len);
                }
                Poll::Ready(_) => return over(),
                Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => return over(),
                Poll::Pending => return Poll::Pending,
            }
        }
        over()
    }
}

/// Most bytes of an over-budget body read and thrown away before the 503.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.guard.verdict.load(Ordering::Acquire) == OVER_BUDGET {
            return self.drain(cx);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, Bytes::len);
                if !self.guard.charge(size) {
                    self.guard.cut(OVER_BUDGET);
                    return self.drain(cx);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.guard.cut(TIMED_OUT);
                    let timeout = self.guard.timeout;
                    return Poll::Ready(Some(Err(BodyError::TimedOut(timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(inflight: &Arc<Inflight>, per_request: usize) -> BodyGuard {
        BodyGuard {
            timeout: Duration::from_secs(1),
            inflight: Some(inflight.clone()),
            per_request,
            received: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            verdict: AtomicU8::new(FINE),
        }
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let inflight = Arc::new(Inflight::new(100));
        let a = guard(&inflight, 1000);
        let b = guard(&inflight, 1000);
        let c = guard(&inflight, 1000);
        assert!(a.charge(60));
        assert!(!b.charge(50), "60 + 50 > 100");
        assert_eq!(inflight.used(), 60, "a refused charge takes nothing");
        assert!(c.charge(40));
        assert_eq!(inflight.used(), 100);
        drop(a);
        assert_eq!(inflight.used(), 40);
        assert!(c.charge(50));
        drop((b, c));
        assert_eq!(inflight.used(), 0);
    }

    #[test]
    fn a_request_is_charged_at_most_its_largest_body() {
        let inflight = Arc::new(Inflight::new(100));
        let drained = guard(&inflight, 30);
        assert!(drained.charge(20));
        assert!(drained.charge(1_000_000), "past 30 bytes nothing is kept");
        assert_eq!(inflight.used(), 30);
    }

    #[test]
    fn a_declared_length_is_charged_once() {
        let inflight = Arc::new(Inflight::new(100));
        let declared = guard(&inflight, 1000);
        assert!(declared.hold(80));
        assert_eq!(inflight.used(), 80);
        assert!(
            declared.charge(50) && declared.charge(30),
            "within what was declared"
        );
        assert_eq!(inflight.used(), 80);
        assert!(
            !declared.charge(40),
            "a body longer than declared pays for the rest"
        );
        let other = guard(&inflight, 1000);
        assert!(!other.hold(30));
        assert!(other.hold(20));
    }

    #[test]
    fn the_first_reason_wins() {
        let inflight = Arc::new(Inflight::new(1));
        let g = guard(&inflight, 10);
        assert!(g.verdict().is_none());
        g.cut(TIMED_OUT);
        g.cut(OVER_BUDGET);
        assert!(matches!(g.verdict(), Some(ProxyError::BodyTimeout(_))));
    }
}
