//! The edge: what happens to a request before it is an MCP message. Accepting connections, limits
//! on bodies and in-flight bytes, canonical paths, identity, and the routes that hand the MCP path
//! to the MCP layer.

pub mod identify;
pub mod limits;
pub mod path;
pub mod routes;
pub mod server;
