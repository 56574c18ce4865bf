//! Backend sessions the broker opens for itself, not for a client: the finalizer's handover tool and
//! the admin API's rebind check. Each carries the operator's credential for the backend
//! (`--on-expire-tool-auth-file`, sent as `Authorization`) and the broker's own `initialize`, and is
//! closed (DELETE) afterwards whatever happened, so they leave no sessions behind on the backend. A
//! stateless backend (its `initialize` hands out no session id) is asked without one.

use broker::ids::BackendSessionId;
use broker::mcp;
use broker::session::WorkSession;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::backend::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::backend::sessions::{self, BackendError};

/// An open session of the broker's own.
pub(crate) struct OperatorSession {
    /// The headers every request on it carries (the operator's credential).
    pub base: HeaderMap,
    /// None on a stateless backend.
    pub session: Option<BackendSessionId>,
    pub version: Option<String>,
}

/// The protocol version the broker asks for as itself.
const OWN_VERSION: &str = "2025-06-18";

/// The `initialize` params the broker sends as itself.
fn own_initialize() -> Value {
    json!({
        "protocolVersion": OWN_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "session-broker", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The operator's credential for the backend, if configured.
fn credential(app: &Backend) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = &app.settings.on_expire_tool_auth {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    headers
}

impl OperatorSession {
    /// Opens one ([`sessions::open`]).
    pub async fn open(app: &Backend) -> Result<Self, BackendError> {
        let base = credential(app);
        match sessions::open(app, base.clone(), &own_initialize()).await {
            Ok(opened) => Ok(Self {
                base,
                session: Some(opened.session),
                version: opened.protocol_version,
            }),
            Err(BackendError::NoSession) => Ok(Self {
                base,
                session: None,
                version: Some(OWN_VERSION.to_owned()),
            }),
            Err(error) => Err(error),
        }
    }

    /// Selects `work`'s project on it ([`sessions::replay`]; on a stateless backend, the same
    /// select with the work session's trusted headers and no session id).
    pub async fn select(&self, app: &Backend, work: &WorkSession) -> Result<(), BackendError> {
        if let Some(session) = &self.session {
            return sessions::replay(
                app,
                self.base.clone(),
                session,
                self.version.as_deref(),
                work,
            )
            .await;
        }
        let id = format!(
            "session-broker-select-{}",
            &broker::ids::random_hex128()[..12]
        );
        let mut headers = self.headers();
        sessions::set_trusted(app, &mut headers, Some(work), Some("replay"));
        let settings = &app.settings;
        let request = mcp::select_request(
            &id,
            &settings.select_tool,
            &settings.select_arg,
            &work.project,
        );
        let response = app
            .upstream
            .post_json(settings.mcp_path(), headers, &request)
            .await?;
        let reply = app.upstream.read_reply(response, &id).await?;
        if mcp::call_succeeded(&reply) {
            Ok(())
        } else {
            Err(BackendError::SelectRefused {
                project: work.project.clone(),
                detail: mcp::reply_text(&reply),
            })
        }
    }

    /// The headers of a request on it.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = self.base.clone();
        if let Some(value) = self
            .session
            .as_ref()
            .and_then(|s| HeaderValue::from_str(s.as_str()).ok())
        {
            headers.insert(MCP_SESSION_ID, value);
        }
        if let Some(value) = self
            .version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(MCP_PROTOCOL_VERSION, value);
        }
        headers
    }

    /// DELETEs it (nothing to do on a stateless backend); a failure is only logged (the backend's
    /// idle expiry remains).
    pub async fn close(self, app: &Backend) {
        if self.session.is_none() {
            return;
        }
        let mut headers = self.headers();
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
                tracing::debug!("closed the broker's own backend session")
            }
            Ok(status) => {
                tracing::info!(%status, "the backend refused to close the broker's own backend session")
            }
            Err(error) => {
                tracing::info!(%error, "could not close the broker's own backend session")
            }
        }
    }
}

/// Whether the backend's select tool accepts `work`'s project: selected on a session of the
/// broker's own, which is closed afterwards.
pub async fn check_select(app: &Backend, work: &WorkSession) -> Result<(), BackendError> {
    let session = OperatorSession::open(app).await?;
    let selected = session.select(app, work).await;
    session.close(app).await;
    selected
}
