//! The backend session a bound call runs on: the one its work session recorded for its project on
//! this upstream, else a new one, opened with the client's `initialize` params and the project
//! selected on it, then recorded ([`broker::store::Store::set_work_backend`]).
//!
//! Why concurrent calls cannot run on the wrong project: a backend session found here was opened
//! for exactly this work session's project and is never sent a select of another (see
//! [`broker::session::BackendSessions`]); the client's own backend session, which other traffic
//! uses, never gets a project at all. So no call can switch a backend session under another.
//!
//! Concurrent first calls of one work session on one replica open one backend session, not one
//! each: [`Openings`] lets the first open it while the others wait for its result. Across replicas
//! (each with its own upstream) there is nothing to share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use broker::ids::BackendSessionId;
use broker::session::{BackendSessions, WorkSession};
use broker::store::BackendRef;
use serde_json::Value;

use crate::backend::sessions::{self, BackendError};
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::metrics::{Reinit, StoreOp};

/// Why no backend session could be prepared.
#[derive(Debug)]
pub enum Error {
    /// Opening one failed.
    Open(BackendError),
    /// One was opened but the backend refused to select the project on it.
    Replay(BackendError),
}

type Slot = Arc<tokio::sync::Mutex<Option<BackendSessionId>>>;

/// Backend sessions being opened right now, by work session and field: who opens one, and what
/// the callers waiting for it get. An entry lives while a caller holds it ([`Hold`]): the opener,
/// and the callers that came while it opened.
#[derive(Default)]
pub struct Openings(Mutex<HashMap<String, Slot>>);

/// One caller's hold on a key's slot. Dropped however the caller ends (it returned, failed, or was
/// cancelled mid-open because its client went away), the last holder removes the entry, so no
/// slot outlives its callers.
///
/// Why no caller can be left without the entry it joined: [`Openings::slot`] clones the slot under
/// the map's lock and the drop checks the count under the same lock, so a caller joins either
/// before the check (the count says so, the entry stays) or after the removal (it makes a new one).
struct Hold<'a> {
    openings: &'a Openings,
    key: &'a str,
    slot: Slot,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let Ok(mut map) = self.openings.0.lock() else {
            return;
        };
        // Two: the map's and this hold's.
        if map
            .get(self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            && Arc::strong_count(&self.slot) == 2
        {
            map.remove(self.key);
        }
    }
}

impl Openings {
    fn slot(&self, key: &str) -> Option<Slot> {
        let mut map = self.0.lock().ok()?;
        Some(map.entry(key.to_owned()).or_default().clone())
    }

    /// Runs `open` once for concurrent callers with the same `key`: the first opens, the ones
    /// waiting meanwhile get its session (unless it is `stale`, the one that just failed), and if it
    /// failed (or its caller went away) the next one tries itself.
    pub(crate) async fn once<E, F, Fut>(
        &self,
        key: &str,
        stale: Option<&BackendSessionId>,
        open: F,
    ) -> Result<BackendSessionId, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BackendSessionId, E>>,
    {
        let Some(slot) = self.slot(key) else {
            return open().await;
        };
        // Declared before the guard, so it drops after it: the entry goes once the lock is free.
        let hold = Hold {
            openings: self,
            key,
            slot,
        };
        let mut opened = hold.slot.lock().await;
        if let Some(session) = opened.as_ref()
            && Some(session) != stale
        {
            return Ok(session.clone()); // a concurrent caller opened it meanwhile
        }
        let result = open().await;
        if let Ok(session) = &result {
            *opened = Some(session.clone());
        }
        result
    }

    /// How many keys have an entry.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|map| map.len()).unwrap_or(usize::MAX)
    }
}

/// The backend session for `work`'s project. `replay`: select the project on a new one (false for
/// the select call itself). `forgotten`: the recorded one answered 404; open another.
pub async fn session_for(
    app: &Arc<Mcp>,
    caller: &Caller,
    ini: &Value,
    work: &WorkSession,
    replay: bool,
    forgotten: bool,
    protocol: Option<&str>,
) -> Result<BackendSessionId, Error> {
    let recorded = work.backends.get(&app.upstream_id, &work.project);
    if let (false, Some(session)) = (forgotten, recorded) {
        return Ok(session.clone());
    }
    if !replay {
        // A select opens its own: it selects the project itself, and binds it when it succeeds.
        return open(app, caller, ini, work, false, protocol).await;
    }
    let key = format!(
        "{}:{}:{}",
        work.principal,
        work.id,
        BackendSessions::field(&app.upstream_id, &work.project)
    );
    app.openings
        .once(&key, recorded, || {
            open(app, caller, ini, work, true, protocol)
        })
        .await
}

