//! Sending a client request on to the backend, on the backend session its route names
//! ([`broker::decide::Route`]):
//! - `Own`: the client's own backend session (its `initialize`'s, or a replacement recorded when the
//!   backend forgot it or the id came from another replica's upstream). It never has a project
//!   selected: it carries `tools/list`, notifications, GET streams and exempt tools;
//! - `Work`: the bound work session's backend session for its project ([`crate::mcp::work_backend`]),
//!   opened and replayed once when there is none;
//! - `None`: no backend session (a stateless backend, or a sessionless client).
//!
//! A backend 404 for its session: re-open (and for `Work`, replay), retry once. Replays,
//! re-initializations, backend round trips and the upstream status are counted or recorded here.

use std::sync::Arc;

use broker::decide::Route;
use broker::decide::backend::{self, Choice};
use broker::ids::BackendSessionId;
use broker::session::WorkSession;
use broker::store::McpState;
use broker::tokens::SessionClaims;
use bytes::Bytes;
use http::header::HeaderMap;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tracing::Span;

use crate::backend::body::ProxyBody;
use crate::backend::headers::{self, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::backend::outbound::UpstreamRequest;
use crate::backend::sessions::{self, BackendError};
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::errors::{ProxyError, json_response};
use crate::mcp::message_routing::rounds::Questions;
use crate::mcp::message_routing::{self, IdMap};
use crate::mcp::relay::{self, Watch};
use crate::mcp::work_backend;
use crate::mcp::work_backend::backend_ref;
use crate::metrics::{Reinit, StoreOp};

/// One request on its way to the backend.
pub struct Outbound<'a> {
    pub parts: &'a Parts,
    pub caller: &'a Caller,
    pub body: Bytes,
    pub bound: Option<WorkSession>,
    /// How `bound` was found, for the assertion (`via`).
    pub via: Option<&'static str>,
    pub route: Route,
    pub mcp: McpState,
    pub watch: Watch,
    /// The JSON-RPC id to answer with a tool error if the replay fails (a `tools/call`).
    pub call_id: Option<broker::jsonrpc::RequestId>,
    /// Re-initialize and retry once when the backend answers 404 for its session.
    pub retry_on_404: bool,
    /// The backend session this message must reach, whatever the route (a client's answer to a
    /// server request, a cancellation of a request running there).
    pub target: Option<BackendSessionId>,
}

impl<'a> Outbound<'a> {
    /// A message for exactly `target` (an answer to a server request, a cancellation), unbound,
    /// not retried on 404.
    pub fn to_target(
        parts: &'a Parts,
        caller: &'a Caller,
        body: Bytes,
        target: BackendSessionId,
    ) -> Self {
        Self {
            parts,
            caller,
            body,
            bound: None,
            via: None,
            route: Route::Own,
            mcp: McpState::default(),
            watch: Watch::default(),
            call_id: None,
            retry_on_404: false,
            target: Some(target),
        }
    }
}

/// Forwards and relays the answer.
pub async fn forward(
    app: &Arc<Mcp>,
    mut out: Outbound<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let claims = out.caller.session.as_deref();
    let mut session = match choose(app, &out, claims, false).await {
        Ok(session) => session,
        Err(Chosen::Replay(work, error)) => return replay_failed(&out, &work, error),
        Err(Chosen::Failed(error)) => return Err(error),
    };
    for attempt in 0..2u8 {
        // The broker owns the ids on the backend session (dropped and made again on a retry).
        let owned = session
            .as_ref()
            .and_then(|s| message_routing::own_ids(app, out.caller, &out.body, s));
        let (body, ids) = match owned {
            Some((body, ids)) => (body, ids),
            None => (out.body.clone(), IdMap::default()),
        };
        let (request, sent) = request_for(app, &out, body, session.as_ref())?;
        if out.caller.session.as_ref().is_some_and(|c| c.mb) && out.call_id.is_some() {
            // A backend that speaks only 2026-07-28 may answer input_required: its questions go
            // to this legacy client as server requests, and the call is retried for it.
            out.watch.questions = Some(Questions {
                app: app.clone(),
                principal: out.caller.principal.clone(),
                request: serde_json::from_slice(&sent).unwrap_or(Value::Null),
                headers: request.headers().clone(),
            });
        }
        let response = app.metrics.upstream(app.upstream.send(request)).await?;
        let status = response.status().as_u16();
        if backend::after_404(status, session.is_some(), attempt, out.retry_on_404) {
            tracing::info!("the backend forgot its session: re-initializing and retrying once");
            app.initialize_cache.forget(); // it restarted, and may answer initialize differently
            session = match choose(app, &out, claims, true).await {
                Ok(session) => session,
                Err(Chosen::Replay(work, error)) => return replay_failed(&out, &work, error),
                Err(Chosen::Failed(error)) => return Err(error),
            };
            continue;
        }
        Span::current().record("upstream_status", response.status().as_u16());
        if let (Some(select), Some(session)) = (out.watch.select.as_mut(), &session) {
            select.ran_on(backend_ref(app, session));
        }
        if let Some(session) = &session {
            let protocol = match &out.caller.bridge {
                Some(bridged) => Some(bridged.legacy_version.clone()),
                None => protocol(&out, claims),
            };
            let call_id = out.call_id.as_ref();
            let (caller, watch) = (out.caller, &mut out.watch);
            crate::mcp::relay::session::watch_session(
                app,
                caller,
                session,
                protocol.as_deref(),
                call_id,
                &ids,
                watch,
            );
        }
        out.watch.ids = ids;
        let mut relayed = relay::relay(response, std::mem::take(&mut out.watch));
        client_session_header(&mut relayed, &out.parts.headers);
        return Ok(relayed);
    }
    Err(ProxyError::Backend(BackendError::NoSession))
}

