//! A `tools/call` from the client: gathers the facts ([`broker::decide::Facts`]: the tool, the
//! handle, the conversation key, one store lookup), asks [`broker::decide::decide`] what to do, and
//! executes the touch it asks for. Every rule lives in the broker crate; this file only does I/O.
//! The surface and resolution go into the request span; refusals, resumes and store round trips
//! into the metrics.

use std::sync::Arc;

use broker::decide::{
    self, Backend, Decision, Facts, Forward, HandleFact, Refusal, SelectArg, Tool,
};
use broker::jsonrpc::{self, Kind, Message, Taken};
use broker::mcp::WORK_SESSION_ARG;
use broker::resolve::{Path, Selector, Unkeyed};
use broker::session::{Links, WorkSession};
use broker::store::{McpQuery, McpState, Query};
use broker::tokens::{HANDLE_AUDIENCE, HandleClaims};
use serde_json::Value;
use tracing::Span;
use tracing::field::display;

use crate::backend::now_ms;
use crate::mcp::caller::Caller;
use crate::mcp::errors::ProxyError;
use crate::mcp::relay::Watch;
use crate::mcp::select::SelectWatch;
use crate::mcp::{Mcp, TOKEN_LIFETIME};
use crate::metrics::StoreOp;

/// `_meta` key carrying `clientInfo` in sessionless requests (protocol 2026-07-28).
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// What to do with the call.
pub enum Outcome {
    /// Answer locally with this JSON-RPC reply; nothing reaches the backend.
    Reply(Value),
    Forward(Box<Plan>),
}

/// How to forward the call: the broker's decision, plus what executing it needs.
pub struct Plan {
    pub forward: Forward,
    pub mcp: McpState,
    pub watch: Watch,
    /// The message changed (the `work_session` argument was removed): send it re-serialized.
    pub body_changed: bool,
}

impl Plan {
    /// The work session whose project the backend is told about.
    pub fn bound(&self) -> Option<&broker::session::WorkSession> {
        self.forward.bound.as_ref()
    }

    /// How the bound work session was found (when a call resumed one).
    pub fn path(&self) -> Option<Path> {
        self.forward.path
    }
}

