//! POSTs of modern (2026-07-28, sessionless) clients: no session id, the protocol version in
//! `_meta` or the `MCP-Protocol-Version` header.
//!
//! 1. The request ladder ([`broker::modern::check`]): the `_meta` envelope, the routing headers
//!    against the body, the version. A mismatch is a 400 with the spec's code; nothing is routed.
//! 2. Bridged or not ([`broker::modern::bridges`], from what the backend speaks):
//!    - bridged (a legacy or stateful backend): `server/discover` is answered by the broker from
//!      the backend's `initialize` result; notifications are acknowledged (202: the modern wire has
//!      none a backend acts on); every other request runs on legacy backend sessions opened for the
//!      client ([`crate::backend::bridge`]), and every result it gets back gains `resultType`;
//!    - not bridged (a modern, stateless backend): requests pass through; a `tools/call` is
//!      resolved, guarded and told the project like any other.
//!
//! In both, a `tools/call` is resolved by handle (the `work_session` argument, or its
//! `Mcp-Param-Work-Session` header), conversation key and surface; there is no MCP session, so no
//! MCP-session link is read or written, and no session id is minted or echoed.

use std::sync::Arc;

use broker::jsonrpc::{Body, Kind, RequestId};
use broker::modern::{self, BridgeMode, Rejection, RoutingHeaders};
use bytes::Bytes;
use http::header::HeaderMap;
use http::request::Parts;
use http::{Response, StatusCode};

use crate::backend::body::{ProxyBody, full};
use crate::backend::bridge::Bridged;
use crate::backend::headers::{self, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION};
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::errors::{ProxyError, json_response};
use crate::mcp::message_routing::rounds;
use crate::mcp::requests::{Modern, is_resolved, pass_through, tool_call};

/// The answer to a modern request (or batch, `id` none) refused before routing.
pub fn refused(rejection: &Rejection, id: Option<&RequestId>) -> Response<ProxyBody> {
    tracing::info!(code = rejection.code, reason = %rejection.message, "modern request refused");
    let status = StatusCode::from_u16(rejection.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &rejection.reply(id))
}

/// Handles one modern POST (a single message).
pub async fn post(
    app: &Arc<Mcp>,
    parts: &Parts,
    mut caller: Caller,
    bytes: Bytes,
    parsed: Body,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Body::Single(message) = &parsed else {
        return pass_through(app, parts, &caller, bytes, parsed, Modern::Direct).await;
    };
    if message.is_request()
        && let Err(rejection) = modern::check(message, &routing_headers(&parts.headers))
    {
        return Ok(refused(&rejection, message.id.as_ref()));
    }
    let profile = match app.settings.bridge {
        BridgeMode::Off => None,
        BridgeMode::Auto => {
            let profile = app.bridge.profile(app).await?;
            modern::bridges(BridgeMode::Auto, profile.eras).then_some(profile)
        }
    };
    let Some(profile) = profile else {
        return if is_resolved(message) {
            tool_call(app, parts, &caller, bytes, parsed, None, Modern::Direct).await
        } else {
            pass_through(app, parts, &caller, bytes, parsed, Modern::Direct).await
        };
    };
    match &message.kind {
        Kind::Discover => {
            let initialize = profile.initialize.unwrap_or_default();
            let reply = serde_json::json!({
                "jsonrpc": "2.0",
                "id": message.id.as_ref().map(broker::jsonrpc::RequestId::to_value),
                "result": modern::discover_result(&initialize),
            });
            Ok(json_response(StatusCode::OK, &reply))
        }
        Kind::Notification(_) | Kind::Response => {
            let mut accepted = Response::new(full(Bytes::new()));
            *accepted.status_mut() = StatusCode::ACCEPTED;
            Ok(accepted)
        }
        _ => {
            let is_call = is_resolved(message);
            let version = &profile.legacy_version;
            if let Some(resumed) = rounds::resume(app, &caller, version, message).await {
                return resumed; // a retry of a call parked on a server request
            }
            caller.bridge = Some(Bridged {
                ini: modern::legacy_initialize_params(message, &profile.legacy_version),
                legacy_version: profile.legacy_version.clone(),
            });
            if is_call {
                tool_call(app, parts, &caller, bytes, parsed, None, Modern::Bridged).await
            } else {
                pass_through(app, parts, &caller, bytes, parsed, Modern::Bridged).await
            }
        }
    }
}

/// The request's routing headers, noting one sent twice.
fn routing_headers(headers: &HeaderMap) -> RoutingHeaders<'_> {
    let duplicated = [&MCP_PROTOCOL_VERSION, &MCP_METHOD, &MCP_NAME]
        .iter()
        .any(|name| headers.get_all(*name).iter().count() > 1);
    RoutingHeaders {
        protocol_version: headers::text(headers, &MCP_PROTOCOL_VERSION),
        method: headers::text(headers, &MCP_METHOD),
        name: headers::text(headers, &MCP_NAME),
        duplicated,
    }
}
