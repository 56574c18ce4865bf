//! The backend layer: everything that talks to the MCP server behind the broker. The pooled
//! upstream client, the outbound request builder and header rules, backend sessions (opening,
//! replaying a selection), the bridge for modern clients, and the broker's own operator sessions.
//! Imports only the leaves (config, metrics) and the shared state.

pub mod body;
pub mod bridge;
pub mod headers;
pub mod operator_session;
pub mod outbound;
pub mod sessions;
pub mod upstream;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::ids::UpstreamId;
use broker::tokens::cache::Signed;
use broker::tokens::{AssertionClaims, KeyRing};

use crate::config::Settings;
use crate::metrics::Metrics;

/// Lifetime of the assertion sent to the backend with each request.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(120);
/// How long the same assertion is sent again for the same claims: it keeps at least 110 s of life.
pub const ASSERTION_REUSE: Duration = Duration::from_secs(10);
/// Issuer of every token.
pub const ISSUER: &str = "mcp-session-broker";

/// What the backend layer reads and shares: settings, keys, the upstream client, metrics, and the
/// bridge's state. Built once by [`crate::edge::App::new`]; the layers above reach it through
/// their own state ([`crate::mcp::Mcp`] derefs to it), so code here never sees theirs.
pub struct Backend {
    pub settings: Settings,
    pub keys: KeyRing,
    /// Assertions signed in the last [`ASSERTION_REUSE`], by their claims.
    pub assertions: Signed<AssertionClaims>,
    pub upstream: upstream::Upstream,
    pub upstream_id: UpstreamId,
    /// Prometheus metrics (served at `/metrics`).
    pub metrics: Metrics,
    /// Modern clients in front of a legacy or stateful backend.
    pub bridge: bridge::Bridge,
}

impl Backend {
    /// Unix seconds now.
    pub fn now_secs(&self) -> u64 {
        now_ms() / 1000
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
