//! The session-broker reverse proxy: a hyper server in front of one MCP server, keeping work
//! sessions across MCP re-initializations. The broker crate decides; this crate moves bytes.
//!
//! # Layout
//! One folder per layer, imports pointing only down (held by `tests/layers.rs`; the picture is in
//! `docs/design.md`, The layers):
//! - [`ops`]: the admin API and its CLI, the finalizer;
//! - [`edge`]: accept, limits, canonical paths, Origin and identity, routes; [`App`], the process's
//!   state;
//! - [`mcp`]: one client message by kind: dispatch, `initialize`, both eras, calls and selects, the
//!   message routing on shared backend sessions, the relay; [`mcp::Mcp`], its state;
//! - [`backend`]: the upstream client, the one outbound request builder, backend sessions, the
//!   bridge; [`backend::Backend`], its state;
//! - [`config`] and [`metrics`]: leaves (settings and how they are read; the Prometheus registry).

pub mod backend;
pub mod config;
pub mod edge;
pub mod mcp;
pub mod metrics;
pub mod ops;
pub mod telemetry;

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
    let mcp = app.mcp.clone();
    server::serve(app, listener, shutdown).await;
    // The calls counted but not sent yet (at most one refresh interval's): sent before stopping.
    let flush = mcp.touches.flush(&mcp.store, &mcp.metrics);
    if tokio::time::timeout(std::time::Duration::from_secs(5), flush)
        .await
        .is_err()
    {
        tracing::warn!(
            "the store did not take the last calls' counts in 5 s: stopping without them"
        );
    }
    let _ = stop.send(true);
    for task in finalizer {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    if let Some(admin) = admin {
        admin.stopped().await;
    }
    Ok(())
}
