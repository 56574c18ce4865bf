//! The work session: a stretch of work on one project by one principal in one conversation (or, with
//! no conversation key, on one surface). Many short MCP sessions map onto one work session.

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationKey, McpSessionId, PrincipalId, Project, Surface, WorkSessionId};

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
}

/// What ties requests to a work session besides its id: the MCP session and the conversation that
/// used it. Each is stored as an index entry with the same idle TTL as the work session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    pub mcp_session: Option<McpSessionId>,
    pub conversation: Option<ConversationKey>,
}
