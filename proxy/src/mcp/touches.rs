//! Touches off the reply path, bounded and coalesced in time. A bound call records itself in its
//! work session (call count, idle TTL, deadline: [`broker::store::Store::touch_calls`]) without
//! making the call wait, so the touch runs in a task. And a work session's deadline needs no
//! per-call precision, so:
//! - a work session (with the same links) is refreshed at most once per refresh interval
//!   ([`broker::store::Lifetimes::refresh`], `min(5 s, idle TTL / 10, surface window / 10)`) by
//!   this replica: the first
//!   call after an interval sends its touch at once, the calls within the interval after it are
//!   counted and sent together when it ends, stamped with the time of the last of them (so the
//!   surface window and the idle TTL still run from the real last call). The store pushes each
//!   work session's finalization deadline one interval past its idle TTL, so a call counted here is
//!   covered by the touch before it even if this replica dies before sending it: a work session is
//!   finalized no earlier than its idle TTL after its last call, and at most one interval (plus the
//!   sweep) after that;
//! - at most [`MAX_RUNNING`] touches talk to the store at once; the touches of one key that wait
//!   for their turn are one ([`broker::store::Store::touch_calls`] records their count at once);
//! - at most [`MAX_WAITING`] keys are remembered; past that (after forgetting the ones refreshed
//!   more than an interval ago) a call's touch is dropped and logged (as when the store is
//!   unavailable: the call ran, its work session was not refreshed; its next call refreshes it).
//!
//! Who writes the map, and why no call is counted twice or lost: a call adds itself to its key's
//! entry under the map's lock, and schedules the entry's task when none is scheduled; the task takes
//! the count out (and marks when it sent it) under the same lock, so a call lands either in the
//! count that task sends or in the next one. A stopping process sends the counts still waiting
//! ([`Touches::flush`]); a killed one loses them (at most one interval's calls per work session),
//! while their activity is covered, as above.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::session::{Links, WorkSession};
use broker::store::Store;
use tokio::sync::Semaphore;
use tracing::{Instrument, Span};

use crate::metrics::{Metrics, StoreOp};

/// Most touches talking to the store at once.
pub const MAX_RUNNING: usize = 32;
/// Most keys (work session and kind of link) remembered: waiting, or refreshed within an interval.
pub const MAX_WAITING: usize = 10_000;

/// The longest refresh interval.
pub const MAX_REFRESH: Duration = Duration::from_secs(5);

/// The refresh interval: 5 s, or a tenth of a shorter idle TTL or surface window. The idle TTL's
/// bounds how late a work session may be finalized (a tenth of it); the window's, how stale the last
/// activity that an unkeyed call's continuity is judged by may be (`--surface-window`).
/// A window of 0 (unkeyed calls never continue) asks for no bound.
pub fn refresh_interval(idle: Duration, surface_window: Duration) -> Duration {
    let by_window = if surface_window.is_zero() {
        MAX_REFRESH
    } else {
        surface_window / 10
    };
    MAX_REFRESH.min(idle / 10).min(by_window)
}

/// The touches of this process: running, waiting, and when each key was last refreshed.
#[derive(Clone)]
pub struct Touches(Arc<Inner>);

struct Inner {
    waiting: Mutex<HashMap<String, Waiting>>,
    turns: Semaphore,
    max_waiting: usize,
    /// A key is refreshed at most once per this interval (zero: every call).
    interval: Duration,
    /// Touches are being dropped (logged once per episode).
    overflowing: AtomicBool,
}

/// One key's calls not sent yet, and when it was last sent.
struct Waiting {
    session: WorkSession,
    links: Links,
    now_ms: u64,
    calls: u64,
    /// When a touch of this key was last sent.
    sent_at: Option<Instant>,
    /// A task is scheduled to send `calls`.
    scheduled: bool,
}

impl Waiting {
    /// Forgettable: nothing to send, and its last refresh is an interval old.
    fn stale(&self, now: Instant, interval: Duration) -> bool {
        !self.scheduled
            && self
                .sent_at
                .is_none_or(|at| now.duration_since(at) >= interval)
    }
}

impl Default for Touches {
    fn default() -> Self {
        Self::new(MAX_RUNNING, MAX_WAITING, Duration::ZERO)
    }
}

impl Touches {
    pub fn new(max_running: usize, max_waiting: usize, interval: Duration) -> Self {
        Self(Arc::new(Inner {
            waiting: Mutex::new(HashMap::new()),
            turns: Semaphore::new(max_running),
            max_waiting,
            interval,
            overflowing: AtomicBool::new(false),
        }))
    }

