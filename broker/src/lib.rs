//! The work-session domain of mcp-session-broker. No sockets, no HTTP: the proxy crate moves bytes
//! and asks this crate what to do.
//!
//! # Layout
//! - [`ids`]: typed, validated identifiers (principal, surface, work session, project, ...);
//! - [`identity`]: principal hashing, conversation keys; [`surface`]: which UI, by rules;
//! - [`jsonrpc`]: a POST body parsed once into typed JSON-RPC messages;
//! - [`sse`]: an incremental, byte-exact Server-Sent Events parser;
//! - [`mcp`]: the edits the broker makes to MCP messages and the messages it sends itself;
//! - [`modern`]: protocol revision 2026-07-28: the request ladder, `resultType`, the bridge decision;
//! - [`keys`]: reading HMAC secrets and Ed25519 keys, JWKS;
//! - [`tokens`]: signed session ids, handles and backend assertions (JWT, `kid` rotation);
//! - [`oauth`]: OAuth access tokens (JWT, verified against a JWKS) as identity: `iss` + `sub`;
//! - [`session`]: the work session record; [`finalize`]: what is recorded when it idles out;
//! - [`resolve`]: which work session a request belongs to (a pure function), and what a select binds;
//! - [`rounds`]: the multi round-trip form (`input_required`) bridged onto legacy server requests;
//! - [`rpc_ids`]: the JSON-RPC ids on shared backend sessions: client ids mapped, server requests sealed;
//! - [`decide`]: what to do with one `tools/call` (refuse, or forward how), from the facts gathered;
//! - [`guidance`]: the texts a model reads when a call cannot go through;
//! - [`store`]: the store trait, its key schema, the in-memory and Redis stores.

pub mod decide;
pub mod finalize;
pub mod guidance;
pub mod identity;
pub mod ids;
pub mod jsonrpc;
pub mod keys;
pub mod mcp;
pub mod modern;
pub mod oauth;
pub mod resolve;
pub mod rounds;
pub mod rpc_ids;
pub mod session;
pub mod sse;
pub mod store;
pub mod surface;
pub mod tokens;
