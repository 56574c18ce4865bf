//! Which work session a request belongs to: a pure function of what the store found.
//!
//! Order: a valid handle (the `work_session` argument) > the MCP session's own link (it selected a
//! project earlier) > the conversation key > the principal's live work sessions on this surface, as
//! the unkeyed policy allows. Nothing is ever inherited across principals (every lookup is scoped to
//! one) or across surfaces (only the request's own surface index is read).

use crate::ids::{ConversationKey, PrincipalId, Project, Surface};
use crate::session::WorkSession;

/// How calls with no handle and no conversation key may use the surface's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnkeyedPolicy {
    /// Use it only while exactly one distinct project is live on the surface.
    #[default]
    Guarded,
    /// Never: unkeyed calls must select (or pass a handle).
    Strict,
    /// The last selection on the surface wins, as one stdio process would behave.
    Surface,
}

impl std::str::FromStr for UnkeyedPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "guarded" => Ok(Self::Guarded),
            "strict" => Ok(Self::Strict),
            "surface" => Ok(Self::Surface),
            other => Err(format!(
                "unknown unkeyed policy {other:?}: use guarded, strict or surface"
            )),
        }
    }
}

/// How the work session was found (a label for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Handle,
    McpSession,
    Conversation,
    Surface,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Handle => "handle",
            Path::McpSession => "mcp_session",
            Path::Conversation => "conversation",
            Path::Surface => "surface",
        }
    }
}

/// What the store found for one request, all scoped to one principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The work session the presented handle names, if it is live.
    pub handle: Option<WorkSession>,
    /// The work session this MCP session selected earlier, if live.
    pub linked: Option<WorkSession>,
    /// The work session of the conversation key, if live.
    pub conversation: Option<WorkSession>,
    /// Live work sessions on the request's surface, most recent first.
    pub surface_live: Vec<WorkSession>,
    /// The principal's recently used projects, most recent first.
    pub recent_projects: Vec<Project>,
}

/// The outcome of resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Bound {
        session: WorkSession,
        path: Path,
    },
    /// Nothing selected; `recent` helps the user choose.
    Unbound {
        recent: Vec<Project>,
    },
    /// Several projects live on the surface and the request names none (guarded policy).
    Ambiguous {
        projects: Vec<Project>,
    },
    /// A handle was presented but is not usable.
    HandleRefused {
        reason: String,
    },
}

impl Resolution {
    /// The bound work session, if any.
    pub fn session(&self) -> Option<&WorkSession> {
        match self {
            Resolution::Bound { session, .. } => Some(session),
            _ => None,
        }
    }
}

/// Resolves a request. `handle_presented` says a verified handle was sent (its work session is then
/// `found.handle`, or it has ended).
pub fn resolve(found: &Found, handle_presented: bool, policy: UnkeyedPolicy) -> Resolution {
    if handle_presented {
        return match &found.handle {
            Some(session) => bound(session, Path::Handle),
            None => Resolution::HandleRefused {
                reason: "its work session has ended".into(),
            },
        };
    }
    if let Some(session) = &found.linked {
        return bound(session, Path::McpSession);
    }
    if let Some(session) = &found.conversation {
        return bound(session, Path::Conversation);
    }
    let unbound = || Resolution::Unbound {
        recent: found.recent_projects.clone(),
    };
    let Some(newest) = found.surface_live.first() else {
        return unbound();
    };
    match policy {
        UnkeyedPolicy::Strict => unbound(),
        UnkeyedPolicy::Surface => bound(newest, Path::Surface),
        UnkeyedPolicy::Guarded => {
            let projects = distinct_projects(&found.surface_live);
            if projects.len() == 1 {
                bound(newest, Path::Surface)
            } else {
                Resolution::Ambiguous { projects }
            }
        }
    }
}

fn bound(session: &WorkSession, path: Path) -> Resolution {
    Resolution::Bound {
        session: session.clone(),
        path,
    }
}

fn distinct_projects(sessions: &[WorkSession]) -> Vec<Project> {
    let mut projects: Vec<Project> = sessions.iter().map(|s| s.project.clone()).collect();
    projects.sort();
    projects.dedup();
    projects
}

/// Who is selecting, for [`plan_selection`].
#[derive(Debug, Clone)]
pub struct Selector {
    pub principal: PrincipalId,
    pub surface: Surface,
    pub conversation: Option<ConversationKey>,
    pub now_ms: u64,
}

