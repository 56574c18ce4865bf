//! Answers that reach a replica whose upstream is not the one that asked (Kubernetes sidecars: each
//! pod has its own backend). That replica cannot deliver them, so it leaves them in the store under
//! the sealed id's slot ([`leave`]); the replica relaying the stream the server request went out on
//! watches that slot while its relay lives ([`Courier::watch`]) and delivers the answer to its own
//! backend session.
//!
//! Shared state: one store entry per relayed answer (`park:answer:<hash of the sealed id>`, 10 min),
//! written by the replica that received the answer, taken once (`GETDEL`) by the watcher. A sealed id
//! names one request of one backend session, so two answers to it are one client answering twice:
//! the later write wins, as the backend would take the first it got.

use std::sync::{Arc, Weak};
use std::time::Duration;

use broker::ids::PrincipalId;
use broker::jsonrpc::RequestId;
use http::header::HeaderMap;
use sha2::{Digest, Sha256};

use super::rounds::PARKED_TTL;
use crate::backend::outbound::post_json;
use crate::mcp::Mcp;
use crate::mcp::errors::ProxyError;

/// How often a watcher first looks for an answer left by another replica, doubling up to
/// [`POLL_MAX`] (answers come within a second or two when a model or a quick user answers; a
/// watcher whose answer went straight to the backend costs little while it waits).
const POLL: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);

/// The store slot of the answer to a sealed server-request id.
pub fn slot(sealed: &RequestId) -> String {
    let text = match sealed {
        RequestId::Text(text) => text.clone(),
        RequestId::Number(n) => n.to_string(),
    };
    format!(
        "answer:{}",
        hex::encode(&Sha256::digest(text.as_bytes())[..16])
    )
}

/// Leaves an answer (the JSON-RPC response with the backend's own id) for the replica that relays
/// the stream it was asked on.
pub async fn leave(
    app: &Mcp,
    principal: &PrincipalId,
    sealed: &RequestId,
    body: &[u8],
) -> Result<(), ProxyError> {
    let text = String::from_utf8_lossy(body);
    let slot = slot(sealed);
    let put = app.store.put_parked(principal, &slot, &text, PARKED_TTL);
    put.await.map_err(ProxyError::from)
}

/// Watches for answers other replicas leave, while a relay lives.
#[derive(Clone)]
pub struct Courier {
    pub app: Arc<Mcp>,
    /// The headers to deliver with: credential, the backend session, its protocol version.
    pub headers: HeaderMap,
    /// Alive while the relay is.
    pub alive: Weak<()>,
}

impl Courier {
    /// Watches the slot of `sealed` until an answer is there (then delivers it), the relay ends,
    /// or [`PARKED_TTL`] passes.
    pub fn watch(&self, principal: &PrincipalId, sealed: &RequestId) {
        let courier = self.clone();
        let principal = principal.clone();
        let slot = slot(sealed);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut poll = POLL;
            while started.elapsed() < PARKED_TTL && courier.alive.upgrade().is_some() {
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(POLL_MAX);
                let taken = courier.app.store.take_parked(&principal, &slot).await;
                let Ok(Some(text)) = taken else { continue };
                let Ok(answer) = serde_json::from_str(&text) else {
                    return;
                };
                let path = courier.app.settings.mcp_path();
                let headers = courier.headers.clone();
                let sent = post_json(&courier.app.upstream, path, headers, &answer).await;
                match sent {
                    Ok(_) => tracing::info!("delivered an answer another replica received"),
                    Err(error) => {
                        tracing::warn!(%error, "could not deliver an answer another replica received")
                    }
                }
                return;
            }
        });
    }
}
