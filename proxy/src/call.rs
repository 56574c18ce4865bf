//! A `tools/call` from the client: which work session it belongs to, whether it may go through, and
//! what the backend must be told. The decisions are the broker crate's; this file gathers their
//! inputs (handle, conversation, surface, one store lookup) and turns the outcome into a plan.
//! The surface and resolution go into the request span; refusals, resumes and store round trips
//! into the metrics.

use std::sync::Arc;

use broker::guidance;
use broker::ids::Project;
use broker::jsonrpc::{self, Kind, Message, Taken, ToolCall};
use broker::mcp::WORK_SESSION_ARG;
use broker::resolve::{self, Path, Resolution, Selector};
use broker::session::{Links, WorkSession};
use broker::store::{McpQuery, McpState, Query};
use broker::tokens::{HANDLE_AUDIENCE, HandleClaims};
use serde_json::Value;
use tracing::Span;
use tracing::field::display;

use crate::app::{App, TOKEN_LIFETIME, now_ms};
use crate::caller::Caller;
use crate::errors::ProxyError;
use crate::metrics::{Refusal, StoreOp};
use crate::relay::{SelectWatch, Watch};

/// `_meta` key some clients use for a conversation id.
const OPENAI_SESSION: &str = "openai/session";
/// `_meta` key carrying `clientInfo` in sessionless requests (protocol 2026-07-28).
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// What to do with the call.
pub enum Outcome {
    /// Answer locally with this JSON-RPC reply; nothing reaches the backend.
    Reply(Value),
    Forward(Box<Plan>),
}

/// How to forward the call.
pub struct Plan {
    /// The work session whose project the backend is told about.
    pub bound: Option<WorkSession>,
    /// The backend session must have `bound`'s project selected before the call (replay if not).
    pub needs_replay: bool,
    pub mcp: McpState,
    pub watch: Watch,
    /// The message changed (the `work_session` argument was removed): send it re-serialized.
    pub body_changed: bool,
    /// How `bound` was found (when a call resumed a work session).
    pub path: Option<Path>,
}

impl Plan {
    /// Forward untouched, with nothing bound.
    pub fn pass(mcp: McpState) -> Self {
        Self {
            bound: None,
            needs_replay: false,
            mcp,
            watch: Watch::default(),
            body_changed: false,
            path: None,
        }
    }
}

