//! One request on the MCP path once it is known to be neither `initialize` nor a modern client's:
//! a single request resolved to a work session first ([`tool_call`]: a `tools/call`, `tools/list`
//! or a project-scoped read), or passed through on the right backend session ([`pass_through`]).
//! Both eras' paths end here ([`crate::mcp::modern`] after bridging, [`crate::mcp::dispatch`]
//! directly).

use crate::backend::body::ProxyBody;
use crate::backend::body::empty_response;
use crate::mcp::Mcp;
use crate::mcp::call::{self, Outcome};
use crate::mcp::caller::Caller;
use crate::mcp::caller::mcp_query;
use crate::mcp::errors::{ProxyError, json_response};
use crate::mcp::forward::{Outbound, forward};
use crate::mcp::relay::Watch;
use crate::metrics::StoreOp;
use broker::decide::{Route, request};
use broker::jsonrpc::{self, Body, Kind};
use broker::mcp::WORK_SESSION_ARG;
use broker::store::{McpQuery, McpState};
use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use std::sync::Arc;
use tracing::Span;
use tracing::field::display;

/// Reads the MCP-session state for a request that needs no resolution. A store failure is not fatal
/// here: such requests bind nothing, so they go on with the session id's own backend session.
pub async fn session_state(app: &Mcp, caller: &Caller) -> Result<McpState, ProxyError> {
    let Some(claims) = &caller.session else {
        return Ok(McpState::default());
    };
    let query = mcp_query(app, claims);
    let read = app.store.mcp_state(&caller.principal, &query);
    match app.metrics.store(StoreOp::McpState, read).await {
        Ok(state) if state.ended => Err(ProxyError::UnknownSession),
        Ok(state) => Ok(state),
        Err(error) => {
            tracing::warn!(%error, "store unavailable: forwarding on the session id's own backend session");
            Ok(McpState::default())
        }
    }
}

pub use broker::decide::request::is_resolved;

/// Whether a request is a modern client's, and so how its replies are marked complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modern {
    No,
    /// Replies the broker writes itself gain `resultType`.
    Direct,
    /// Bridged onto a legacy backend: the backend's replies gain `resultType` too.
    Bridged,
}

/// A single `tools/call` or project-scoped request: planned by [`crate::mcp::call`], then forwarded (or
/// answered by the broker).
pub async fn tool_call(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: &Caller,
    bytes: Bytes,
    mut parsed: Body,
    mcp: Option<McpQuery>,
    modern: Modern,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Body::Single(message) = &mut parsed else {
        return pass_through(app, parts, caller, bytes, parsed, modern).await;
    };
    let id = message.id.clone();
    let is_list = message.kind == Kind::ToolsList;
    let cacheable = message
        .value
        .get("method")
        .and_then(serde_json::Value::as_str)
        .is_some_and(broker::modern::is_cacheable);
    let plan = match call::plan(app, caller, message, mcp).await? {
        Outcome::Reply(mut reply) => {
            if modern != Modern::No {
                broker::modern::mark_complete(&mut reply, false);
            }
            return Ok(json_response(StatusCode::OK, &reply));
        }
        Outcome::Forward(plan) => plan,
    };
    if let Some(work) = plan.bound() {
        Span::current()
            .record("work_session", display(&work.id))
            .record("project", display(&work.project));
    }
    let body = if plan.body_changed {
        Bytes::from(parsed.to_json())
    } else {
        bytes
    };
    let mut plan = *plan;
    let via = match (plan.forward.path, &plan.forward.select) {
        (Some(path), _) => Some(path.as_str()),
        (None, Some(_)) => Some("select"),
        (None, None) => None,
    };
    if modern == Modern::Bridged || (modern == Modern::Direct && plan.forward.select.is_some()) {
        // A select's reply may be replaced by the broker's own tool error: mark it either way.
        plan.watch
            .complete
            .extend(id.clone().map(|id| (id, cacheable)));
    }
    if is_list {
        plan.watch.tools_list.extend(id.clone()); // its reply gains the work_session argument
    }
    let out = Outbound {
        parts,
        caller,
        body,
        bound: plan.forward.bound,
        via,
        route: plan.forward.route,
        mcp: plan.mcp,
        watch: plan.watch,
        call_id: id,
        retry_on_404: true,
        target: None,
    };
    forward(app, out).await
}

/// Batches, notifications, `tools/list` and other requests: forwarded on the right backend session;
/// `tools/list` replies gain the `work_session` argument; handles inside batched calls are removed.
pub async fn pass_through(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: &Caller,
    bytes: Bytes,
    mut parsed: Body,
    modern: Modern,
) -> Result<Response<ProxyBody>, ProxyError> {
    record_surface(app, caller, None);
    // A batched call is not resolved or guarded, so only tools that need no project may be in one:
    // a select or a project tool there would run on whatever the backend session has.
    if request::batch_refused(&parsed, &app.settings.select_tool, |name| {
        app.settings.needs_project(name)
    }) {
        return Err(ProxyError::BatchedProjectCall);
    }
    if caller.session.as_ref().is_some_and(|c| c.lz)
        && matches!(&parsed, Body::Single(m) if matches!(&m.kind, Kind::Notification(method) if method == "notifications/initialized"))
    {
        // The broker answered this client's initialize from its cache: whenever its own backend
        // session is opened, the broker sends that session's notifications/initialized itself. So
        // this one has nowhere to go, and is acknowledged without a store read.
        return Ok(empty_response(StatusCode::ACCEPTED));
    }
    if let Body::Single(message) = &parsed
        && let Some(sent) = crate::mcp::answers::cancel(app, parts, caller, message).await
    {
        return sent; // a cancellation of a request running on this replica: sent where it runs
    }
    let state = session_state(app, caller).await?;
    let mut watch = Watch::default();
    let mut changed = false;
    for message in parsed.messages_mut() {
        match &message.kind {
            Kind::ToolsList => watch.tools_list.extend(message.id.clone()),
            Kind::ToolsCall(_) => {
                changed |= jsonrpc::take_argument(message, WORK_SESSION_ARG).changed()
            }
            _ => {}
        }
        if modern == Modern::Bridged
            && let Some(id) = message.id.clone()
        {
            let method = message
                .value
                .get("method")
                .and_then(serde_json::Value::as_str);
            let cacheable = method.is_some_and(broker::modern::is_cacheable);
            watch.complete.push((id, cacheable));
        }
    }
    let body = if changed {
        Bytes::from(parsed.to_json())
    } else {
        bytes
    };
    let out = Outbound {
        parts,
        caller,
        body,
        bound: None,
        via: None,
        route: Route::Own,
        mcp: state,
        watch,
        call_id: None,
        retry_on_404: true,
        target: None,
    };
    forward(app, out).await
}

/// The client's own backend session is to be opened when first needed, and has not been yet.
pub fn not_opened_yet(caller: &Caller, state: &McpState) -> bool {
    caller.session.as_ref().is_some_and(|c| c.lz) && state.backend_override.is_none()
}

/// Records the request's surface in the span (`tools/call` records its own, which may come from `_meta`).
pub fn record_surface(app: &Mcp, caller: &Caller, client_name: Option<&str>) {
    Span::current().record("surface", display(caller.surface(app, client_name)));
}