/// Plans one `tools/call`. `mcp` is the client MCP session, if the request has one.
pub async fn plan(
    app: &Arc<Mcp>,
    caller: &Caller,
    message: &mut Message,
    mcp: Option<McpQuery>,
) -> Result<Outcome, ProxyError> {
    let backend = backend_kind(caller);
    let scoped = match &message.kind {
        Kind::ToolsCall(_) => false,
        Kind::ToolsList => true,
        Kind::OtherRequest(method) if decide::is_project_scoped(method) => true,
        _ => {
            return Ok(Outcome::Forward(Box::new(Plan {
                forward: Forward::unbound(backend),
                mcp: McpState::default(),
                watch: Watch::default(),
                body_changed: false,
            })));
        }
    };
    let id = message.id.clone().unwrap_or(jsonrpc::RequestId::Number(0));
    let settings = &app.settings;

    // A call's handle is its `work_session` argument; another request's, `_meta.work_session`.
    let presented = if scoped {
        jsonrpc::take_meta(message, WORK_SESSION_ARG)
    } else {
        jsonrpc::take_argument(message, WORK_SESSION_ARG)
    };
    let body_changed = presented.changed();
    let mirrored = caller.param_work_session.clone();
    let token = match (presented, mirrored) {
        (Taken::NotText, _) => Err("it must be a string".to_owned()),
        (Taken::Text(Some(body)), Some(header)) if body.trim() != header.trim() => {
            Err("the Mcp-Param-Work-Session header does not match the work_session argument".into())
        }
        (Taken::Text(Some(token)), _) | (Taken::Absent | Taken::Text(None), Some(token)) => {
            Ok(Some(token))
        }
        (Taken::Absent | Taken::Text(None), None) => Ok(None),
    };
    let (handle_id, handle) = match token {
        Err(reason) => (None, HandleFact::Refused(reason)),
        Ok(None) => (None, HandleFact::Absent),
        Ok(Some(token)) => match verify_handle(app, caller, &token) {
            Ok(ws) => (Some(ws), HandleFact::Verified),
            Err(reason) => (None, HandleFact::Refused(reason)),
        },
    };
    let tool = match &message.kind {
        _ if scoped => Tool::Scoped,
        Kind::ToolsCall(call) if call.name == settings.select_tool => {
            Tool::Select(SelectArg::read(
                call.arguments.get(&settings.select_arg),
                &settings.select_arg,
            ))
        }
        Kind::ToolsCall(call) if settings.needs_project(&call.name) => Tool::NeedsProject,
        _ => Tool::Exempt,
    };
    let name = match &message.kind {
        Kind::ToolsCall(call) => call.name.clone(),
        Kind::OtherRequest(method) | Kind::Notification(method) => method.clone(),
        _ => jsonrpc::methods::TOOLS_LIST.to_owned(),
    };

    let client_name = message
        .params()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_CLIENT_INFO))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    let surface = caller.surface(app, client_name);
    Span::current().record("surface", display(&surface));
    let conversation = caller.conversation(app, message);
    // The refresher records calls in their work sessions, at most once per interval
    // (mcp/touches.rs): the lookup only reads, whatever `decide::record_with_lookup` allows.
    let record = app.touches.interval().is_zero() && decide::record_with_lookup(&tool, &handle);
    let looked = Looked {
        query: Query {
            principal: caller.principal.clone(),
            surface,
            mcp: mcp.clone(),
            handle: handle_id,
            conversation: conversation.clone(),
            settle_early: !matches!(tool, Tool::Select(_)),
            record_when_settled: record,
        },
        answer: None,
        now: now_ms(),
    }
    .run(app, &name)
    .await;
    let now = looked.now;
    let answer = looked.answer.clone();
    let facts = looked.facts(app, tool.clone(), handle, backend);
    let refuse = |refusal: Refusal| {
        app.metrics.refusal(&refusal);
        Span::current().record("resolution", refusal.label());
        let text = refusal.text(&settings.select_tool, &settings.select_arg);
        if scoped {
            // Not a tool: a JSON-RPC error (the handle is a parameter of the request).
            let code = jsonrpc::codes::INVALID_PARAMS;
            return Ok(Outcome::Reply(jsonrpc::error_reply(Some(&id), code, &text)));
        }
        Ok(Outcome::Reply(jsonrpc::tool_error_reply(&id, &text)))
    };
    let forward = match decide::decide(&facts) {
        Decision::UnknownSession => return Err(ProxyError::UnknownSession),
        Decision::Refuse(refusal) => return refuse(refusal),
        Decision::Forward(forward) => *forward,
    };
    let links = Links {
        mcp_session: mcp.as_ref().map(|m| m.session.clone()),
        conversation,
        count_only: false,
    };
    let answer = answer.unwrap_or_default();
    if forward.touch
        && !answer.recorded
        && let Some(session) = &forward.bound
    {
        // Only a call that came through its MCP session's link slides it; any other counts the
        // MCP session without linking it (a connector's fresh session per call adds no key).
        let links = Links {
            count_only: forward.path != Some(Path::McpSession),
            ..links.clone()
        };
        touch_off_the_reply_path(app, session.clone(), links, now);
    }
    Span::current().record(
        "resolution",
        forward
            .path
            .map(Path::as_str)
            .or(forward.select.as_ref().map(|_| "select"))
            .unwrap_or("unbound"),
    );
    if let Some(path) = forward.path
        && forward.bound.is_some()
    {
        app.metrics.resume(path);
    }
    let mut watch = Watch::default();
    if let Some(select) = &forward.select {
        watch.select = Some(Box::new(select_watch(app, caller, id, select, links)?));
    }
    Ok(Outcome::Forward(Box::new(Plan {
        forward,
        mcp: answer.mcp,
        watch,
        body_changed,
    })))
}

/// One store lookup, and the facts a decision is made from.
struct Looked {
    query: Query,
    /// `None`: the store failed.
    answer: Option<broker::store::Answer>,
    now: u64,
}

