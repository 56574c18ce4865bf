//! Backend sessions: opening one on the client's behalf (its stored `initialize`, then
//! `notifications/initialized`), replaying the work session's selection on it, and the trusted
//! headers every forwarded request carries. The time these requests wait on the backend counts as
//! the client request's upstream time.

use broker::ids::{BackendSessionId, Project};
use broker::mcp;
use broker::session::WorkSession;
use http::header::HeaderMap;
use serde_json::Value;

use crate::backend::Backend;
use crate::backend::headers::MCP_SESSION_ID;
use crate::backend::outbound::{self, UpstreamRequest};
use crate::backend::upstream::UpstreamError;
use crate::metrics::{self, Own};

/// Why a backend session could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the MCP server answered initialize without a session id")]
    NoSession,
    #[error("the MCP server refused initialize: {0}")]
    Initialize(String),
    #[error("the MCP server refused to select {project}: {detail}")]
    SelectRefused { project: Project, detail: String },
}

impl BackendError {
    /// The backend no longer knows the session (it restarted or expired it).
    pub fn is_session_gone(&self) -> bool {
        matches!(
            self,
            BackendError::Upstream(UpstreamError::Status { status: 404, .. })
        )
    }
}

/// A freshly opened backend session.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: BackendSessionId,
    pub protocol_version: Option<String>,
}

fn reply_id(kind: &str) -> String {
    format!(
        "session-broker-{kind}-{}",
        &broker::ids::random_hex128()[..12]
    )
}

/// Opens a backend session with the client's `initialize` params.
pub async fn open(app: &Backend, base: HeaderMap, ini: &Value) -> Result<Opened, BackendError> {
    let id = reply_id("init");
    let path = app.settings.mcp_path().to_owned();
    let initialize = mcp::initialize_request(&id, ini);
    let response = app
        .metrics
        .own_upstream(
            Own::Open,
            crate::backend::outbound::post_json(&app.upstream, &path, base.clone(), &initialize),
        )
        .await?;
    let session = response
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| BackendSessionId::parse(v).ok())
        .ok_or(BackendError::NoSession);
    let reply = metrics::upstream_body(app.upstream.read_reply(response, &id)).await?;
    if reply.get("error").is_some() {
        return Err(BackendError::Initialize(mcp::reply_text(&reply)));
    }
    let session = session?;
    let protocol_version = mcp::negotiated_version(&reply).map(str::to_owned);
    let headers = outbound::session_headers(base, Some(&session), protocol_version.as_deref());
    let initialized = mcp::initialized_notification();
    let response = app
        .metrics
        .own_upstream(
            Own::Open,
            crate::backend::outbound::post_json(&app.upstream, &path, headers, &initialized),
        )
        .await?;
    if !response.status().is_success() {
        return Err(BackendError::Initialize(format!(
            "notifications/initialized got HTTP {}",
            response.status()
        )));
    }
    tracing::debug!("opened a backend session");
    Ok(Opened {
        session,
        protocol_version,
    })
}

/// Calls the select tool on a backend session for the work session's project.
pub async fn replay(
    app: &Backend,
    base: HeaderMap,
    session: &BackendSessionId,
    protocol_version: Option<&str>,
    work: &WorkSession,
) -> Result<(), BackendError> {
    let id = reply_id("replay");
    let request = mcp::select_request(
        &id,
        &app.settings.select_tool,
        &app.settings.select_arg,
        &work.project,
    );
    let send = UpstreamRequest::own_json(app.settings.mcp_path(), base, &request)?
        .session(Some(session))
        .version(protocol_version)
        .trusted(app, Some(work), Some("replay"))
        .send(&app.upstream);
    let response = app.metrics.own_upstream(Own::Replay, send).await?;
    let reply = metrics::upstream_body(app.upstream.read_reply(response, &id)).await?;
    if mcp::call_succeeded(&reply) {
        tracing::info!(work_session = %work.id, project = %work.project, "replayed the selection on a backend session");
        Ok(())
    } else {
        Err(BackendError::SelectRefused {
            project: work.project.clone(),
            detail: mcp::reply_text(&reply),
        })
    }
}
