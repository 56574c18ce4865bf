//! Touches off the reply path, bounded. A bound call records itself in its work session (call count,
//! idle TTL, deadline: [`broker::store::Store::touch`]) without making the call wait, so the touch
//! runs in a task; one task per call would let a slow store pile up tasks and memory without bound.
//! So:
//! - at most [`MAX_RUNNING`] touches talk to the store at once;
//! - the touches of one work session with the same links that wait for their turn are one: the
//!   waiting touch counts them and records them at once ([`broker::store::Store::touch_calls`]), so
//!   a work session has at most one touch waiting per kind of link, whatever its call rate;
//! - at most [`MAX_WAITING`] touches wait; past that a call's touch is dropped and logged (as when
//!   the store is unavailable: the call ran, its work session was not refreshed; its next call
//!   refreshes it).
//!
//! Who writes the queue, and why no call is counted twice or lost: a call adds itself to its key's
//! waiting touch, or queues one and spawns its task; the task takes its entry out when its turn
//! comes, and calls after that queue a new one. All under the queue's lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use broker::session::{Links, WorkSession};
use broker::store::Store;
use tokio::sync::Semaphore;
use tracing::{Instrument, Span};

use crate::metrics::{Metrics, StoreOp};

/// Most touches talking to the store at once.
pub const MAX_RUNNING: usize = 32;
/// Most touches waiting for their turn (one per work session and kind of link).
pub const MAX_WAITING: usize = 10_000;

/// The touches of this process: running, and waiting for their turn.
#[derive(Clone)]
pub struct Touches(Arc<Inner>);

struct Inner {
    waiting: Mutex<HashMap<String, Waiting>>,
    turns: Semaphore,
    max_waiting: usize,
    /// Touches are being dropped (logged once per episode).
    overflowing: AtomicBool,
}

/// A touch waiting for its turn, and the calls it records.
struct Waiting {
    session: WorkSession,
    links: Links,
    now_ms: u64,
    calls: u64,
}

impl Default for Touches {
    fn default() -> Self {
        Self::new(MAX_RUNNING, MAX_WAITING)
    }
}

impl Touches {
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        Self(Arc::new(Inner {
            waiting: Mutex::new(HashMap::new()),
            turns: Semaphore::new(max_running),
            max_waiting,
            overflowing: AtomicBool::new(false),
        }))
    }

    /// Records a call in `session` off the reply path: queued, or counted in the touch of the same
    /// work session and links already waiting. Runs in the caller's span.
    pub fn touch(
        &self,
        store: &Arc<dyn Store>,
        metrics: &Metrics,
        session: WorkSession,
        links: Links,
        now_ms: u64,
    ) {
        let key = key(&session, &links);
        {
            let Ok(mut waiting) = self.0.waiting.lock() else {
                return;
            };
            if let Some(queued) = waiting.get_mut(&key) {
                queued.calls += 1;
                queued.now_ms = queued.now_ms.max(now_ms);
                return;
            }
            if waiting.len() >= self.0.max_waiting {
                if !self.0.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        waiting = waiting.len(),
                        "too many touches wait for the store: calls run, their work sessions are not refreshed until it catches up"
                    );
                }
                return;
            }
            let queued = Waiting {
                session,
                links,
                now_ms,
                calls: 1,
            };
            waiting.insert(key.clone(), queued);
        }
        let (touches, store, metrics) = (self.clone(), store.clone(), metrics.clone());
        tokio::spawn(touches.run(key, store, metrics).instrument(Span::current()));
    }

    async fn run(self, key: String, store: Arc<dyn Store>, metrics: Metrics) {
        let _turn = self.0.turns.acquire().await;
        let taken = match self.0.waiting.lock() {
            Ok(mut waiting) => {
                let taken = waiting.remove(&key);
                if waiting.len() < self.0.max_waiting / 2
                    && self.0.overflowing.swap(false, Ordering::Relaxed)
                {
                    tracing::info!("touches caught up with the store");
                }
                taken
            }
            Err(_) => None,
        };
        let Some(Waiting {
            session,
            links,
            now_ms,
            calls,
        }) = taken
        else {
            return;
        };
        let touch = store.touch_calls(&session, &links, now_ms, calls);
        match metrics.store(StoreOp::Touch, touch).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(work_session = %session.id, calls, "the work session ended while its calls ran")
            }
            Err(error) => {
                tracing::warn!(%error, calls, "store unavailable on touch: the calls ran, their work session was not refreshed")
            }
        }
    }

    /// How many touches wait for their turn.
    pub fn waiting(&self) -> usize {
        self.0.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// Touches with the same key write the same keys the same way, but for their count: the work
/// session, whether they set or only count the MCP-session link (and which link they set), and the
/// conversation link they set.
fn key(session: &WorkSession, links: &Links) -> String {
    let mcp = match (&links.mcp_session, links.count_only) {
        (None, _) => String::new(),
        (Some(_), true) => "count".to_owned(),
        (Some(sid), false) => format!("link={sid}"),
    };
    let conversation = links
        .conversation
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    format!("{}:{}:{mcp}:{conversation}", session.principal, session.id)
}

#[cfg(test)]
mod tests;
