//! `initialize`: the client gets the broker's own session id, which records the backend session and
//! the `initialize` params. Nothing is stored: Claude's connectors send one `initialize` per tool call.
//!
//! **Answered from a cached result** (`--initialize-cache on`, the default): the backend's reply to
//! an `initialize` of one protocol version is the same for every client (its version, capabilities,
//! server info, instructions), so once one went through, the next ones of that version are answered
//! by the broker, and the client's own backend session is opened only when something needs it
//! (`lz` in the session id: `tools/list`, an exempt tool, a GET stream). A connector's turn
//! (`initialize`, `notifications/initialized`, a bound `tools/call`) then costs the backend the call
//! alone: the call runs on its work session's backend session, opened once. The cache is learned from
//! real replies, kept for [`CACHE_TTL`], and dropped when the backend forgets a session (it
//! restarted, and may answer differently now). It is keyed by the client's own `protocolVersion`,
//! so it is bounded (`initialize/cache.rs`).
//!
//! A stateless backend (its reply carries no session id) still gets the client a broker session id,
//! without a backend session in it. A backend that speaks only 2026-07-28 is answered from its
//! `server/discover` ([`crate::mcp::modern`]).

use std::sync::Arc;

use broker::ids::{BackendSessionId, McpSessionId};
use broker::jsonrpc::{Body, RequestId};
use broker::mcp;
use broker::tokens::{SESSION_AUDIENCE, SessionClaims};
use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::Value;
use tracing::Span;

use crate::backend::body::ProxyBody;
use crate::backend::headers::MCP_SESSION_ID;
use crate::backend::outbound::UpstreamRequest;
use crate::mcp::caller::Caller;
use crate::mcp::errors::{ProxyError, json_response};
use crate::mcp::relay::{self, Watch};
use crate::mcp::requests::record_surface;
use crate::mcp::{Mcp, TOKEN_LIFETIME};

pub use crate::mcp::initialize_cache::{CACHE_TTL, InitializeCache};
use crate::mcp::initialize_cache::{Cached, Learn};

/// Handles one `initialize`.
pub async fn handle(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: &Caller,
    bytes: Bytes,
    parsed: &Body,
) -> Result<Response<ProxyBody>, ProxyError> {
    let message = parsed.messages().first();
    let params = message.and_then(|m| m.params());
    let ini = mcp::replayable_initialize_params(params);
    record_surface(app, caller, mcp::client_name(&ini));
    let version = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let id = message.and_then(|m| m.id.clone());
    if app.settings.initialize_cache
        && let Some(cached) = app.initialize_cache.get(&version)
    {
        return from_cache(app, caller, id, ini, cached);
    }
    let request =
        UpstreamRequest::forwarded(parts, &caller.origin, app.upstream.authority(), bytes)
            .build(&app.upstream)?;
    let response = app.metrics.upstream(app.upstream.send(request)).await?;
    Span::current().record("upstream_status", response.status().as_u16());
    if !response.status().is_success()
        && let Ok(profile) = app.bridge.profile(app).await
        && let (true, Some(discover)) = (profile.modern_only(), &profile.discover)
    {
        // A backend that speaks only 2026-07-28 refused the handshake: the broker answers it.
        return initialize_for_modern_backend(app, caller, parsed, ini, discover);
    }
    let backend_session = response
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| BackendSessionId::parse(v).ok());
    let mut watch = Watch::default();
    if app.settings.initialize_cache
        && let Some(id) = id
    {
        watch.learn_initialize = Some(Learn {
            id,
            version,
            stateful: backend_session.is_some(),
            cache: app.initialize_cache.clone(),
        });
    }
    let mut relayed = relay::relay(response, watch);
    relayed.headers_mut().remove(&MCP_SESSION_ID);
    if relayed.status().is_success() {
        let claims = SessionClaims {
            p: caller.principal.clone(),
            sid: McpSessionId::random(),
            up: app.upstream_id.clone(),
            bs: backend_session.map(|s| s.to_string()),
            ini,
            mb: false,
            lz: false,
        };
        relayed
            .headers_mut()
            .insert(MCP_SESSION_ID, session_id(app, &claims)?);
    }
    Ok(relayed)
}

/// The cached result, and a session id whose own backend session opens when first needed.
fn from_cache(
    app: &Mcp,
    caller: &Caller,
    id: Option<RequestId>,
    ini: Value,
    cached: Cached,
) -> Result<Response<ProxyBody>, ProxyError> {
    let claims = SessionClaims {
        p: caller.principal.clone(),
        sid: McpSessionId::random(),
        up: app.upstream_id.clone(),
        bs: None,
        ini,
        mb: false,
        lz: cached.stateful,
    };
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.as_ref().map(RequestId::to_value),
        "result": cached.result,
    });
    let mut response = json_response(StatusCode::OK, &reply);
    response
        .headers_mut()
        .insert(MCP_SESSION_ID, session_id(app, &claims)?);
    Ok(response)
}

/// The broker's session id for a client MCP session: its claims, signed.
pub fn session_id(app: &Mcp, claims: &SessionClaims) -> Result<HeaderValue, ProxyError> {
    let token = app
        .keys
        .sign(SESSION_AUDIENCE, TOKEN_LIFETIME, app.now_secs(), claims)
        .map_err(|_| ProxyError::Signing)?;
    HeaderValue::from_str(&token).map_err(|_| ProxyError::Signing)
}

/// Answers a legacy client's `initialize` for a backend that speaks only 2026-07-28, from its
/// `server/discover` result, with a broker session id that says so (`mb`): each later request of
/// the client is turned into a modern one on its way ([`broker::modern::modernize`]).
fn initialize_for_modern_backend(
    app: &Mcp,
    caller: &Caller,
    parsed: &Body,
    ini: serde_json::Value,
    discover: &serde_json::Value,
) -> Result<Response<ProxyBody>, ProxyError> {
    let id = parsed.messages().first().and_then(|m| m.id.clone());
    let requested = ini
        .get("protocolVersion")
        .and_then(serde_json::Value::as_str);
    let result = broker::modern::initialize_result(discover, requested, broker::modern::HANDSHAKE);
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.as_ref().map(broker::jsonrpc::RequestId::to_value),
        "result": result,
    });
    let claims = SessionClaims {
        p: caller.principal.clone(),
        sid: McpSessionId::random(),
        up: app.upstream_id.clone(),
        bs: None,
        ini,
        mb: true,
        lz: false,
    };
    let mut response = json_response(StatusCode::OK, &reply);
    response
        .headers_mut()
        .insert(MCP_SESSION_ID, session_id(app, &claims)?);
    tracing::info!("answered initialize for a backend that speaks only 2026-07-28");
    Ok(response)
}
