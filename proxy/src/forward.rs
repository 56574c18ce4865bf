//! Sending a client request on to the backend, on the right backend session.
//!
//! The client's session id names the backend session its `initialize` created. A later one replaces
//! it when the backend forgot it (404: re-initialize, replay, retry once) or when the request reached
//! a replica whose upstream is another instance (open one there). Before a call that needs a
//! project, the backend session gets the work session's selection replayed if it does not have it.
//! Replays, re-initializations, backend round trips and the upstream status are counted or recorded
//! here.

use std::sync::Arc;

use broker::ids::{BackendSessionId, Project};
use broker::session::WorkSession;
use broker::store::{BackendRef, McpState};
use broker::tokens::SessionClaims;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tracing::Span;

use crate::app::App;
use crate::backend::{self, BackendError};
use crate::body::ProxyBody;
use crate::caller::Caller;
use crate::errors::{ProxyError, json_response};
use crate::headers::{self, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::metrics::{Reinit, StoreOp};
use crate::relay::{self, Watch};

/// One request on its way to the backend.
pub struct Outbound<'a> {
    pub parts: &'a Parts,
    pub caller: &'a Caller,
    pub body: Bytes,
    pub bound: Option<WorkSession>,
    pub needs_replay: bool,
    pub mcp: McpState,
    pub watch: Watch,
    /// The JSON-RPC id to answer with a tool error if the replay fails (a `tools/call`).
    pub call_id: Option<broker::jsonrpc::RequestId>,
    /// Re-initialize and retry once when the backend answers 404 for its session.
    pub retry_on_404: bool,
}

/// The backend session state while forwarding.
struct Backend {
    session: Option<BackendSessionId>,
    project: Option<Project>,
}

/// Forwards and relays the answer.
pub async fn forward(
    app: &Arc<App>,
    mut out: Outbound<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let claims = out.caller.session.as_ref();
    let mut backend = initial_backend(app, out.caller, claims, &out.mcp).await?;
    for attempt in 0..2 {
        let last = attempt == 1 || !out.retry_on_404;
        if let (true, Some(work), Some(session)) = (out.needs_replay, &out.bound, &backend.session)
            && backend.project.as_ref() != Some(&work.project)
        {
            let replayed = backend::replay(
                app,
                out.caller.own_request_headers(),
                session,
                protocol(&out, claims).as_deref(),
                work,
            )
            .await;
            app.metrics.replay(replayed.is_ok());
            match replayed {
                Ok(()) => {
                    relay::record_backend_project(
                        &app.metrics,
                        app.store.as_ref(),
                        work,
                        &backend_ref(app, session),
                        &work.project,
                    )
                    .await;
                    backend.project = Some(work.project.clone());
                }
                Err(error) if error.is_session_gone() && !last => {
                    backend = reopen(app, out.caller, claims, Reinit::NotFound).await?;
                    continue;
                }
                Err(error) => return replay_failed(&out, work, error),
            }
        }
        if let (Some(_), Some(session)) = (&out.watch.select, &backend.session) {
            // The backend session is about to switch projects: if the broker then fails to record
            // the selection, the next call must replay rather than trust a stale record.
            let target = backend_ref(app, session);
            let forget = app
                .store
                .forget_backend_project(&out.caller.principal, &target);
            app.metrics
                .store(StoreOp::SetBackendProject, forget)
                .await?;
        }
        let request = request_for(app, &out, backend.session.as_ref())?;
        let response = app.metrics.upstream(app.upstream.send(request)).await?;
        if response.status() == StatusCode::NOT_FOUND && backend.session.is_some() && !last {
            tracing::info!("the backend forgot its session: re-initializing and retrying once");
            backend = reopen(app, out.caller, claims, Reinit::NotFound).await?;
            continue;
        }
        Span::current().record("upstream_status", response.status().as_u16());
        if let Some(select) = out.watch.select.as_mut() {
            select.backend = backend.session.as_ref().map(|s| backend_ref(app, s));
        }
        let mut relayed = relay::relay(response, std::mem::take(&mut out.watch));
        client_session_header(&mut relayed, &out.parts.headers);
        return Ok(relayed);
    }
    Err(ProxyError::Backend(BackendError::NoSession))
}

/// The backend's own session id never reaches the client (some SDK clients adopt any session id a
/// response carries): the client sees the id it sent, or none.
pub fn client_session_header(response: &mut Response<ProxyBody>, request: &HeaderMap) {
    response.headers_mut().remove(MCP_SESSION_ID);
    if let Some(own) = request.get(MCP_SESSION_ID) {
        response.headers_mut().insert(MCP_SESSION_ID, own.clone());
    }
}

fn backend_ref(app: &App, session: &BackendSessionId) -> BackendRef {
    BackendRef {
        upstream: app.upstream_id.clone(),
        session: session.clone(),
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

/// The backend session to use first: one recorded for this upstream, else the session id's own
/// when it lives here, else a new one (the id came from another replica's backend).
async fn initial_backend(
    app: &Arc<App>,
    caller: &Caller,
    claims: Option<&SessionClaims>,
    mcp: &McpState,
) -> Result<Backend, ProxyError> {
    let Some(claims) = claims else {
        return Ok(Backend {
            session: None,
            project: None,
        });
    };
    if let Some(session) = &mcp.backend_override {
        return Ok(Backend {
            session: Some(session.clone()),
            project: mcp.backend_project.clone(),
        });
    }
    let own = claims
        .bs
        .as_deref()
        .and_then(|s| BackendSessionId::parse(s).ok());
    match own {
        Some(session) if claims.up == app.upstream_id => Ok(Backend {
            session: Some(session),
            project: mcp.backend_project.clone(),
        }),
        Some(_) => reopen(app, caller, Some(claims), Reinit::OtherInstance).await,
        None => Ok(Backend {
            session: None,
            project: None,
        }),
    }
}

/// Opens a new backend session for the client's MCP session and records it.
async fn reopen(
    app: &Arc<App>,
    caller: &Caller,
    claims: Option<&SessionClaims>,
    reason: Reinit,
) -> Result<Backend, ProxyError> {
    let Some(claims) = claims else {
        return Ok(Backend {
            session: None,
            project: None,
        });
    };
    app.metrics.reinitialization(reason);
    let opened = backend::open(app, caller.own_request_headers(), &claims.ini).await?;
    let reference = backend_ref(app, &opened.session);
    let record = app
        .store
        .set_backend_session(&caller.principal, &claims.sid, &reference);
    if let Err(error) = app.metrics.store(StoreOp::SetBackendSession, record).await {
        tracing::warn!(%error, "could not record the new backend session; the next request may open another");
    }
    Ok(Backend {
        session: Some(opened.session),
        project: None,
    })
}

fn request_for(
    app: &App,
    out: &Outbound<'_>,
    session: Option<&BackendSessionId>,
) -> Result<Request<Full<Bytes>>, ProxyError> {
    let path = out
        .parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut request = Request::builder()
        .method(out.parts.method.clone())
        .uri(app.upstream.uri(path)?)
        .body(Full::new(out.body.clone()))
        .map_err(|_| ProxyError::BodyUnreadable)?;
    let mut headers: HeaderMap = headers::toward_upstream(
        &out.parts.headers,
        app.upstream.authority(),
        &out.caller.origin,
    );
    if let Some(session) = session
        && let Ok(value) = HeaderValue::from_str(session.as_str())
    {
        headers.insert(MCP_SESSION_ID, value);
    }
    backend::set_trusted(app, &mut headers, out.bound.as_ref());
    *request.headers_mut() = headers;
    Ok(request)
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