async fn open(
    app: &Arc<Mcp>,
    caller: &Caller,
    ini: &Value,
    work: &WorkSession,
    replay: bool,
    protocol: Option<&str>,
) -> Result<BackendSessionId, Error> {
    app.metrics.reinitialization(Reinit::WorkSession);
    let opened = sessions::open(app, caller.own_request_headers(), ini)
        .await
        .map_err(Error::Open)?;
    if !replay {
        return Ok(opened.session);
    }
    let version = opened.protocol_version.as_deref().or(protocol);
    let replayed = sessions::replay(
        app,
        caller.own_request_headers(),
        &opened.session,
        version,
        work,
    )
    .await;
    app.metrics.replay(replayed.is_ok());
    replayed.map_err(Error::Replay)?;
    let reference = backend_ref(app, &opened.session);
    let record = app.store.set_work_backend(work, &reference);
    match app.metrics.store(StoreOp::SetWorkBackend, record).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(work_session = %work.id, "the work session ended meanwhile; its backend session is not recorded")
        }
        Err(error) => {
            tracing::warn!(%error, "could not record the backend session; the next call may open another")
        }
    }
    Ok(opened.session)
}

/// The record of `session` on this replica's upstream.
pub fn backend_ref(app: &Mcp, session: &BackendSessionId) -> BackendRef {
    BackendRef {
        upstream: app.upstream_id.clone(),
        session: session.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn session(id: &str) -> BackendSessionId {
        BackendSessionId::parse(id).expect("session id")
    }

    const SHORT: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn an_opener_cancelled_mid_open_leaves_no_slot() {
        let openings = Openings::default();
        let cancelled = tokio::time::timeout(
            SHORT,
            openings.once("k", None, pending::<Result<BackendSessionId, ()>>),
        )
        .await;
        assert!(cancelled.is_err(), "the opener never finishes");
        assert_eq!(openings.len(), 0);
        // The next caller opens afresh.
        let next = openings.once("k", None, || async { Ok::<_, ()>(session("b")) });
        assert_eq!(next.await, Ok(session("b")));
        assert_eq!(openings.len(), 0);
    }

    #[tokio::test]
    async fn a_waiter_opens_itself_when_the_opener_is_cancelled_and_then_no_slot_is_left() {
        let openings = Arc::new(Openings::default());
        let opener = tokio::spawn({
            let openings = openings.clone();
            async move {
                openings
                    .once("k", None, pending::<Result<BackendSessionId, ()>>)
                    .await
            }
        });
        tokio::time::sleep(SHORT).await; // the opener holds the slot
        let opened = Arc::new(AtomicUsize::new(0));
        let waiter = tokio::spawn({
            let (openings, opened) = (openings.clone(), opened.clone());
            async move {
                openings
                    .once("k", None, || async move {
                        opened.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(session("w"))
                    })
                    .await
            }
        });
        tokio::time::sleep(SHORT).await;
        assert!(!waiter.is_finished(), "the waiter waits for the opener");
        assert_eq!(openings.len(), 1);
        opener.abort();
        assert!(opener.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(waiter.await.ok(), Some(Ok(session("w"))));
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(openings.len(), 0);
    }

    #[tokio::test]
    async fn waiters_get_the_openers_session_and_a_cancelled_waiter_leaves_no_slot() {
        let openings = Arc::new(Openings::default());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let opener = tokio::spawn({
            let openings = openings.clone();
            async move {
                openings
                    .once("k", None, || async move {
                        let _ = released.await;
                        Ok::<_, ()>(session("o"))
                    })
                    .await
            }
        });
        tokio::time::sleep(SHORT).await;
        // One waiter is cancelled while it waits, another waits to the end.
        let cancelled = tokio::time::timeout(
            SHORT,
            openings.once("k", None, || async { Ok::<_, ()>(session("never")) }),
        )
        .await;
        assert!(cancelled.is_err());
        let waiter = tokio::spawn({
            let openings = openings.clone();
            async move {
                openings
                    .once("k", None, || async { Ok::<_, ()>(session("never")) })
                    .await
            }
        });
        tokio::time::sleep(SHORT).await;
        let _ = release.send(());
        assert_eq!(opener.await.ok(), Some(Ok(session("o"))));
        assert_eq!(waiter.await.ok(), Some(Ok(session("o"))));
        assert_eq!(openings.len(), 0);
    }
}
