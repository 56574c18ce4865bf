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
use serde_json::Value;

use crate::app::App;
use crate::backend::{self, BackendError};
use crate::caller::Caller;
use crate::forward::backend_ref;
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
/// the callers waiting for it get. An entry lives only while its opening runs.
#[derive(Default)]
pub struct Openings(Mutex<HashMap<String, Slot>>);

impl Openings {
    fn slot(&self, key: &str) -> Option<Slot> {
        let mut map = self.0.lock().ok()?;
        Some(map.entry(key.to_owned()).or_default().clone())
    }

    fn release(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// Runs `open` once for concurrent callers with the same `key`: the first opens, the ones
    /// waiting meanwhile get its session (unless it is `stale`, the one that just failed), and if it
    /// failed they try themselves.
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
        let mut opened = slot.lock().await;
        if let Some(session) = opened.as_ref()
            && Some(session) != stale
        {
            return Ok(session.clone()); // a concurrent caller opened it meanwhile
        }
        let result = open().await;
        if let Ok(session) = &result {
            *opened = Some(session.clone());
        }
        drop(opened);
        self.release(key);
        result
    }
}

/// The backend session for `work`'s project. `replay`: select the project on a new one (false for
/// the select call itself). `forgotten`: the recorded one answered 404; open another.
pub async fn session_for(
    app: &Arc<App>,
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
    app: &Arc<App>,
    caller: &Caller,
    ini: &Value,
    work: &WorkSession,
    replay: bool,
    protocol: Option<&str>,
) -> Result<BackendSessionId, Error> {
    app.metrics.reinitialization(Reinit::WorkSession);
    let opened = backend::open(app, caller.own_request_headers(), ini)
        .await
        .map_err(Error::Open)?;
    if !replay {
        return Ok(opened.session);
    }
    let version = opened.protocol_version.as_deref().or(protocol);
    let replayed = backend::replay(
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
