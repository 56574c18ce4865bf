//! What to do with one `tools/call`: a pure function of the facts the proxy gathered (which tool,
//! the handle, the conversation key, one store lookup) to a [`Decision`]. The proxy only executes
//! decisions, so every rule here is a row of a table test, never a socket test.
//!
//! Rules, in order:
//! 1. the store failed: refuse what needs it (a select or a project tool); an exempt tool goes
//!    through unbound;
//! 2. the MCP session was ended (DELETE): unknown session;
//! 3. a select: refused when its argument cannot be bound exactly as the backend would receive it,
//!    or when it would start one more work session than the cap allows; else it goes to the
//!    target work session's own backend session, watched, to bind on success;
//! 4. resolved: the call refreshes its work session (touch, off the reply path), and runs on the work
//!    session's backend session for its project (opened and the selection replayed if there is none);
//!    an exempt tool runs on the client's own backend session, which never has a project, with the
//!    binding in the headers;
//! 5. not resolved: an exempt tool goes through unbound, and so does a project-scoped request
//!    other than a call (unless its handle was refused); anything else is refused with guidance.

pub mod backend;
pub mod request;
pub mod select;

use crate::guidance;
use crate::ids::Project;
use crate::resolve::{self, Asked, Path, Resolution, Selector, Unkeyed};
use crate::session::WorkSession;
use crate::store::Answer;

/// What kind of tool is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// The select tool, with what its project argument turned out to be.
    Select(SelectArg),
    /// A tool that needs no project.
    Exempt,
    /// A tool that works on the selected project.
    NeedsProject,
    /// A request other than `tools/call` that may depend on the project ([`is_project_scoped`]):
    /// on the work session's backend session when one resolves, else on the client's own; never
    /// refused for want of a project (the backend answers as it would), only for a refused handle.
    Scoped,
}

/// Requests other than `tools/call` that run on the work session's backend session when they
/// resolve to one: what they read or list may depend on the selected project.
pub fn is_project_scoped(method: &str) -> bool {
    matches!(
        method,
        "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "resources/list"
            | "resources/templates/list"
            | "prompts/get"
            | "prompts/list"
            | "completion/complete"
            | "tools/list"
    )
}

/// The select tool's project argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectArg {
    Project(Project),
    /// Missing, not a string, or not a name the broker can bind exactly as sent: why.
    Unusable(String),
}

impl SelectArg {
    /// Reads the argument as sent: it must be a string that is a valid project name as it stands
    /// (no surrounding white space, no control characters), so the backend selects exactly what the
    /// broker binds.
    pub fn read(value: Option<&serde_json::Value>, arg: &str) -> Self {
        let Some(value) = value else {
            return Self::Unusable(format!("the {arg} argument is missing"));
        };
        let Some(text) = value.as_str() else {
            return Self::Unusable(format!("the {arg} argument must be a string"));
        };
        if text.trim() != text {
            return Self::Unusable(format!(
                "the {arg} argument must not start or end with white space"
            ));
        }
        match Project::parse(text) {
            Ok(project) => Self::Project(project),
            Err(error) => {
                Self::Unusable(format!("the {arg} argument is not a usable name: {error}"))
            }
        }
    }
}

/// What the request's `work_session` argument turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HandleFact {
    #[default]
    Absent,
    /// Signature and principal checked; its work session is looked up as `found.handle`.
    Verified,
    /// Not usable, with the reason for the model.
    Refused(String),
}

/// Whether the backend keeps sessions at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Its `initialize` handed out a session id: calls run on backend sessions.
    Stateful,
    /// No backend session (a stateless backend, or a sessionless client): nothing to replay onto;
    /// the backend reads the project from the broker's headers.
    Sessionless,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub tool: Tool,
    pub handle: HandleFact,
    /// The request carries a conversation key.
    pub keyed: bool,
    /// The store's answer, or `None` when the store failed.
    pub answer: Option<&'a Answer>,
    pub unkeyed: Unkeyed,
    /// Most live work sessions per principal (0: no limit).
    pub cap: u64,
    pub backend: Backend,
    /// Who would own a work session a select starts.
    pub selector: Selector,
}

/// Why a call is answered by the broker with a tool error; nothing reaches the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoProject { recent: Vec<Project> },
    Ambiguous { projects: Vec<Project> },
    HandleRefused { reason: String },
    StoreUnavailable,
    TooMany { cap: u64 },
    BadSelect { reason: String },
}

impl Refusal {
    /// A label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoProject { .. } => "no_project",
            Refusal::Ambiguous { .. } => "ambiguous",
            Refusal::HandleRefused { .. } => "handle_refused",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::TooMany { .. } => "too_many",
            Refusal::BadSelect { .. } => "bad_select",
        }
    }

    /// The text the model reads.
    pub fn text(&self, select_tool: &str, select_arg: &str) -> String {
        match self {
            Refusal::NoProject { recent } => guidance::no_project(select_tool, select_arg, recent),
            Refusal::Ambiguous { projects } => guidance::ambiguous(select_tool, projects),
            Refusal::HandleRefused { reason } => guidance::handle_refused(select_tool, reason),
            Refusal::StoreUnavailable => guidance::store_unavailable(),
            Refusal::TooMany { cap } => guidance::too_many(*cap),
            Refusal::BadSelect { reason } => guidance::bad_select(select_tool, reason),
        }
    }
}