/// Why no backend session could be chosen.
enum Chosen {
    /// The selection could not be replayed on a fresh backend session for this work session.
    Replay(WorkSession, BackendError),
    Failed(ProxyError),
}

/// The backend session for the request ([`broker::decide::backend::choose`] picks which);
/// `forgotten`: the one used before answered 404.
async fn choose(
    app: &Arc<Mcp>,
    out: &Outbound<'_>,
    claims: Option<&SessionClaims>,
    forgotten: bool,
) -> Result<Option<BackendSessionId>, Chosen> {
    let facts = backend::Facts {
        target: out.target.is_some(),
        bridged: out.caller.bridge.is_some(),
        has_backend: claims.is_some_and(|c| c.bs.is_some() || c.lz),
        route: out.route,
        bound: out.bound.is_some(),
        forgotten,
    };
    match backend::choose(&facts) {
        Choice::Target => Ok(out.target.clone()),
        Choice::Sessionless => Ok(None),
        Choice::Work { replay } => {
            let Some(work) = &out.bound else {
                return Ok(None); // never: the table chooses Work only with a bound work session
            };
            let (ini, protocol) = match (&out.caller.bridge, claims) {
                (Some(bridged), _) => (&bridged.ini, Some(bridged.legacy_version.clone())),
                (None, Some(claims)) => (&claims.ini, protocol(out, Some(claims))),
                (None, None) => return Ok(None),
            };
            work_backend::session_for(
                app,
                out.caller,
                ini,
                work,
                replay,
                forgotten,
                protocol.as_deref(),
            )
            .await
            .map(Some)
            .map_err(|error| match error {
                work_backend::Error::Replay(error) => Chosen::Replay(work.clone(), error),
                work_backend::Error::Open(error) => Chosen::Failed(ProxyError::Backend(error)),
            })
        }
        Choice::ReopenOwn | Choice::Own => {
            let Some(claims) = claims else {
                return Ok(None); // never: the table chooses Own only with a session id
            };
            if facts.forgotten {
                reopen_own(app, out.caller, claims, Reinit::NotFound)
                    .await
                    .map(Some)
                    .map_err(Chosen::Failed)
            } else {
                own_backend(app, out.caller, claims, &out.mcp)
                    .await
                    .map_err(Chosen::Failed)
            }
        }
        Choice::BridgedOwn { fresh } => match &out.caller.bridge {
            Some(bridged) => bridged_own(app, out, bridged, fresh).await,
            None => Ok(None),
        },
    }
}

/// A bridged modern client's own backend session: the principal's bridged one
/// ([`crate::backend::bridge`]); `fresh`: the backend answered 404, so it restarted: learn again
/// what it speaks and open a new one.
async fn bridged_own(
    app: &Arc<Mcp>,
    out: &Outbound<'_>,
    bridged: &crate::backend::bridge::Bridged,
    fresh: bool,
) -> Result<Option<BackendSessionId>, Chosen> {
    let principal = &out.caller.principal;
    if !fresh && let Some(session) = app.bridge.own_session(principal) {
        return Ok(Some(session));
    }
    if fresh {
        app.bridge.forget_profile().await;
    }
    let headers = out.caller.own_request_headers();
    crate::backend::bridge::open_own(app, principal, headers, bridged)
        .await
        .map(Some)
        .map_err(|error| Chosen::Failed(ProxyError::Backend(error)))
}

