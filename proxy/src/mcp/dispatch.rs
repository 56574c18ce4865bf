//! Requests on the MCP path: POST (JSON-RPC), GET (the server's SSE stream) and DELETE (end the
//! session). POST bodies are read with a cap, parsed once, and routed: `initialize` gets a broker
//! session id, a single `tools/call` is planned by [`crate::mcp::call`], everything else passes through
//! on the right backend session. What each request turns out to be (principal hash, MCP method,
//! tool, surface, work session, project) is recorded in the request span.

use std::sync::Arc;

use broker::decide::Route;
use broker::decide::request::{self, Post};
use broker::jsonrpc::{self, Body, Kind};
use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use tracing::Span;
use tracing::field::display;

use crate::backend::body::ProxyBody;
use crate::backend::body::empty_response;
use crate::backend::headers::{self, MCP_PROTOCOL_VERSION};
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::caller::mcp_query;
use crate::mcp::errors::ProxyError;
use crate::mcp::forward::{Outbound, forward};
use crate::mcp::relay::Watch;
use crate::mcp::requests::{
    Modern, not_opened_yet, pass_through, record_surface, session_state, tool_call,
};
use crate::metrics::{self, Rpc, StoreOp};
use broker::ids::PrincipalId;

/// Handles one request on the MCP path (its body is the edge's `RequestBody`), from `principal` (established by the edge).
pub async fn handle<B>(
    app: &Arc<Mcp>,
    request: Request<B>,
    principal: PrincipalId,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
{
    let (parts, body) = request.into_parts();
    let caller = Caller::identify(app, &parts, principal, client_ip)?;
    Span::current().record("principal", display(&caller.principal));
    match parts.method {
        Method::POST => post(app, &parts, caller, body).await,
        Method::GET => stream_or_delete(app, &parts, caller, false).await,
        Method::DELETE => stream_or_delete(app, &parts, caller, true).await,
        _ => Err(ProxyError::MethodNotAllowed),
    }
}

async fn stream_or_delete(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: Caller,
    delete: bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    record_surface(app, &caller, None);
    let state = session_state(app, &caller).await?;
    if delete && let Some(claims) = &caller.session {
        let end = app.store.end_mcp_session(&caller.principal, &claims.sid);
        app.metrics.store(StoreOp::EndMcpSession, end).await?;
    }
    if caller.session.as_ref().is_some_and(|c| c.mb) {
        // A backend that speaks only 2026-07-28 has no session to end and no GET stream.
        let status = if delete {
            StatusCode::OK
        } else {
            StatusCode::METHOD_NOT_ALLOWED
        };
        return Ok(empty_response(status));
    }
    if delete && not_opened_yet(&caller, &state) {
        return Ok(empty_response(StatusCode::OK)); // no backend session was ever opened for it
    }
    let out = Outbound {
        parts,
        caller: &caller,
        body: Bytes::new(),
        bound: None,
        via: None,
        route: Route::Own,
        mcp: state,
        watch: Watch::default(),
        call_id: None,
        retry_on_404: !delete,
        target: None,
    };
    let response = forward(app, out).await?;
    if delete || !response.status().is_success() {
        return Ok(response);
    }
    Ok(crate::mcp::get_stream::with_work_session(app, parts, &caller, response).await)
}

/// Names the request's span after its message, per the OpenTelemetry MCP conventions
/// (`{mcp.method.name} {target}` and their attributes), records its MCP method for the operation
/// duration metric, and continues a trace the client carried in `params._meta` (before any child
/// span: none started yet).
fn describe(message: &jsonrpc::Message, caller: &Caller, version: Option<&str>) {
    use crate::telemetry::propagation;
    let span = Span::current();
    let method = message
        .value
        .get("method")
        .and_then(serde_json::Value::as_str);
    let Some(method) = method else {
        return; // a response to a server request: no operation of its own
    };
    metrics::set_mcp_method(metrics::method_label(method));
    if let Kind::ToolsCall(call) = &message.kind {
        span.record("tool", call.name.as_str());
    }
    // The conventions' attributes only with traces on: the logs keep their fields.
    if !crate::telemetry::on() {
        return;
    }
    if let Kind::ToolsCall(call) = &message.kind {
        span.record("gen_ai.tool.name", call.name.as_str());
        span.record("gen_ai.operation.name", "execute_tool");
    }
    let params = message.params();
    let target = propagation::target(method, params);
    span.record(
        "otel.name",
        propagation::span_name(method, target.as_deref()),
    );
    span.record("mcp.method.name", method);
    if method.starts_with("resources/")
        && let Some(uri) = &target
    {
        span.record("mcp.resource.uri", uri.as_str());
    }
    match &message.id {
        Some(jsonrpc::RequestId::Number(n)) => {
            span.record("jsonrpc.request.id", n.to_string());
        }
        Some(jsonrpc::RequestId::Text(t)) => {
            span.record("jsonrpc.request.id", t.as_str());
        }
        None => {}
    }
    if let Some(version) = version {
        span.record("mcp.protocol.version", version);
    }
    if let Some(claims) = &caller.session {
        span.record("mcp.session.id", display(&claims.sid));
    }
    if let Some(parent) = propagation::from_meta(params) {
        propagation::continue_trace(&span, parent);
    }
}

/// A POST: its body (the edge's, under its deadline and the in-flight budget) read up to the
/// configured limit, then handled by kind.
async fn post<B>(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: Caller,
    body: B,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
{
    let limit = app.settings.max_body;
    let bytes = match crate::backend::body::read_capped(body, limit).await {
        Ok(bytes) => bytes,
        Err(crate::backend::body::ReadError::TooLarge) => {
            return Err(ProxyError::BodyTooLarge(limit));
        }
        Err(crate::backend::body::ReadError::Unreadable) => return Err(ProxyError::BodyUnreadable),
    };
    let parsed = jsonrpc::parse(&bytes).map_err(ProxyError::Parse)?;
    let rpc = match &parsed {
        Body::Single(message) => Rpc::of(&message.kind),
        Body::Batch(_) => Rpc::Other,
    };
    metrics::set_method(rpc);
    Span::current().record("rpc", rpc.as_str());
    let version = headers::text(&parts.headers, &MCP_PROTOCOL_VERSION);
    if let Body::Single(message) = &parsed {
        describe(message, &caller, version);
    }
    match request::classify(&parsed, version, caller.session.is_some()) {
        Post::Initialize => {
            return crate::mcp::initialize::handle(app, parts, &caller, bytes, &parsed).await;
        }
        Post::Modern => return crate::mcp::modern::post(app, parts, caller, bytes, parsed).await,
        Post::Refused(rejection) => return Ok(crate::mcp::modern::refused(&rejection, None)),
        Post::Answer => {
            if let Body::Single(message) = &parsed
                && let Some(answered) =
                    crate::mcp::answers::answer(app, parts, &caller, message).await
            {
                return answered; // an answer to a server request: to the backend session that asked
            }
        }
        Post::Resolved => {
            let mcp = caller.session.as_ref().map(|c| mcp_query(app, c));
            return tool_call(app, parts, &caller, bytes, parsed, mcp, Modern::No).await;
        }
        Post::PassThrough => {}
    }
    pass_through(app, parts, &caller, bytes, parsed, Modern::No).await
}