/// Plans one `tools/call`. `mcp` is the client MCP session, if the request has one.
pub async fn plan(
    app: &Arc<App>,
    caller: &Caller,
    message: &mut Message,
    mcp: Option<McpQuery>,
) -> Result<Outcome, ProxyError> {
    let Kind::ToolsCall(call) = message.kind.clone() else {
        return Ok(Outcome::Forward(Box::new(Plan::pass(McpState::default()))));
    };
    let id = message.id.clone().unwrap_or(jsonrpc::RequestId::Number(0));
    let refuse = |kind: Refusal, text: String| {
        app.metrics.refusal(kind);
        Ok(Outcome::Reply(jsonrpc::tool_error_reply(&id, &text)))
    };
    let select_tool = app.settings.select_tool.as_str();

    let presented = jsonrpc::take_argument(message, WORK_SESSION_ARG);
    let body_changed = presented.changed();
    let handle = match presented {
        Taken::NotText => Err("it must be a string".to_owned()),
        Taken::Absent | Taken::Text(None) => Ok(None),
        Taken::Text(Some(token)) => verify_handle(app, caller, &token).map(Some),
    };

    let client_name = message
        .params()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_CLIENT_INFO))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    let surface = caller.surface(app, client_name);
    Span::current().record("surface", display(&surface));
    let conversation = caller.conversation(message.meta_str(OPENAI_SESSION));
    let query = Query {
        principal: caller.principal.clone(),
        surface: surface.clone(),
        mcp: mcp.clone(),
        handle: handle.as_ref().ok().cloned().flatten(),
        conversation: conversation.clone(),
    };
    let needs_project = app.settings.needs_project(&call.name);
    let answer = match app
        .metrics
        .store(StoreOp::Lookup, app.store.lookup(&query))
        .await
    {
        Ok(answer) => answer,
        Err(error) if !needs_project && call.name != select_tool => {
            tracing::warn!(%error, tool = %call.name, "store unavailable: forwarding a tool that needs no project, unbound");
            let mut plan = Plan::pass(McpState::default());
            plan.body_changed = body_changed;
            return Ok(Outcome::Forward(Box::new(plan)));
        }
        Err(error) => {
            tracing::warn!(%error, tool = %call.name, "store unavailable: refusing a call that needs it");
            return refuse(Refusal::StoreUnavailable, guidance::store_unavailable());
        }
    };
    if answer.mcp.ended {
        return Err(ProxyError::UnknownSession);
    }
    let resolution = match &handle {
        Err(reason) => Resolution::HandleRefused {
            reason: reason.clone(),
        },
        Ok(presented) => resolve::resolve(
            &answer.found,
            presented.is_some(),
            app.settings.unkeyed_policy,
        ),
    };
    Span::current().record("resolution", resolution_label(&resolution));
    let links = Links {
        mcp_session: mcp.as_ref().map(|m| m.session.clone()),
        conversation: conversation.clone(),
    };
    let mut plan = Plan {
        bound: None,
        needs_replay: false,
        mcp: answer.mcp.clone(),
        watch: Watch::default(),
        body_changed,
        path: None,
    };

    if call.name == select_tool {
        let Some(project) = selected_project(app, &call) else {
            return Ok(Outcome::Forward(Box::new(plan))); // the backend explains what is wrong with its arguments
        };
        let who = Selector {
            principal: caller.principal.clone(),
            surface,
            conversation,
            now_ms: now_ms(),
        };
        let target = resolve::plan_selection(&resolution, &project, &who);
        let created = resolution.session().is_none_or(|s| s.id != target.id);
        let cap = app.settings.max_work_sessions;
        if created && cap > 0 && answer.live_count >= cap {
            tracing::warn!(principal = %caller.principal, live = answer.live_count, "work-session cap reached");
            return refuse(Refusal::TooMany, guidance::too_many(cap));
        }
        let claims = HandleClaims {
            p: caller.principal.clone(),
            ws: target.id.clone(),
        };
        let handle = app
            .keys
            .sign(HANDLE_AUDIENCE, TOKEN_LIFETIME, app.now_secs(), &claims)
            .map_err(|_| {
                ProxyError::Store(broker::store::StoreError::Unavailable(
                    "signing failed".into(),
                ))
            })?;
        plan.watch.select = Some(SelectWatch {
            id,
            plan: target.clone(),
            links,
            backend: None,
            handle,
            store: app.store.clone(),
            metrics: app.metrics.clone(),
            created,
        });
        plan.bound = Some(target);
        return Ok(Outcome::Forward(Box::new(plan)));
    }

    match resolution {
        Resolution::Bound { session, path } => {
            let touch = app.store.touch(&session, &links, now_ms());
            match app.metrics.store(StoreOp::Touch, touch).await {
                Ok(true) => {}
                Ok(false) if needs_project => {
                    return refuse(
                        Refusal::NoProject,
                        guidance::no_project(
                            select_tool,
                            &app.settings.select_arg,
                            &answer.found.recent_projects,
                        ),
                    );
                }
                Ok(false) => return Ok(Outcome::Forward(Box::new(plan))),
                Err(error) if needs_project => {
                    tracing::warn!(%error, "store unavailable on touch");
                    return refuse(Refusal::StoreUnavailable, guidance::store_unavailable());
                }
                Err(error) => {
                    tracing::warn!(%error, "store unavailable on touch of an exempt tool")
                }
            }
            app.metrics.resume(path);
            plan.needs_replay = needs_project;
            plan.bound = Some(session);
            plan.path = Some(path);
            Ok(Outcome::Forward(Box::new(plan)))
        }
        _ if !needs_project => Ok(Outcome::Forward(Box::new(plan))),
        Resolution::Unbound { recent } => refuse(
            Refusal::NoProject,
            guidance::no_project(select_tool, &app.settings.select_arg, &recent),
        ),
        Resolution::Ambiguous { projects } => refuse(
            Refusal::Ambiguous,
            guidance::ambiguous(select_tool, &projects),
        ),
        Resolution::HandleRefused { reason } => refuse(
            Refusal::HandleRefused,
            guidance::handle_refused(select_tool, &reason),
        ),
    }
}

/// The resolution, for the request span: the path that found the work session, else why none.
fn resolution_label(resolution: &Resolution) -> &'static str {
    match resolution {
        Resolution::Bound { path, .. } => path.as_str(),
        Resolution::Unbound { .. } => "unbound",
        Resolution::Ambiguous { .. } => "ambiguous",
        Resolution::HandleRefused { .. } => "handle_refused",
    }
}

fn verify_handle(
    app: &App,
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

fn selected_project(app: &App, call: &ToolCall) -> Option<Project> {
    call.arguments
        .get(&app.settings.select_arg)
        .and_then(Value::as_str)
        .and_then(|name| Project::parse(name.trim()).ok())
}
