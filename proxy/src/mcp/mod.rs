//! The MCP layer: one client message, by kind. Dispatch on the MCP path, `initialize`, both
//! protocol eras, calls and selects, the message routing on shared backend sessions, and the relay
//! of replies. Imports the backend layer and the leaves, never the edge.

pub mod call;
pub mod caller;
pub mod dispatch;
pub mod errors;
pub mod forward;
pub mod initialize;
pub mod message_routing;
pub mod modern;
pub mod relay;
pub mod touches;
pub mod work_backend;
