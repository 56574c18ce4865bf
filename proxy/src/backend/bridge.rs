//! The bridge: modern (2026-07-28, sessionless) clients in front of a legacy or stateful backend.
//!
//! What the backend speaks is learned once ([`Profile`], kept for [`PROFILE_TTL`] and learned again
//! when the backend forgets a session, i.e. restarted): a `server/discover` (does it offer a modern
//! revision?) and a legacy `initialize` (does it hand out session ids? what are its capabilities,
//! server info and instructions?). The probe's own backend session is closed at once.
//!
//! No lock is held across the probe's round trips: the profile sits behind a plain mutex held only
//! to copy it, and one probe at a time runs under a separate single-flight lock. A request that
//! finds a fresh profile never waits; one that finds it expired while another request probes uses
//! the expired one meanwhile; only a request with no profile at all (the first, or the first after
//! the backend restarted) waits for the probe under way.
//!
//! A bridged request runs on legacy backend sessions opened with an `initialize` built from the
//! request's `_meta`: bound calls on their work session's backend session (the same state model as
//! legacy clients, [`crate::mcp::work_backend`]), everything else on one backend session per principal
//! (never given a project, like a legacy client's own), kept in [`Bridge`]. Who writes that map:
//! any request of the principal that had to open or re-open it; every candidate is a project-less
//! session of that principal, so whichever write wins is right.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker::ids::{BackendSessionId, PrincipalId};
use broker::mcp;
use broker::modern::{self, BackendEras};
use http::Method;
use http::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::backend::headers::{MCP_METHOD, MCP_SESSION_ID};
use crate::backend::outbound::{self, UpstreamRequest};
use crate::backend::sessions::{self, BackendError};
use crate::backend::upstream::{Upstream, UpstreamError};

/// How long a learned profile is trusted.
pub const PROFILE_TTL: Duration = Duration::from_secs(60);
/// The legacy revision the broker offers a backend when it asks on its own.
pub const LEGACY_VERSION: &str = "2025-11-25";
/// Most principals whose bridged backend session is remembered (then the map starts over).
const MAX_OWN_SESSIONS: usize = 10_000;

/// What the backend speaks.
#[derive(Debug, Clone)]
pub struct Profile {
    pub eras: BackendEras,
    /// Its `initialize` result (capabilities, serverInfo, instructions), when it answered one.
    pub initialize: Option<Value>,
    /// Its `server/discover` result, when it answered one offering a modern revision.
    pub discover: Option<Value>,
    /// The legacy revision its `initialize` agreed on.
    pub legacy_version: String,
}

/// A modern client's request, bridged: how to open legacy backend sessions for it.
#[derive(Debug, Clone)]
pub struct Bridged {
    /// The `initialize` params built from the request's `_meta`.
    pub ini: Value,
    /// The legacy revision to speak to the backend.
    pub legacy_version: String,
}

/// The bridge's state in one broker process.
#[derive(Default)]
pub struct Bridge {
    profile: Mutex<Learned>,
    /// Held by the one request probing the backend (single flight); never by readers.
    probing: tokio::sync::Mutex<()>,
    own: Mutex<HashMap<PrincipalId, BackendSessionId>>,
}

/// The profile last learned, and how many times it was forgotten: a probe that started before a
/// [`Bridge::forget_profile`] may have asked the backend before it restarted, so its result is not
/// kept. Written only under [`Bridge::probing`] (a probe) or by a forget, which only clears it.
#[derive(Default)]
struct Learned {
    profile: Option<(Profile, Instant)>,
    forgotten: u64,
}

impl Profile {
    /// It speaks only 2026-07-28: it offers it and refuses the legacy handshake.
    pub fn modern_only(&self) -> bool {
        self.eras.modern && self.initialize.is_none()
    }
}

impl Bridge {
    /// The backend's profile, learned on first use and again after [`PROFILE_TTL`].
    pub async fn profile(&self, app: &Backend) -> Result<Profile, BackendError> {
        self.profile_or_probe(|| probe(app)).await
    }

    async fn profile_or_probe<F, Fut>(&self, probe: F) -> Result<Profile, BackendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Profile, BackendError>>,
    {
        let expired = match self.learned().0 {
            Some((profile, true)) => return Ok(profile),
            Some((profile, false)) => Some(profile),
            None => None,
        };
        let probing = match (expired, self.probing.try_lock()) {
            (_, Ok(probing)) => probing,
            // Another request is learning it again: the expired profile is as good meanwhile.
            (Some(profile), Err(_)) => return Ok(profile),
            (None, Err(_)) => self.probing.lock().await,
        };
        // Learned by the request that probed while this one waited?
        let (known, forgotten) = self.learned();
        if let Some((profile, true)) = known {
            return Ok(profile);
        }
        let profile = probe().await?;
        tracing::info!(
            modern = profile.eras.modern,
            stateful = profile.eras.stateful,
            "learned what the backend speaks"
        );
        if let Ok(mut learned) = self.profile.lock()
            && learned.forgotten == forgotten
        {
            learned.profile = Some((profile.clone(), Instant::now()));
        }
        drop(probing);
        Ok(profile)
    }

