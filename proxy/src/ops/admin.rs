//! The admin API: a small JSON HTTP server on its own listener (`--admin-listen`, loopback by
//! default, `off` to disable), for operators to look at and act on one principal's work sessions.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | `{"status": "ok"}` |
//! | `GET /sessions?principal=<hash>` | the principal's work sessions, newest first |
//! | `GET /sessions/<ws>` | one work session, 404 when unknown |
//! | `POST /sessions/<ws>/rebind` `{"project": "x"}` | 200 with the new status, 409 when not live |
//! | `POST /sessions/<ws>/end` | 202: the next sweep finalizes it (with its actions), 409 when not live |
//!
//! The principal is named by its hash (`?principal=`) or by presenting its credential in
//! `X-Principal-Credential` (turned into a principal as the proxy does for a client's
//! `Authorization`, never logged or echoed). A rebind is first checked with the backend's select
//! tool. Off loopback a token is required (`--admin-token-file`); with a token, every request must
//! carry `Authorization: Bearer <token>`, compared in constant time. Browsers are kept out by
//! `admin/guard.rs` (loopback `Host` without a token, no foreign `Origin`, JSON POSTs). Errors are
//! `{"error": "..."}`.
//! The endpoints live in `admin/api.rs`; this module holds the listener; the token and the start check are configuration (`config/admin.rs`).

mod api;
pub(crate) mod codec;
mod guard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::config::admin::{
    AdminError, AdminListen, AdminToken, DEFAULT_ADMIN_LISTEN, MIN_TOKEN_BYTES,
};
use crate::edge::App;
use crate::edge::limits::BodyLimits;
use crate::edge::server::ListenerLimits;

/// The header that names a principal by its credential.
pub const PRINCIPAL_CREDENTIAL_HEADER: &str = "x-principal-credential";
/// How long in-flight admin requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Most admin connections open at once (its own count: a full main listener never locks operators out).
const MAX_CONNECTIONS: usize = 64;

/// Refuses settings that would expose the admin API without a token.
pub fn check(settings: &crate::config::Settings) -> Result<(), AdminError> {
    crate::config::admin::check(settings.admin_listen, settings.admin_token.as_ref())
}

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// The address it listens on (the real port when configured with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits for it to finish after its stop signal (drains for at most a few seconds).
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), self.task).await;
    }
}

/// Checks the settings, binds `--admin-listen` and serves until `stop` turns true; `None` when the
/// admin API is off.
pub async fn start(
    app: Arc<App>,
    stop: watch::Receiver<bool>,
) -> Result<Option<AdminServer>, AdminError> {
    check(&app.settings)?;
    let Some(address) = app.settings.admin_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let address = listener.local_addr().unwrap_or(address);
    tracing::info!(%address, token = app.settings.admin_token.is_some(), "admin API listening");
    let task = tokio::spawn(serve(app, listener, stop));
    Ok(Some(AdminServer { address, task }))
}

async fn serve(app: Arc<App>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    let limits = ListenerLimits {
        body: BodyLimits {
            timeout: app.settings.body_timeout,
            inflight: None,
            per_request: api::MAX_BODY,
        },
        max_connections: MAX_CONNECTIONS,
    };
    crate::edge::server::accept_until(
        listener,
        stopped,
        DRAIN,
        "admin",
        limits,
        move |request, _| {
            let app = app.clone();
            async move { api::serve(&app, request).await }
        },
    )
    .await;
}
