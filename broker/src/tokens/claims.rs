//! What each token says.

use serde::{Deserialize, Serialize};

use crate::ids::{McpSessionId, PrincipalId, Project, Surface, UpstreamId, WorkSessionId};

/// The client-facing MCP session id. Stateless: `initialize` leaves nothing in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Principal the session belongs to.
    pub p: PrincipalId,
    /// The MCP session itself.
    pub sid: McpSessionId,
    /// Upstream instance the backend session below lives on.
    pub up: UpstreamId,
    /// Backend session created by the client's `initialize` (absent for a stateless backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bs: Option<String>,
    /// The `initialize` params, replayed to open backend sessions elsewhere.
    pub ini: serde_json::Value,
    /// The backend speaks only protocol 2026-07-28: the broker answered `initialize` itself and
    /// turns each later request into a modern one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mb: bool,
    /// The broker answered `initialize` from a cached result: the client's own backend session is
    /// opened when something first needs it (a stateful backend).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lz: bool,
}

/// A work-session handle the model can pass back as `work_session`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandleClaims {
    pub p: PrincipalId,
    pub ws: WorkSessionId,
}

/// What the backend is told about the call it receives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The principal hash.
    pub sub: PrincipalId,
    pub ws: WorkSessionId,
    pub surface: Surface,
    pub project: Project,
    /// How the broker found the work session: `handle`, `conversation`, `mcp_session`, `surface`
    /// (inherited by an unkeyed call on the same UI: a backend may want to treat it with care) or
    /// `select`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}
