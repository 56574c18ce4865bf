//! The handover tool (`--on-expire-tool`): for a finalized work session, a fresh backend session,
//! the project selected on it, then the tool, with the work session's trusted headers and the
//! credential the operator configured (`--on-expire-tool-auth-file`, sent as `Authorization`, so an
//! authenticating backend accepts the call). The backend session is closed (DELETE) afterwards,
//! whatever happened, so finalizations leave no sessions behind on the backend.

use broker::finalize::Finalized;
use broker::ids::BackendSessionId;
use broker::mcp;
use broker::session::WorkSession;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::app::App;
use crate::backend::{self, BackendError};
use crate::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

/// Calls `tool` for the finalized work session; the error text says what failed.
pub(super) async fn call(app: &App, tool: &str, event: &Finalized) -> Result<(), String> {
    let work = WorkSession {
        id: event.work_session.clone(),
        principal: event.principal.clone(),
        surface: event.surface.clone(),
        conversation: None,
        project: event.project.clone(),
        created_ms: event.started_ms,
        last_active_ms: event.last_active_ms,
        calls: event.calls,
        backends: Default::default(),
    };
    let ini = json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "session-broker", "version": env!("CARGO_PKG_VERSION")},
    });
    let base = credential(app);
    let detail = |e: BackendError| e.to_string();
    let opened = backend::open(app, base.clone(), &ini)
        .await
        .map_err(detail)?;
    let version = opened.protocol_version.as_deref();
    let result = select_and_call(app, &base, &opened.session, version, &work, tool).await;
    close(app, &base, &opened.session, version).await;
    result
}

/// The operator's credential for the backend, if configured.
fn credential(app: &App) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = &app.settings.on_expire_tool_auth {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    headers
}

fn session_headers(
    base: &HeaderMap,
    session: &BackendSessionId,
    version: Option<&str>,
) -> HeaderMap {
    let mut headers = base.clone();
    if let Ok(value) = HeaderValue::from_str(session.as_str()) {
        headers.insert(MCP_SESSION_ID, value);
    }
    if let Some(value) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(MCP_PROTOCOL_VERSION, value);
    }
    headers
}

async fn select_and_call(
    app: &App,
    base: &HeaderMap,
    session: &BackendSessionId,
    version: Option<&str>,
    work: &WorkSession,
    tool: &str,
) -> Result<(), String> {
    backend::replay(app, base.clone(), session, version, work)
        .await
        .map_err(|e| e.to_string())?;
    let id = format!(
        "session-broker-expire-{}",
        &broker::ids::random_hex128()[..12]
    );
    let mut headers = session_headers(base, session, version);
    backend::set_trusted(app, &mut headers, Some(work), Some("finalizer"));
    let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    let response = app
        .upstream
        .post_json(app.settings.mcp_path(), headers, &request)
        .await
        .map_err(|e| e.to_string())?;
    let reply = app
        .upstream
        .read_reply(response, &id)
        .await
        .map_err(|e| e.to_string())?;
    if mcp::call_succeeded(&reply) {
        Ok(())
    } else {
        Err(mcp::reply_text(&reply))
    }
}

/// DELETEs the backend session; a failure is only logged (the backend's idle expiry remains).
async fn close(app: &App, base: &HeaderMap, session: &BackendSessionId, version: Option<&str>) {
    let mut headers = session_headers(base, session, version);
    headers.insert(header::HOST, app.upstream.authority().clone());
    let request = app
        .upstream
        .uri(app.settings.mcp_path())
        .map_err(|e| e.to_string())
        .and_then(|uri| {
            let mut request = Request::builder()
                .method(Method::DELETE)
                .uri(uri)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            *request.headers_mut() = headers;
            Ok(request)
        });
    let outcome = match request {
        Ok(request) => match app.upstream.send(request).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                Ok(status)
            }
            Err(error) => Err(error.to_string()),
        },
        Err(error) => Err(error),
    };
    match outcome {
        Ok(status) if status.is_success() => {
            tracing::debug!("closed the finalizer's backend session")
        }
        Ok(status) => {
            tracing::info!(%status, "the backend refused to close the finalizer's backend session")
        }
        Err(error) => {
            tracing::info!(%error, "could not close the finalizer's backend session")
        }
    }
}
