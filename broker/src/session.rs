//! The work session: a stretch of work on one project by one principal in one conversation (or, with
//! no conversation key, on one surface). Many short MCP sessions map onto one work session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{
    BackendSessionId, ConversationKey, McpSessionId, PrincipalId, Project, Surface, UpstreamId,
    WorkSessionId,
};

/// One work session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkSession {
    pub id: WorkSessionId,
    pub principal: PrincipalId,
    pub surface: Surface,
    pub conversation: Option<ConversationKey>,
    pub project: Project,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds of the last call that touched it.
    pub last_active_ms: u64,
    /// Tool calls made in it.
    pub calls: u64,
    /// The backend sessions that serve it (not shown to operators).
    #[serde(skip)]
    pub backends: BackendSessions,
}

/// The backend sessions that serve one work session, one per (upstream instance, project).
///
/// The invariant that keeps concurrent calls on the right project: **a backend session the broker
/// records here had exactly that project selected when it was opened, and is never sent a select of
/// another**. Any number of calls may share one at once, since none of them can switch it. Whoever
/// opens one records it (last writer wins); every candidate had the same project selected, so
/// whichever wins is right. An operator's rebind changes the project, so it finds no entry and
/// opens a fresh backend session for the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSessions(BTreeMap<String, BackendSessionId>);

impl BackendSessions {
    /// Prefix of the store's field names for backend sessions (in the work-session hash).
    pub const FIELD_PREFIX: &'static str = "b:";

    /// The store's field name for the backend session of `project` on `upstream`.
    pub fn field(upstream: &UpstreamId, project: &Project) -> String {
        format!("{}{upstream}:{project}", Self::FIELD_PREFIX)
    }

    /// The backend session serving `project` on `upstream`, if one was recorded.
    pub fn get(&self, upstream: &UpstreamId, project: &Project) -> Option<&BackendSessionId> {
        self.0.get(&Self::field(upstream, project))
    }

    /// The backend session recorded under a store field name.
    pub fn get_field(&self, field: &str) -> Option<&BackendSessionId> {
        self.0.get(field)
    }

    /// Records a backend session under its store field name.
    pub fn insert_field(&mut self, field: String, session: BackendSessionId) {
        self.0.insert(field, session);
    }

    /// Every (field, backend session) pair, for the store.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &BackendSessionId)> {
        self.0.iter().map(|(f, s)| (f.as_str(), s))
    }
}

/// What ties requests to a work session besides its id: the MCP session and the conversation that
/// used it. Each is stored as an index entry with the same idle TTL as the work session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    pub mcp_session: Option<McpSessionId>,
    pub conversation: Option<ConversationKey>,
    /// Count `mcp_session` as one more MCP session that worked in the work session, but write no
    /// link for it: a call that resolved without the link (by surface, handle or conversation) does
    /// not make its MCP session stick, so a connector's fresh MCP session per call adds no key.
    pub count_only: bool,
}
