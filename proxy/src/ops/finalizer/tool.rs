//! The handover tool (`--on-expire-tool`): for a finalized work session, a fresh backend session,
//! the project selected on it, then the tool, with the work session's trusted headers and the
//! credential the operator configured (`--on-expire-tool-auth-file`, sent as `Authorization`, so an
//! authenticating backend accepts the call). The backend session is closed (DELETE) afterwards,
//! whatever happened, so finalizations leave no sessions behind on the backend; a stateless backend
//! is called without one ([`crate::backend::operator_session`]).

use broker::finalize::Finalized;
use broker::mcp;
use broker::session::WorkSession;
use serde_json::json;

use crate::backend::operator_session::OperatorSession;
use crate::backend::outbound::UpstreamRequest;
use crate::edge::App;

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
    let session = OperatorSession::open(app)
        .await
        .map_err(|e| e.to_string())?;
    let result = select_and_call(app, &session, &work, tool).await;
    session.close(app).await;
    result
}

async fn select_and_call(
    app: &App,
    session: &OperatorSession,
    work: &WorkSession,
    tool: &str,
) -> Result<(), String> {
    session.select(app, work).await.map_err(|e| e.to_string())?;
    let id = format!(
        "session-broker-expire-{}",
        &broker::ids::random_hex128()[..12]
    );
    let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    let response = UpstreamRequest::own_json(app.settings.mcp_path(), session.headers(), &request)
        .map_err(|e| e.to_string())?
        .trusted(app, Some(work), Some("finalizer"))
        .send(&app.upstream)
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