    /// The profile known now, and whether it is fresh; and the forget count.
    fn learned(&self) -> (Option<(Profile, bool)>, u64) {
        let Ok(learned) = self.profile.lock() else {
            return (None, u64::MAX);
        };
        let known = learned
            .profile
            .as_ref()
            .map(|(profile, at)| (profile.clone(), at.elapsed() < PROFILE_TTL));
        (known, learned.forgotten)
    }

    /// Forget the profile (the backend restarted): the next request learns it again, and a probe
    /// under way keeps its answer to itself.
    pub async fn forget_profile(&self) {
        if let Ok(mut learned) = self.profile.lock() {
            learned.profile = None;
            learned.forgotten += 1;
        }
    }

    /// The principal's bridged backend session, when one is open.
    pub fn own_session(&self, principal: &PrincipalId) -> Option<BackendSessionId> {
        self.own.lock().ok()?.get(principal).cloned()
    }

    /// Remembers the principal's bridged backend session.
    pub fn set_own_session(&self, principal: &PrincipalId, session: &BackendSessionId) {
        if let Ok(mut own) = self.own.lock() {
            if own.len() >= MAX_OWN_SESSIONS {
                own.clear();
            }
            own.insert(principal.clone(), session.clone());
        }
    }
}

/// Asks the backend what it speaks.
async fn probe(app: &Backend) -> Result<Profile, BackendError> {
    let discover = discover(&app.upstream, app.settings.mcp_path()).await;
    let modern = discover.is_some();
    let id = "session-broker-probe-initialize";
    let ini = json!({
        "protocolVersion": LEGACY_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "session-broker", "version": env!("CARGO_PKG_VERSION")},
    });
    let path = app.settings.mcp_path();
    let response = crate::backend::outbound::post_json(
        &app.upstream,
        path,
        HeaderMap::new(),
        &mcp::initialize_request(id, &ini),
    )
    .await;
    let (initialize, stateful, legacy_version) = match response {
        Ok(response) if response.status().is_success() => {
            let session = response
                .headers()
                .get(&MCP_SESSION_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| BackendSessionId::parse(v).ok());
            let reply = app.upstream.read_reply(response, id).await?;
            if let Some(session) = &session {
                close(app, session).await;
            }
            let version = mcp::negotiated_version(&reply)
                .unwrap_or(LEGACY_VERSION)
                .to_owned();
            (reply.get("result").cloned(), session.is_some(), version)
        }
        // No legacy handshake at all: a modern-only backend.
        Ok(_) | Err(UpstreamError::Status { .. }) => (None, false, LEGACY_VERSION.to_owned()),
        Err(error) => return Err(error.into()),
    };
    Ok(Profile {
        eras: BackendEras { modern, stateful },
        initialize,
        discover,
        legacy_version,
    })
}

/// The backend's `server/discover` result (on `path`), when it answers one offering a modern
/// revision. Also `session-broker check`'s probe of the modern era.
pub async fn discover(upstream: &Upstream, path: &str) -> Option<Value> {
    let version = modern::SUPPORTED[0];
    let id = "session-broker-probe-discover";
    let request = json!({
        "jsonrpc": "2.0", "id": id, "method": "server/discover",
        "params": {"_meta": {
            modern::META_PROTOCOL_VERSION: version,
            modern::META_CLIENT_CAPABILITIES: {},
            modern::META_CLIENT_INFO: {"name": "session-broker", "version": env!("CARGO_PKG_VERSION")},
        }},
    });
    let mut headers = HeaderMap::new();
    headers.insert(MCP_METHOD, HeaderValue::from_static("server/discover"));
    let headers = outbound::session_headers(headers, None, Some(version));
    let response = crate::backend::outbound::post_json(upstream, path, headers, &request)
        .await
        .ok()
        .filter(|r| r.status().is_success())?;
    let reply = upstream.read_reply(response, id).await.ok()?;
    let offers = reply
        .pointer("/result/supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(version)));
    offers.then(|| reply.get("result").cloned()).flatten()
}

/// Ends a backend session the broker opened only to learn something (best effort).
async fn close(app: &Backend, session: &BackendSessionId) {
    let delete = UpstreamRequest::own(Method::DELETE, app.settings.mcp_path(), HeaderMap::new())
        .session(Some(session));
    if let Err(error) = delete.send(&app.upstream).await {
        tracing::debug!(%error, "could not close the probe's backend session");
    }
}

/// Opens a bridged backend session for a modern client's request (no project: like a legacy
/// client's own).
pub async fn open_own(
    app: &Backend,
    principal: &PrincipalId,
    headers: HeaderMap,
    bridged: &Bridged,
) -> Result<BackendSessionId, BackendError> {
    let opened = sessions::open(app, headers, &bridged.ini).await?;
    app.bridge.set_own_session(principal, &opened.session);
    Ok(opened.session)
}

#[cfg(test)]
mod tests;
