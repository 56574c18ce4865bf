//! What every case of the store contract uses: the ids of a small world (principals, surfaces,
//! projects, one upstream), work sessions and queries over them, and the lifetimes the stores run
//! with. Time in the contract is a manual clock ([`crate::support::time::TestTime`]): an idle TTL of a
//! minute passes in an instant, and is far longer than any real time a case takes.

use std::time::Duration;

use broker::ids::{
    ConversationKey, McpSessionId, PrincipalId, Project, Surface, UpstreamId, WorkSessionId,
};
use broker::session::{Links, WorkSession};
use broker::store::{Lifetimes, McpQuery, Query};

/// The idle TTL of every store under contract.
pub const IDLE: Duration = Duration::from_secs(60);
/// How long a finalized work session stays readable.
pub const GRACE: Duration = Duration::from_secs(120);

pub fn lifetimes() -> Lifetimes {
    let mut lifetimes = Lifetimes::with_idle(IDLE);
    lifetimes.grace = GRACE;
    lifetimes
}

/// `IDLE * tenths / 10`.
pub fn idle_tenths(tenths: u32) -> Duration {
    IDLE * tenths / 10
}

pub fn principal(n: u8) -> PrincipalId {
    PrincipalId::parse(format!("{n:02x}").repeat(16)).expect("principal")
}

pub fn surface(name: &str) -> Surface {
    Surface::parse(name).expect("surface")
}

pub fn work(p: &PrincipalId, s: &str, project: &str, at: u64) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: p.clone(),
        surface: surface(s),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: at,
        last_active_ms: at,
        calls: 0,
        backends: Default::default(),
    }
}

pub fn query(p: &PrincipalId, s: &str) -> Query {
    Query {
        principal: p.clone(),
        surface: surface(s),
        mcp: None,
        handle: None,
        conversation: None,
        settle_early: false,
        record_when_settled: false,
    }
}

pub fn upstream() -> UpstreamId {
    UpstreamId::parse("ab".repeat(8)).expect("upstream")
}

/// The MCP-session part of a query, for a session whose id names no backend session.
pub fn mcp_query(session: &McpSessionId) -> McpQuery {
    McpQuery {
        session: session.clone(),
        upstream: upstream(),
        backend: None,
    }
}

/// Links that set the MCP-session link (and the conversation link, if given).
pub fn linking(session: &McpSessionId, conversation: Option<&ConversationKey>) -> Links {
    Links {
        mcp_session: Some(session.clone()),
        conversation: conversation.cloned(),
        count_only: false,
    }
}