/// Which backend session the call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The client's own backend session (its `initialize`'s, or its replacement): never has a
    /// project selected.
    Own,
    /// The bound work session's backend session for its project; `replay`: when none is recorded,
    /// open one and select the project first (false for the select call itself, which selects).
    Work { replay: bool },
    /// No backend session (see [`Backend::Sessionless`]).
    None,
}

/// A select being forwarded: bind `target` when the backend says it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectPlan {
    pub target: WorkSession,
    /// `target` is a new work session (counted as created when bound).
    pub created: bool,
}

/// How to forward a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The work session whose project the backend is told (headers), if any.
    pub bound: Option<WorkSession>,
    /// How `bound` was found, for a call that resumed a work session.
    pub path: Option<Path>,
    /// Record the call in `bound` (slide its TTL and deadline).
    pub touch: bool,
    pub route: Route,
    pub select: Option<SelectPlan>,
}

impl Forward {
    /// Untouched and unbound, on the client's own backend session.
    pub fn unbound(backend: Backend) -> Self {
        Self {
            bound: None,
            path: None,
            touch: false,
            route: own(backend),
            select: None,
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refuse(Refusal),
    Forward(Box<Forward>),
    /// The MCP session was ended by its client: answer as for any unknown session (404).
    UnknownSession,
}

fn own(backend: Backend) -> Route {
    match backend {
        Backend::Stateful => Route::Own,
        Backend::Sessionless => Route::None,
    }
}

fn work(backend: Backend, replay: bool) -> Route {
    match backend {
        Backend::Stateful => Route::Work { replay },
        Backend::Sessionless => Route::None,
    }
}

/// Decides one call.
pub fn decide(facts: &Facts<'_>) -> Decision {
    let needs_store = !matches!(facts.tool, Tool::Exempt | Tool::Scoped);
    let Some(answer) = facts.answer else {
        return if needs_store {
            Decision::Refuse(Refusal::StoreUnavailable)
        } else {
            Decision::Forward(Box::new(Forward::unbound(facts.backend)))
        };
    };
    if answer.mcp.ended {
        return Decision::UnknownSession;
    }
    let resolution = match &facts.handle {
        HandleFact::Refused(reason) => Resolution::HandleRefused {
            reason: reason.clone(),
        },
        handle => resolve::resolve(
            &answer.found,
            Asked {
                handle: *handle == HandleFact::Verified,
                keyed: facts.keyed,
            },
            facts.unkeyed,
        ),
    };
    match &facts.tool {
        Tool::Select(SelectArg::Unusable(reason)) => Decision::Refuse(Refusal::BadSelect {
            reason: reason.clone(),
        }),
        Tool::Select(SelectArg::Project(project)) => {
            let target = resolve::plan_selection(&resolution, project, &facts.selector);
            let created = resolution.session().is_none_or(|s| s.id != target.id);
            if created && facts.cap > 0 && answer.live_count >= facts.cap {
                return Decision::Refuse(Refusal::TooMany { cap: facts.cap });
            }
            Decision::Forward(Box::new(Forward {
                bound: Some(target.clone()),
                path: None,
                touch: false,
                route: work(facts.backend, false),
                select: Some(SelectPlan { target, created }),
            }))
        }
        tool => match resolution {
            Resolution::Bound { session, path } => Decision::Forward(Box::new(Forward {
                bound: Some(session),
                path: Some(path),
                touch: true,
                route: if *tool == Tool::Exempt {
                    own(facts.backend)
                } else {
                    work(facts.backend, true)
                },
                select: None,
            })),
            Resolution::Unbound { .. } | Resolution::Ambiguous { .. }
                if matches!(tool, Tool::Exempt | Tool::Scoped) =>
            {
                Decision::Forward(Box::new(Forward::unbound(facts.backend)))
            }
            _ if *tool == Tool::Exempt => {
                Decision::Forward(Box::new(Forward::unbound(facts.backend)))
            }
            Resolution::Unbound { recent } => Decision::Refuse(Refusal::NoProject { recent }),
            Resolution::Ambiguous { projects } => Decision::Refuse(Refusal::Ambiguous { projects }),
            Resolution::HandleRefused { reason } => {
                Decision::Refuse(Refusal::HandleRefused { reason })
            }
        },
    }
}

/// Whether the store may record a call in the work session its lookup settles on (a live one, found
/// by the handle, the conversation key or the MCP-session link, with the MCP session not ended), in
/// the lookup's own round trip: only when [`decide`] then always forwards it bound with `touch`, that
/// is for any tool but a select, with no refused handle.
pub fn record_with_lookup(tool: &Tool, handle: &HandleFact) -> bool {
    !matches!(tool, Tool::Select(_)) && !matches!(handle, HandleFact::Refused(_))
}

/// The protocol era of a request without a session id: sessionless (2026-07-28 and later) when it
/// declares such a version in `_meta` or the `MCP-Protocol-Version` header.
pub fn is_sessionless(declared_version: Option<&str>) -> bool {
    crate::modern::is_modern(declared_version)
}

#[cfg(test)]
mod tests;
