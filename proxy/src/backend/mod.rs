//! The backend layer: everything that talks to the MCP server behind the broker. The pooled
//! upstream client, the outbound request builder and header rules, backend sessions (opening,
//! replaying a selection), the bridge for modern clients, and the broker's own operator sessions.
//! Imports only the leaves (config, metrics) and the shared state.

pub mod body;
pub mod bridge;
pub mod headers;
pub mod operator_session;
pub mod sessions;
pub mod upstream;
