//! Which work session a request belongs to: a pure function of what the store found.
//!
//! Order: a valid handle (the `work_session` argument) > the conversation key, when the request
//! carries one (then it is authoritative: an unknown key is unbound, never the surface's or the MCP
//! session's project) > the MCP session's own link (it selected a project earlier) > the principal's
//! live work sessions on this surface, as the unkeyed policy allows and only within the continuity
//! window after that work session's last call. Nothing is ever inherited across principals (every
//! lookup is scoped to one) or across surfaces (only the request's own surface index is read).

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

/// What the request itself says about which work session it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asked {
    /// A verified handle was sent: its work session is `found.handle`, or it has ended.
    pub handle: bool,
    /// A conversation key was sent: its work session is `found.conversation`, or there is none.
    pub keyed: bool,
}

/// The rules for requests that name no work session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unkeyed {
    pub policy: UnkeyedPolicy,
    /// How long after a work session's last call an unkeyed request on its surface may still
    /// continue it (a connector reconnects every 15-60 s; a new conversation hours later must ask).
    pub window_ms: u64,
    /// Unix milliseconds now.
    pub now_ms: u64,
}

impl Unkeyed {
    fn within_window(&self, session: &WorkSession) -> bool {
        session.last_active_ms.saturating_add(self.window_ms) >= self.now_ms
    }
}

/// Resolves a request from what it asked and what the store found.
pub fn resolve(found: &Found, asked: Asked, unkeyed: Unkeyed) -> Resolution {
    let unbound = || Resolution::Unbound {
        recent: found.recent_projects.clone(),
    };
    if asked.handle {
        return match &found.handle {
            Some(session) => bound(session, Path::Handle),
            None => Resolution::HandleRefused {
                reason: "its work session has ended".into(),
            },
        };
    }
    if asked.keyed {
        // A conversation that carries its own key has chosen nothing until it selects.
        return match &found.conversation {
            Some(session) => bound(session, Path::Conversation),
            None => unbound(),
        };
    }
    if let Some(session) = &found.linked {
        return bound(session, Path::McpSession);
    }
    let Some(newest) = found.surface_live.first() else {
        return unbound();
    };
    match unkeyed.policy {
        UnkeyedPolicy::Strict => unbound(),
        UnkeyedPolicy::Surface if unkeyed.within_window(newest) => bound(newest, Path::Surface),
        UnkeyedPolicy::Surface => unbound(),
        UnkeyedPolicy::Guarded => {
            // Every live project counts, even one outside the window: a stale conversation on
            // another project makes the surface ambiguous, it does not make the newest one right.
            let projects = distinct_projects(&found.surface_live);
            if projects.len() > 1 {
                Resolution::Ambiguous { projects }
            } else if unkeyed.within_window(newest) {
                bound(newest, Path::Surface)
            } else {
                unbound()
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
        backends: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkSessionId;

    const NOW: u64 = 10_000_000;
    const WINDOW: u64 = 600_000;

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
            backends: Default::default(),
        }
    }

    fn rules(policy: UnkeyedPolicy) -> Unkeyed {
        Unkeyed {
            policy,
            window_ms: WINDOW,
            now_ms: NOW,
        }
    }

    /// What a resolution comes to, in one word and a project, for the table.
    fn outcome(r: &Resolution) -> String {
        match r {
            Resolution::Bound { session, path } => format!("{}:{}", path.as_str(), session.project),
            Resolution::Unbound { .. } => "unbound".into(),
            Resolution::Ambiguous { projects } => format!(
                "ambiguous:{}",
                projects
                    .iter()
                    .map(Project::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Resolution::HandleRefused { .. } => "handle_refused".into(),
        }
    }

    /// Every row of the resolution table in docs/design.md.
    #[test]
    fn the_resolution_table() {
        let recent = NOW - 1_000;
        let stale = NOW - WINDOW - 1;
        let full = || Found {
            handle: Some(ws("h", recent)),
            linked: Some(ws("m", recent)),
            conversation: Some(ws("c", recent)),
            surface_live: vec![ws("s", recent)],
            ..Default::default()
        };
        let only_surface = |live: Vec<WorkSession>| Found {
            surface_live: live,
            ..Default::default()
        };
        use UnkeyedPolicy::{Guarded, Strict, Surface as Newest};
        let handle = Asked {
            handle: true,
            keyed: false,
        };
        let keyed = Asked {
            handle: false,
            keyed: true,
        };
        let plain = Asked::default();
        #[rustfmt::skip]
        let rows: Vec<(&str, Found, Asked, UnkeyedPolicy, &str)> = vec![
            ("a live handle beats everything", full(), handle, Guarded, "handle:h"),
            ("an ended handle is refused, nothing else is tried", Found { handle: None, ..full() }, handle, Newest, "handle_refused"),
            ("a handle beats a key", full(), Asked { handle: true, keyed: true }, Guarded, "handle:h"),
            ("a known key is its conversation", full(), keyed, Guarded, "conversation:c"),
            ("an unknown key is unbound: never the MCP link", Found { conversation: None, ..full() }, keyed, Guarded, "unbound"),
            ("an unknown key is unbound: never the surface", Found { conversation: None, linked: None, ..full() }, keyed, Newest, "unbound"),
            ("unkeyed: the MCP session's link", full(), plain, Guarded, "mcp_session:m"),
            ("unkeyed: the link even under strict", full(), plain, Strict, "mcp_session:m"),
            ("guarded: one live project within the window", only_surface(vec![ws("a", recent), ws("a", stale)]), plain, Guarded, "surface:a"),
            ("guarded: one project, last call past the window", only_surface(vec![ws("a", stale)]), plain, Guarded, "unbound"),
            ("guarded: two live projects", only_surface(vec![ws("b", recent), ws("a", recent)]), plain, Guarded, "ambiguous:a,b"),
            ("guarded: a stale second project still makes it ambiguous", only_surface(vec![ws("b", recent), ws("a", stale)]), plain, Guarded, "ambiguous:a,b"),
            ("surface: the newest within the window wins", only_surface(vec![ws("b", recent), ws("a", recent)]), plain, Newest, "surface:b"),
            ("surface: the newest past the window is unbound", only_surface(vec![ws("b", stale)]), plain, Newest, "unbound"),
            ("strict: never the surface", only_surface(vec![ws("a", recent)]), plain, Strict, "unbound"),
            ("nothing live", Found::default(), plain, Guarded, "unbound"),
        ];
        for (what, found, asked, policy, want) in rows {
            assert_eq!(
                outcome(&resolve(&found, asked, rules(policy))),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn the_window_edge_is_inclusive() {
        let edge = Found {
            surface_live: vec![ws("a", NOW - WINDOW)],
            ..Default::default()
        };
        let r = resolve(&edge, Asked::default(), rules(UnkeyedPolicy::Guarded));
        assert_eq!(outcome(&r), "surface:a");
        let zero = Unkeyed {
            window_ms: 0,
            ..rules(UnkeyedPolicy::Guarded)
        };
        assert_eq!(outcome(&resolve(&edge, Asked::default(), zero)), "unbound");
    }

    #[test]
    fn unbound_lists_recent_projects() {
        let found = Found {
            recent_projects: vec![Project::parse("x").expect("p")],
            ..Default::default()
        };
        assert_eq!(
            resolve(
                &found,
                Asked {
                    handle: false,
                    keyed: true
                },
                rules(UnkeyedPolicy::Guarded)
            ),
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
