//! What a work backend session sends outside any request, on its GET stream (resource updates after a
//! `resources/subscribe`, list changes, log messages, server requests), reaching the GET streams of
//! the clients of its work session on this replica.
//!
//! A backend session takes one GET stream at a time, and a work backend session is shared by every
//! MCP session of its work session: so this replica opens one GET stream per work backend session
//! ([`Hubs::subscribe`], the first subscriber opens it) and fans its events out to the subscribed
//! client GET streams ([`merge`] adds them to the client's own stream, event by event). Server
//! requests on it get sealed ids, so their answers reach that session.
//!
//! Shared state: [`Hubs`], the open hubs by backend session. Who writes it: a subscriber that finds
//! none (or a closed one) inserts one; the hub's task removes its own entry when its stream ends or
//! its last subscriber left (only if the entry is still its channel, so a newer hub is never removed).
//! Bounded at [`MAX_HUBS`]. Another replica's clients of the same work session get these events only
//! through that replica's own hub, which the backend refuses while this one holds the stream (409):
//! documented in protocol.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::ids::BackendSessionId;
use broker::sse;
use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Response};
use http_body_util::BodyExt;
use tokio::sync::broadcast;

use crate::backend::body::{self, ProxyBody};
use crate::backend::headers::MCP_PROTOCOL_VERSION;
use crate::backend::outbound::{UpstreamRequest, session_headers};
use crate::mcp::Mcp;
use crate::mcp::message_routing::SealFor;

/// Most work backend sessions whose GET stream one replica relays at once.
pub const MAX_HUBS: usize = 4096;
/// Events a slow subscriber may fall behind before it misses some.
const BACKLOG: usize = 64;
/// How often a hub with no event checks whether anyone still listens.
const CHECK: Duration = Duration::from_secs(5);

/// The hubs of this replica (see the module doc).
#[derive(Default)]
pub struct Hubs(Mutex<HashMap<BackendSessionId, broadcast::Sender<Bytes>>>);

impl Hubs {
    /// Subscribes to the GET stream of `seal.backend`, opening it when this replica relays none.
    /// `headers`: the credential and protocol version to open it with. `None` when the bound is
    /// reached.
    pub fn subscribe(
        &self,
        app: &Arc<Mcp>,
        headers: HeaderMap,
        seal: SealFor,
    ) -> Option<broadcast::Receiver<Bytes>> {
        let mut hubs = self.0.lock().ok()?;
        if let Some(tx) = hubs.get(&seal.backend)
            && tx.receiver_count() > 0
        {
            return Some(tx.subscribe());
        }
        if hubs.len() >= MAX_HUBS {
            hubs.retain(|_, tx| tx.receiver_count() > 0);
            if hubs.len() >= MAX_HUBS {
                return None;
            }
        }
        let (tx, rx) = broadcast::channel(BACKLOG);
        hubs.insert(seal.backend.clone(), tx.clone());
        tokio::spawn(run(app.clone(), headers, seal, tx));
        Some(rx)
    }

    fn remove(&self, session: &BackendSessionId, tx: &broadcast::Sender<Bytes>) {
        if let Ok(mut hubs) = self.0.lock()
            && hubs.get(session).is_some_and(|t| t.same_channel(tx))
        {
            hubs.remove(session);
        }
    }
}

/// Relays one work backend session's GET stream to its subscribers until it ends or nobody listens.
async fn run(app: Arc<Mcp>, headers: HeaderMap, seal: SealFor, tx: broadcast::Sender<Bytes>) {
    let session = seal.backend.clone();
    let request =
        UpstreamRequest::own(Method::GET, app.settings.mcp_path(), headers).session(Some(&session));
    let response = match request.send(&app.upstream).await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            tracing::info!(status = %response.status(), "a work backend session's GET stream was refused (another replica may hold it)");
            app.hubs.remove(&session, &tx);
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "could not open a work backend session's GET stream");
            app.hubs.remove(&session, &tx);
            return;
        }
    };
    let mut incoming = response.into_body();
    let mut parser = sse::Parser::new(crate::mcp::REWRITE_LIMIT);
    let mut check = tokio::time::interval(CHECK);
    loop {
        let frame = tokio::select! {
            frame = incoming.frame() => frame,
            _ = check.tick() => {
                if tx.receiver_count() == 0 { break }
                continue;
            }
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let Ok(blocks) = parser.push(&data) else {
            break;
        };
        for block in blocks {
            let out = match block.event {
                Some(mut event) => {
                    if let Ok(mut value) = serde_json::from_str(&event.data)
                        && seal.seal(&mut value)
                        && let Ok(data) = serde_json::to_string(&value)
                    {
                        event.data = data;
                    }
                    event.to_bytes()
                }
                None => continue, // comments and keep-alives: each client stream has its own
            };
            if tx.send(out).is_err() {
                app.hubs.remove(&session, &tx);
                return; // nobody listens any more
            }
        }
    }
    app.hubs.remove(&session, &tx);
}

/// The client's own GET stream with a hub's events added between its events.
pub fn merge(
    response: Response<ProxyBody>,
    mut hub: broadcast::Receiver<Bytes>,
) -> Response<ProxyBody> {
    let (parts, mut own) = response.into_parts();
    let (tx, out) = body::channel(16);
    tokio::spawn(async move {
        let mut hub_open = true;
        loop {
            tokio::select! {
                frame = own.frame() => match frame {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        if tx.send(Ok(data)).await.is_err() { return }
                    }
                    Some(Err(error)) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                    None => return,
                },
                event = hub.recv(), if hub_open => match event {
                    Ok(event) => if tx.send(Ok(event)).await.is_err() { return },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a client's GET stream fell behind its work session's events");
                    }
                    Err(broadcast::error::RecvError::Closed) => hub_open = false,
                },
                () = tx.closed() => return,
            }
        }
    });
    Response::from_parts(parts, out)
}

/// The headers a hub opens a GET stream with: the subscriber's credential and protocol version.
pub fn hub_headers(credential: HeaderMap, protocol: Option<&str>) -> HeaderMap {
    session_headers(credential, None, protocol)
}

/// A client's GET stream, with the events of its work session's backend session added when the
/// client resolves to one (as a project-scoped request would) that has one on this upstream.
pub async fn with_work_session(
    app: &Arc<Mcp>,
    parts: &http::request::Parts,
    caller: &crate::mcp::caller::Caller,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let Some(claims) = &caller.session else {
        return response;
    };
    let query = crate::mcp::caller::mcp_query(app, claims);
    let Some(work) = crate::mcp::call::resolve_passive(app, caller, Some(query)).await else {
        return response;
    };
    let Some(backend) = work.backends.get(&app.upstream_id, &work.project) else {
        return response;
    };
    let protocol =
        crate::backend::headers::text(&parts.headers, &MCP_PROTOCOL_VERSION).or_else(|| {
            claims
                .ini
                .get("protocolVersion")
                .and_then(serde_json::Value::as_str)
        });
    let seal = SealFor {
        sealer: app.sealer.clone(),
        principal: caller.principal.clone(),
        upstream: app.upstream_id.clone(),
        backend: backend.clone(),
        courier: None,
    };
    let headers = hub_headers(caller.own_request_headers(), protocol);
    match app.hubs.subscribe(app, headers, seal) {
        Some(hub) => merge(response, hub),
        None => response,
    }
}