/// The work session a successful select call binds: the resolved one when it already works on that
/// project (the conversation goes on), else a new one (a work session is one project).
pub fn plan_selection(resolution: &Resolution, project: &Project, who: &Selector) -> WorkSession {
    if let Some(current) = resolution.session()
        && current.project == *project
    {
        let mut session = current.clone();
        session.last_active_ms = who.now_ms;
        if session.conversation.is_none() {
            session.conversation = who.conversation.clone();
        }
        return session;
    }
    WorkSession {
        id: crate::ids::WorkSessionId::random(),
        principal: who.principal.clone(),
        surface: who.surface.clone(),
        conversation: who.conversation.clone(),
        project: project.clone(),
        created_ms: who.now_ms,
        last_active_ms: who.now_ms,
        calls: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkSessionId;

    fn ws(project: &str, last: u64) -> WorkSession {
        WorkSession {
            id: WorkSessionId::random(),
            principal: PrincipalId::parse("ab".repeat(16)).expect("id"),
            surface: Surface::parse("claude-ai").expect("surface"),
            conversation: None,
            project: Project::parse(project).expect("project"),
            created_ms: 0,
            last_active_ms: last,
            calls: 0,
        }
    }

    fn path_of(r: &Resolution) -> Option<Path> {
        match r {
            Resolution::Bound { path, .. } => Some(*path),
            _ => None,
        }
    }

    #[test]
    fn handle_beats_everything_and_an_ended_handle_is_refused() {
        let found = Found {
            handle: Some(ws("a", 1)),
            linked: Some(ws("b", 2)),
            conversation: Some(ws("c", 3)),
            surface_live: vec![ws("d", 4)],
            ..Default::default()
        };
        let r = resolve(&found, true, UnkeyedPolicy::Guarded);
        assert_eq!(path_of(&r), Some(Path::Handle));
        assert_eq!(r.session().map(|s| s.project.as_str()), Some("a"));
        let ended = Found {
            handle: None,
            ..found
        };
        assert!(matches!(
            resolve(&ended, true, UnkeyedPolicy::Surface),
            Resolution::HandleRefused { .. }
        ));
    }

    #[test]
    fn mcp_session_then_conversation_then_surface() {
        let mut found = Found {
            linked: Some(ws("b", 2)),
            conversation: Some(ws("c", 3)),
            surface_live: vec![ws("d", 4)],
            ..Default::default()
        };
        assert_eq!(
            path_of(&resolve(&found, false, UnkeyedPolicy::Guarded)),
            Some(Path::McpSession)
        );
        found.linked = None;
        assert_eq!(
            path_of(&resolve(&found, false, UnkeyedPolicy::Guarded)),
            Some(Path::Conversation)
        );
        found.conversation = None;
        assert_eq!(
            path_of(&resolve(&found, false, UnkeyedPolicy::Guarded)),
            Some(Path::Surface)
        );
    }

    #[test]
    fn guarded_uses_the_surface_only_with_one_distinct_project() {
        let one_project = Found {
            surface_live: vec![ws("a", 5), ws("a", 3)],
            ..Default::default()
        };
        assert_eq!(
            path_of(&resolve(&one_project, false, UnkeyedPolicy::Guarded)),
            Some(Path::Surface)
        );
        let two = Found {
            surface_live: vec![ws("b", 5), ws("a", 3)],
            ..Default::default()
        };
        match resolve(&two, false, UnkeyedPolicy::Guarded) {
            Resolution::Ambiguous { projects } => {
                assert_eq!(
                    projects.iter().map(Project::as_str).collect::<Vec<_>>(),
                    ["a", "b"]
                )
            }
            other => panic!("{other:?}"),
        }
        let r = resolve(&two, false, UnkeyedPolicy::Surface);
        assert_eq!(r.session().map(|s| s.project.as_str()), Some("b"));
        assert!(matches!(
            resolve(&two, false, UnkeyedPolicy::Strict),
            Resolution::Unbound { .. }
        ));
    }

    #[test]
    fn nothing_live_is_unbound_with_recent_projects() {
        let found = Found {
            recent_projects: vec![Project::parse("x").expect("p")],
            ..Default::default()
        };
        assert_eq!(
            resolve(&found, false, UnkeyedPolicy::Guarded),
            Resolution::Unbound {
                recent: found.recent_projects.clone()
            }
        );
    }

    #[test]
    fn selecting_the_same_project_continues_another_starts_anew() {
        let current = ws("a", 1);
        let resolution = Resolution::Bound {
            session: current.clone(),
            path: Path::Surface,
        };
        let who = Selector {
            principal: current.principal.clone(),
            surface: current.surface.clone(),
            conversation: None,
            now_ms: 99,
        };
        let same = plan_selection(&resolution, &Project::parse("a").expect("p"), &who);
        assert_eq!(same.id, current.id);
        assert_eq!(same.last_active_ms, 99);
        let other = plan_selection(&resolution, &Project::parse("b").expect("p"), &who);
        assert_ne!(other.id, current.id);
        assert_eq!(other.created_ms, 99);
    }
}
