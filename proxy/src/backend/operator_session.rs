//! Backend sessions the broker opens for itself, not for a client: the finalizer's handover tool and
//! the admin API's rebind check. Each carries the operator's credential for the backend
//! (`--on-expire-tool-auth-file`, sent as `Authorization`) and the broker's own `initialize`, and is
//! closed (DELETE) afterwards whatever happened, so they leave no sessions behind on the backend. A
//! stateless backend (its `initialize` hands out no session id) is asked without one.

use broker::ids::BackendSessionId;
use broker::mcp;
use broker::session::WorkSession;
use http::Method;
use http::header::{self, HeaderMap};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::backend::outbound::{self, UpstreamRequest};
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
        let settings = &app.settings;
        let request = mcp::select_request(
            &id,
            &settings.select_tool,
            &settings.select_arg,
            &work.project,
        );
        let response = UpstreamRequest::own_json(settings.mcp_path(), self.headers(), &request)?
            .trusted(app, Some(work), Some("replay"))
            .send(&app.upstream)
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

    /// The headers of a request on it ([`outbound::session_headers`]).
    pub fn headers(&self) -> HeaderMap {
        outbound::session_headers(
            self.base.clone(),
            self.session.as_ref(),
            self.version.as_deref(),
        )
    }

    /// DELETEs it (nothing to do on a stateless backend); a failure is only logged (the backend's
    /// idle expiry remains).
    pub async fn close(self, app: &Backend) {
        if self.session.is_none() {
            return;
        }
        let request = UpstreamRequest::own(Method::DELETE, app.settings.mcp_path(), self.headers());
        let outcome = match request.send(&app.upstream).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                Ok(status)
            }
            Err(error) => Err(error.to_string()),
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