    /// Records a call in `session` off the reply path: counted in its key's entry, sent at once
    /// when the key was not refreshed within the interval, else when the interval ends. Runs in the
    /// caller's span.
    pub fn touch(
        &self,
        store: &Arc<dyn Store>,
        metrics: &Metrics,
        session: WorkSession,
        links: Links,
        now_ms: u64,
    ) {
        let key = key(&session, &links);
        let interval = self.0.interval;
        let delay = {
            let Ok(mut waiting) = self.0.waiting.lock() else {
                return;
            };
            let now = Instant::now();
            let known = waiting.contains_key(&key);
            if !known && waiting.len() >= self.0.max_waiting {
                waiting.retain(|_, entry| !entry.stale(now, interval));
            }
            let full = waiting.len() >= self.0.max_waiting;
            match waiting.get_mut(&key) {
                Some(entry) => {
                    entry.calls += 1;
                    entry.now_ms = entry.now_ms.max(now_ms);
                    entry.session = session;
                    entry.links = links;
                    if entry.scheduled {
                        return;
                    }
                    entry.scheduled = true;
                    entry.sent_at.map_or(Duration::ZERO, |at| {
                        (at + interval).saturating_duration_since(now)
                    })
                }
                None if full => {
                    if !self.0.overflowing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            waiting = self.0.max_waiting,
                            "too many touches wait for the store: calls run, their work sessions are not refreshed until it catches up"
                        );
                    }
                    return;
                }
                None => {
                    let entry = Waiting {
                        session,
                        links,
                        now_ms,
                        calls: 1,
                        sent_at: None,
                        scheduled: true,
                    };
                    waiting.insert(key.clone(), entry);
                    Duration::ZERO
                }
            }
        };
        let (touches, store, metrics) = (self.clone(), store.clone(), metrics.clone());
        tokio::spawn(
            touches
                .run(key, delay, store, metrics)
                .instrument(Span::current()),
        );
    }

    async fn run(self, key: String, delay: Duration, store: Arc<dyn Store>, metrics: Metrics) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _turn = self.0.turns.acquire().await;
        let taken = match self.0.waiting.lock() {
            Ok(mut waiting) => {
                let taken = waiting.get_mut(&key).map(|entry| {
                    entry.scheduled = false;
                    entry.sent_at = Some(Instant::now());
                    let calls = std::mem::take(&mut entry.calls);
                    (
                        entry.session.clone(),
                        entry.links.clone(),
                        entry.now_ms,
                        calls,
                    )
                });
                if waiting.len() < self.0.max_waiting / 2
                    && self.0.overflowing.swap(false, Ordering::Relaxed)
                {
                    tracing::info!("touches caught up with the store");
                }
                taken
            }
            Err(_) => None,
        };
        let Some((session, links, now_ms, calls)) = taken.filter(|t| t.3 > 0) else {
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

    /// Sends every count still waiting, now, whatever its interval: a stopping replica's last
    /// calls (their scheduled tasks then find nothing left to send). Returns when the store took
    /// them (or refused them: logged, as any touch).
    pub async fn flush(&self, store: &Arc<dyn Store>, metrics: &Metrics) {
        let pending: Vec<(WorkSession, Links, u64, u64)> = match self.0.waiting.lock() {
            Ok(mut waiting) => {
                let now = Instant::now();
                waiting
                    .values_mut()
                    .filter(|entry| entry.calls > 0)
                    .map(|entry| {
                        entry.sent_at = Some(now);
                        let calls = std::mem::take(&mut entry.calls);
                        (
                            entry.session.clone(),
                            entry.links.clone(),
                            entry.now_ms,
                            calls,
                        )
                    })
                    .collect()
            }
            Err(_) => return,
        };
        if !pending.is_empty() {
            tracing::info!(
                work_sessions = pending.len(),
                "sending the calls counted but not sent yet"
            );
        }
        for (session, links, now_ms, calls) in pending {
            let touch = store.touch_calls(&session, &links, now_ms, calls);
            if let Err(error) = metrics.store(StoreOp::Touch, touch).await {
                tracing::warn!(%error, calls, "store unavailable on the last touch: the calls ran, their count is lost");
            }
        }
    }

    /// How many calls wait to be sent, over all keys.
    pub fn waiting(&self) -> usize {
        self.0
            .waiting
            .lock()
            .map(|w| w.values().filter(|e| e.calls > 0).count())
            .unwrap_or(0)
    }

    /// The refresh interval.
    pub fn interval(&self) -> Duration {
        self.0.interval
    }
}

/// Touches with the same key write the same keys the same way, but for their count: the work
/// session, whether they set or only count the MCP-session link (and which link they set), and the
/// conversation link they set.
fn key(session: &WorkSession, links: &Links) -> String {
    use std::fmt::Write as _;
    // One allocation: this runs on every call.
    let mut key = String::with_capacity(160);
    let _ = write!(key, "{}:{}:", session.principal, session.id);
    match (&links.mcp_session, links.count_only) {
        (None, _) => {}
        (Some(_), true) => key.push_str("count"),
        (Some(sid), false) => {
            let _ = write!(key, "link={sid}");
        }
    }
    key.push(':');
    if let Some(conversation) = &links.conversation {
        let _ = write!(key, "{conversation}");
    }
    key
}

#[cfg(test)]
mod tests;