impl Looked {
    async fn run(mut self, app: &Mcp, what: &str) -> Self {
        let looked_up = app
            .metrics
            .store(StoreOp::Lookup, app.store.lookup(&self.query))
            .await;
        if let Err(error) = &looked_up {
            tracing::warn!(%error, request = %what, "store unavailable on lookup");
        }
        self.answer = looked_up.ok();
        self
    }

    fn facts(&self, app: &Mcp, tool: Tool, handle: HandleFact, backend: Backend) -> Facts<'_> {
        let settings = &app.settings;
        Facts {
            tool,
            handle,
            keyed: self.query.conversation.is_some(),
            answer: self.answer.as_ref(),
            unkeyed: Unkeyed {
                policy: settings.unkeyed_policy,
                window_ms: u64::try_from(settings.surface_window.as_millis()).unwrap_or(u64::MAX),
                now_ms: self.now,
            },
            cap: settings.max_work_sessions,
            backend,
            selector: Selector {
                principal: self.query.principal.clone(),
                surface: self.query.surface.clone(),
                conversation: self.query.conversation.clone(),
                now_ms: self.now,
            },
        }
    }
}

/// The work session a message without a request of its own belongs to (a cancellation, a GET
/// stream), resolved as a project-scoped request would be (MCP session, conversation header,
/// surface within its window), without recording anything: it is not activity.
pub async fn resolve_passive(
    app: &Mcp,
    caller: &Caller,
    mcp: Option<McpQuery>,
) -> Option<WorkSession> {
    let looked = Looked {
        query: Query {
            principal: caller.principal.clone(),
            surface: caller.surface(app, None),
            mcp,
            handle: None,
            conversation: caller.header_conversation(),
            settle_early: true,
            record_when_settled: false,
        },
        answer: None,
        now: now_ms(),
    }
    .run(app, "passive")
    .await;
    let facts = looked.facts(app, Tool::Scoped, HandleFact::Absent, backend_kind(caller));
    match decide::decide(&facts) {
        Decision::Forward(forward) => forward.bound,
        _ => None,
    }
}

/// Records the call in its work session (slides its idle TTL and deadline) without making the call
/// wait for it: the lookup just found the work session live, so the call goes on; a touch that finds
/// it ended meanwhile (finalized in that instant) writes nothing and never revives it. Bounded, and
/// coalesced per work session while the store is slow ([`crate::mcp::touches`]).
fn touch_off_the_reply_path(app: &Arc<Mcp>, session: WorkSession, links: Links, now: u64) {
    app.touches
        .touch(&app.store, &app.metrics, session, links, now);
}

/// Whether calls of this client run on backend sessions: not when the backend's `initialize`
/// handed out none (a stateless backend), nor for a sessionless client.
fn backend_kind(caller: &Caller) -> Backend {
    match &caller.session {
        _ if caller.bridge.is_some() => Backend::Stateful,
        Some(claims) if claims.bs.is_some() || claims.lz => Backend::Stateful,
        _ => Backend::Sessionless,
    }
}

fn select_watch(
    app: &Arc<Mcp>,
    caller: &Caller,
    id: jsonrpc::RequestId,
    select: &decide::SelectPlan,
    links: Links,
) -> Result<SelectWatch, ProxyError> {
    let claims = HandleClaims {
        p: caller.principal.clone(),
        ws: select.target.id.clone(),
    };
    let handle = app
        .keys
        .sign(HANDLE_AUDIENCE, TOKEN_LIFETIME, app.now_secs(), &claims)
        .map_err(|_| ProxyError::Signing)?;
    Ok(SelectWatch {
        id,
        plan: select.target.clone(),
        links,
        backend: None,
        handle,
        store: app.store.clone(),
        metrics: app.metrics.clone(),
        created: select.created,
    })
}

fn verify_handle(
    app: &Mcp,
    caller: &Caller,
    token: &str,
) -> Result<broker::ids::WorkSessionId, String> {
    let claims: HandleClaims = app
        .keys
        .verify(HANDLE_AUDIENCE, token.trim())
        .map_err(|e| e.to_string().trim_start_matches("the ").to_owned())?;
    if claims.p != caller.principal {
        return Err("it belongs to another credential".into());
    }
    Ok(claims.ws)
}
