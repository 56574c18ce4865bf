//! Who is calling: the principal, the client MCP session (verified), the Origin check and what the
//! request says about its UI. Everything here is read from headers before the body is touched.

use std::sync::Arc;

use broker::ids::{ConversationKey, PrincipalId, Surface};
use broker::jsonrpc::Message;
use broker::surface::SurfaceSignals;
use broker::tokens::SessionClaims;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;

use crate::app::App;
use crate::backend::headers::{self as names, Origin};
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
    /// Identifies the caller. Refuses a foreign Origin (403), a missing credential (401), and a session
    /// id that is malformed, forged or another principal's (404, as for any unknown session).
    pub async fn identify(
        app: &App,
        parts: &Parts,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<Self, ProxyError> {
        let headers = &parts.headers;
        check_origin(app, headers)?;
        let authorization = headers.get(header::AUTHORIZATION).cloned();
        let principal = app
            .identities
            .principal(headers, client_ip)
            .await
            .map_err(ProxyError::Refused)?;
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
    pub fn surface(&self, app: &App, client_name: Option<&str>) -> Surface {
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
    pub fn conversation(&self, app: &App, call: &Message) -> Option<ConversationKey> {
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

/// Origin present and not allowed: 403. Loopback origins are always allowed (local clients and the
/// Inspector), others only when listed; `*` allows all.
fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), ProxyError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| ProxyError::ForbiddenOrigin)?;
    let allowed = &app.settings.allowed_origins;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        || is_loopback_origin(origin)
    {
        Ok(())
    } else {
        Err(ProxyError::ForbiddenOrigin)
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    matches!(
        uri.host(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins() {
        assert!(is_loopback_origin("http://localhost:6274"));
        assert!(is_loopback_origin("http://127.0.0.1"));
        assert!(is_loopback_origin("http://[::1]:3000"));
        assert!(!is_loopback_origin("https://evil.example"));
        assert!(!is_loopback_origin("http://localhost.evil.example"));
        assert!(!is_loopback_origin("null"));
    }
}