/// The backend's own session id never reaches the client (some SDK clients adopt any session id a
/// response carries): the client sees the id it sent, or none.
pub fn client_session_header(response: &mut Response<ProxyBody>, request: &HeaderMap) {
    response.headers_mut().remove(MCP_SESSION_ID);
    if let Some(own) = request.get(MCP_SESSION_ID) {
        response.headers_mut().insert(MCP_SESSION_ID, own.clone());
    }
}

/// The protocol version for the broker's own requests: the client's, else its `initialize`'s.
fn protocol(out: &Outbound<'_>, claims: Option<&SessionClaims>) -> Option<String> {
    headers::text(&out.parts.headers, &MCP_PROTOCOL_VERSION)
        .map(str::to_owned)
        .or_else(|| {
            claims
                .and_then(|c| c.ini.get("protocolVersion"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

/// The client's own backend session: one recorded for this upstream, else the session id's own
/// when it lives here, else a new one (the id came from another replica's backend).
async fn own_backend(
    app: &Arc<Mcp>,
    caller: &Caller,
    claims: &SessionClaims,
    mcp: &McpState,
) -> Result<Option<BackendSessionId>, ProxyError> {
    if let Some(session) = &mcp.backend_override {
        return Ok(Some(session.clone()));
    }
    let own = claims
        .bs
        .as_deref()
        .and_then(|s| BackendSessionId::parse(s).ok());
    match own {
        Some(session) if claims.up == app.upstream_id => Ok(Some(session)),
        Some(_) => reopen_own(app, caller, claims, Reinit::OtherInstance)
            .await
            .map(Some),
        None if claims.lz => open_lazily(app, caller, claims).await.map(Some),
        None => Ok(None),
    }
}

/// The first request of a client whose `initialize` the broker answered from its cache that needs
/// the client's own backend session: open it now (one opening for concurrent ones) and record it.
async fn open_lazily(
    app: &Arc<Mcp>,
    caller: &Caller,
    claims: &SessionClaims,
) -> Result<BackendSessionId, ProxyError> {
    let key = format!("own:{}:{}", caller.principal, claims.sid);
    app.openings
        .once(&key, None, || reopen_own(app, caller, claims, Reinit::Lazy))
        .await
}

/// Opens a new own backend session for the client's MCP session and records it.
async fn reopen_own(
    app: &Arc<Mcp>,
    caller: &Caller,
    claims: &SessionClaims,
    reason: Reinit,
) -> Result<BackendSessionId, ProxyError> {
    app.metrics.reinitialization(reason);
    let opened = sessions::open(app, caller.own_request_headers(), &claims.ini).await?;
    let reference = backend_ref(app, &opened.session);
    let record = app
        .store
        .set_backend_session(&caller.principal, &claims.sid, &reference);
    if let Err(error) = app.metrics.store(StoreOp::SetBackendSession, record).await {
        tracing::warn!(%error, "could not record the new backend session; the next request may open another");
    }
    Ok(opened.session)
}

/// The request for the backend session `session`, made by the one outbound builder; and the body
/// it carries (what the backend will answer to).
fn request_for(
    app: &Mcp,
    out: &Outbound<'_>,
    body: Bytes,
    session: Option<&BackendSessionId>,
) -> Result<(Request<Full<Bytes>>, Bytes), ProxyError> {
    let mut request = UpstreamRequest::forwarded(
        out.parts,
        &out.caller.origin,
        app.upstream.authority(),
        body,
    );
    if let Some(claims) = out.caller.session.as_ref().filter(|c| c.mb) {
        request = request.modernized(&claims.ini);
    }
    // The backend speaks a legacy revision on the sessions the broker opened for a bridged client.
    let bridged = out
        .caller
        .bridge
        .as_ref()
        .map(|b| b.legacy_version.as_str());
    let request =
        request
            .session(session)
            .version(bridged)
            .trusted(app, out.bound.as_ref(), out.via);
    let sent = request.body().clone();
    Ok((request.build(&app.upstream)?, sent))
}

/// The replay failed: a `tools/call` gets a tool error (nothing ran), anything else a 502.
fn replay_failed(
    out: &Outbound<'_>,
    work: &WorkSession,
    error: BackendError,
) -> Result<Response<ProxyBody>, ProxyError> {
    tracing::warn!(%error, work_session = %work.id, "could not restore the selection on the backend");
    match &out.call_id {
        Some(id) => {
            let text = broker::guidance::replay_failed(&work.project, &error.to_string());
            Ok(json_response(
                StatusCode::OK,
                &broker::jsonrpc::tool_error_reply(id, &text),
            ))
        }
        None => Err(ProxyError::Backend(error)),
    }
}
