//! The MCP layer: one client message, by kind. Dispatch on the MCP path, `initialize`, both
//! protocol eras, calls and selects, the message routing on shared backend sessions, and the relay
//! of replies. Imports the backend layer and the leaves, never the edge.

pub mod answers;
pub mod call;
pub mod caller;
pub mod dispatch;
pub mod errors;
pub mod forward;
pub mod get_stream;
pub mod initialize;
pub mod initialize_cache;
pub mod message_routing;
pub mod modern;
pub mod relay;
pub mod requests;
pub mod select;
pub mod touches;
pub mod work_backend;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use broker::identity::PrincipalHasher;
use broker::rpc_ids::Sealer;
use broker::store::Store;
use broker::surface::SurfaceRules;
use broker::tokens::SessionClaims;
use broker::tokens::cache::Verified;

use crate::backend::Backend;

/// Largest JSON body or SSE event the broker rewrites (the relay, a parked round, a GET stream).
pub const REWRITE_LIMIT: usize = 16 * 1024 * 1024;
/// Lifetime of client session ids and handles (their real life is ruled by the store).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the MCP layer reads and shares, above the backend layer's state (which it derefs to: a
/// call reads `mcp.upstream` as it reads `mcp.store`). Each piece of shared state says, where it
/// is defined, who may change it and why a concurrent change cannot corrupt it.
pub struct Mcp {
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    /// Client session ids verified already (a client sends the same one with every request).
    pub session_ids: Verified<SessionClaims>,
    pub principals: PrincipalHasher,
    pub surfaces: SurfaceRules,
    /// Backend sessions being opened for work sessions right now (one opening per work session).
    pub openings: work_backend::Openings,
    /// Calls being recorded in their work sessions off the reply path, bounded.
    pub touches: touches::Touches,
    /// The backend's `initialize` results, answered again without asking it.
    pub initialize_cache: Arc<initialize_cache::InitializeCache>,
    /// Seals the ids of server requests on their way to clients ([`broker::rpc_ids`]).
    pub sealer: Sealer,
    /// Legacy clients' requests in flight on this replica, for their cancellations.
    pub in_flight: Arc<message_routing::InFlight>,
    /// The GET streams of work backend sessions this replica relays to their clients.
    pub hubs: get_stream::Hubs,
}

impl Deref for Mcp {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.backend
    }
}
