//! The session-broker reverse proxy: a hyper server in front of one MCP server, keeping work
//! sessions across MCP re-initializations. The broker crate decides; this crate moves bytes.
//!
//! # Layout
//! - [`settings`]: plain settings, and [`cli`]: the command line that builds them;
//! - [`app`]: shared state (store, keys, upstream client), built once;
//! - [`server`]: accept loop, HTTP/1.1 + HTTP/2, connection limit, graceful shutdown;
//! - [`limits`]: request bodies under a deadline and a shared in-flight byte budget;
//! - [`routes`]: health, readiness, the MCP path, pass-through of other paths;
//! - [`path`]: the canonical spelling of the paths the broker checks;
//! - [`mcp_path`]: POST/GET/DELETE on the MCP path, `initialize`;
//! - [`metrics`]: Prometheus metrics, the per-request timing scope;
//! - [`caller`]: principal, Origin check, verified session id, surface signals;
//! - [`call`]: planning a `tools/call` (resolution, guard, select);
//! - [`forward`]: the right backend session, replay, 404 retry;
//! - [`finalizer`]: sweeping idle work sessions and delivering their finalization;
//! - [`backend`]: opening backend sessions, replaying selections, trusted headers;
//! - [`message_routing`]: the JSON-RPC ids on shared backend sessions, server requests' answers,
//!   cancellations;
//! - [`relay`]: streaming answers back, rewriting watched replies;
//! - [`upstream`]: the pooled HTTP client; [`headers`]: header rules; [`body`]: body types;
//! - [`errors`]: the one mapping from failures to HTTP and JSON-RPC errors;
//! - [`admin`]: the admin API on its own listener; [`admin_cli`]: the operator subcommands;
//! - [`operator_session`]: backend sessions the broker opens for itself (handover tool, rebind check).

pub mod backend;
pub mod config;
pub mod edge;
pub mod mcp;
pub mod metrics;
pub mod ops;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Settings;
use edge::server;
pub use edge::{App, StartError};
use ops::{admin, finalizer};

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// Runs a broker on `listener` (already bound) until `shutdown` completes. The admin listener is bound
/// first: when it cannot be, this returns before anything is served or logged as `listening`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    admin::check(&settings)?;
    let app = Arc::new(App::new(settings)?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Both listeners are bound before the broker announces `listening`: a taken admin port stops it
    // before anything says it serves.
    let admin = admin::start(app.clone(), stopped.clone()).await?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, upstream = %app.settings.upstream, store = if app.settings.redis_url.is_some() { "redis" } else { "memory" }, "listening");
    }
    let finalizer = finalizer::spawn(app.clone(), stopped);
    server::serve(app, listener, shutdown).await;
    let _ = stop.send(true);
    for task in finalizer {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    if let Some(admin) = admin {
        admin.stopped().await;
    }
    Ok(())
}
