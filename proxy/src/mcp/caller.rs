//! Who is calling: the principal, the client MCP session (verified), the Origin check and what the
//! request says about its UI. Everything here is read from headers before the body is touched.

use std::sync::Arc;

use broker::ids::{BackendSessionId, ConversationKey, PrincipalId, Surface};
use broker::jsonrpc::Message;
use broker::store::McpQuery;
use broker::surface::SurfaceSignals;
use broker::tokens::SessionClaims;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::backend::headers::{self as names, Origin};
use crate::mcp::Mcp;
use crate::mcp::errors::ProxyError;

/// The verified caller of one request.
#[derive(Debug)]
pub struct Caller {
    pub principal: PrincipalId,
    /// Forwarded as is on the broker's own requests to the backend (it may authenticate too).
    pub authorization: Option<HeaderValue>,
    /// The client MCP session, when the request names one and it verified.
    pub session: Option<Arc<SessionClaims>>,
    /// A modern client's request bridged onto legacy backend sessions.
    pub bridge: Option<crate::backend::bridge::Bridged>,
    /// The `work_session` handle a modern client mirrored into `Mcp-Param-Work-Session`.
    pub param_work_session: Option<String>,
    pub origin: Origin,
    anthropic_client: Option<String>,
    user_agent: Option<String>,
    rule_headers: Vec<(String, String)>,
    conversation_header: Option<String>,
}

impl Caller {
    /// The caller of a request from `principal` (established by the edge, [`crate::edge::identify`]).
    /// Refuses a session id that is malformed, forged or another principal's (404, as for any
    /// unknown session).
    pub fn identify(
        app: &Mcp,
        parts: &Parts,
        principal: PrincipalId,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<Self, ProxyError> {
        let headers = &parts.headers;
        let authorization = headers.get(header::AUTHORIZATION).cloned();
        let session = match headers.get(&names::MCP_SESSION_ID) {
            None => None,
            Some(value) => {
                let token = value.to_str().map_err(|_| ProxyError::UnknownSession)?;
                let claims = app
                    .session_ids
                    .verify(&app.keys, token, app.now_secs())
                    .map_err(|error| {
                        tracing::info!(%error, "session id refused");
                        ProxyError::UnknownSession
                    })?;
                if claims.p != principal {
                    tracing::warn!(principal = %principal, "session id presented with another principal's credential");
                    return Err(ProxyError::UnknownSession);
                }
                Some(claims)
            }
        };
        let text = |name: &http::HeaderName| names::text(headers, name).map(str::to_owned);
        Ok(Self {
            principal,
            authorization,
            session,
            bridge: None,
            param_work_session: names::text(headers, &names::MCP_PARAM_WORK_SESSION)
                .and_then(broker::modern::decode_header_value),
            origin: Origin {
                client_ip,
                host: headers.get(header::HOST).cloned(),
            },
            anthropic_client: text(&names::X_ANTHROPIC_CLIENT),
            user_agent: text(&header::USER_AGENT),
            rule_headers: app
                .surfaces
                .header_names()
                .filter_map(|n| {
                    names::text(headers, &http::HeaderName::from_bytes(n.as_bytes()).ok()?)
                        .map(|v| (n.to_owned(), v.to_owned()))
                })
                .collect(),
            conversation_header: app.settings.conversation_header.as_ref().and_then(text),
        })
    }

    /// The surface, given the MCP `clientInfo.name` (from the session's `initialize` or `_meta`).
    pub fn surface(&self, app: &Mcp, client_name: Option<&str>) -> Surface {
        let session_name = self
            .session
            .as_ref()
            .and_then(|s| broker::mcp::client_name(&s.ini));
        let signals = SurfaceSignals {
            anthropic_client: self.anthropic_client.as_deref(),
            user_agent: self.user_agent.as_deref(),
            client_name: client_name.or(session_name),
            headers: self
                .rule_headers
                .iter()
                .map(|(n, v)| (n.clone(), v.as_str()))
                .collect(),
        };
        app.surfaces.classify(&signals)
    }

    /// The conversation key: the first configured `_meta` key the call carries (by default
    /// `openai/session`, then OpenTelemetry's `gen_ai.conversation.id`), else the configured header.
    pub fn conversation(&self, app: &Mcp, call: &Message) -> Option<ConversationKey> {
        app.settings
            .conversation_meta_keys
            .iter()
            .find_map(|key| {
                call.meta_str(key)
                    .and_then(|id| broker::identity::conversation_key(source_of(key), id))
            })
            .or_else(|| self.header_conversation())
    }

    /// The conversation key of the configured header alone (for messages with no `_meta`).
    pub fn header_conversation(&self) -> Option<ConversationKey> {
        self.conversation_header
            .as_deref()
            .and_then(|s| broker::identity::conversation_key("header", s))
    }

    /// Headers for a request the broker sends on its own behalf to the backend.
    pub fn own_request_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        headers
    }
}

/// The source a conversation id is hashed under: `openai` for `openai/session` (as before the
/// keys were configurable, so stored conversations keep their keys), else the `_meta` key itself.
fn source_of(meta_key: &str) -> &str {
    if meta_key == "openai/session" {
        "openai"
    } else {
        meta_key
    }
}

/// What the store is asked about the MCP session of `claims`.
pub fn mcp_query(app: &Mcp, claims: &SessionClaims) -> McpQuery {
    McpQuery {
        session: claims.sid.clone(),
        upstream: app.upstream_id.clone(),
        backend: (claims.up == app.upstream_id)
            .then(|| {
                claims
                    .bs
                    .as_deref()
                    .and_then(|s| BackendSessionId::parse(s).ok())
            })
            .flatten(),
    }
}
