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
//! The endpoints live in `admin/api.rs`; this module holds the listener, the token and the start checks.

mod api;
pub(crate) mod codec;
mod guard;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::settings::Settings;
use crate::edge::limits::BodyLimits;
use crate::edge::server::ListenerLimits;

/// The address the command line gives the admin API unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// The header that names a principal by its credential.
pub const PRINCIPAL_CREDENTIAL_HEADER: &str = "x-principal-credential";
/// Shortest admin token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;
/// How long in-flight admin requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Most admin connections open at once (its own count: a full main listener never locks operators out).
const MAX_CONNECTIONS: usize = 64;

/// `--admin-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        value
            .parse()
            .map(|address| Self(Some(address)))
            .map_err(|_| format!("`{value}` is not IP:PORT (e.g. {DEFAULT_ADMIN_LISTEN}) or `off`"))
    }
}

/// The bearer token admin requests must present. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token from its bytes (surrounding whitespace ignored); `None` when shorter than
    /// [`MIN_TOKEN_BYTES`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let token = bytes.trim_ascii();
        (token.len() >= MIN_TOKEN_BYTES).then(|| Self(token.to_vec()))
    }

    /// The token itself (for a client to send; never log it).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ (and of their
    /// lengths: both are hashed first).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = Sha256::digest(&self.0);
        let presented = Sha256::digest(presented);
        let difference = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Why the admin API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "--admin-listen {0} is not a loopback address: pass --admin-token-file PATH (every admin \
         request then needs Authorization: Bearer <token>), listen on 127.0.0.1, or use `off`"
    )]
    NeedsToken(SocketAddr),
    #[error("--admin-listen {address}: cannot listen: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Refuses settings that would expose the admin API without a token.
pub fn check(settings: &Settings) -> Result<(), AdminError> {
    match settings.admin_listen {
        Some(address) if !address.ip().is_loopback() && settings.admin_token.is_none() => {
            Err(AdminError::NeedsToken(address))
        }
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen(None)));
        assert_eq!(
            "127.0.0.1:9091".parse::<AdminListen>(),
            Ok(AdminListen(Some(SocketAddr::from(([127, 0, 0, 1], 9091)))))
        );
        assert!("localhost".parse::<AdminListen>().is_err());
    }

    #[test]
    fn tokens() {
        assert!(AdminToken::new(b"short").is_none());
        let token = AdminToken::new(b"  0123456789abcdef-admin\n").expect("long enough");
        assert!(token.matches(b"0123456789abcdef-admin"));
        assert!(!token.matches(b"0123456789abcdef-admiN"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let mut settings = Settings::new("http://127.0.0.1:9/mcp".parse().expect("uri"));
        settings.admin_listen = Some(SocketAddr::from(([0, 0, 0, 0], 9091)));
        assert!(matches!(check(&settings), Err(AdminError::NeedsToken(_))));
        settings.admin_token = AdminToken::new(b"0123456789abcdef-admin");
        assert!(check(&settings).is_ok());
        settings.admin_token = None;
        settings.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 9091)));
        assert!(check(&settings).is_ok());
        settings.admin_listen = Some("[::1]:9091".parse().expect("addr"));
        assert!(check(&settings).is_ok());
    }
}
