//! What the relay of a stream from a backend session is handed: the seal for the server requests on
//! it (and, with replicas, the courier that brings answers other replicas receive), the hook that
//! cancels what the client leaves unanswered, and for a bridged modern client the park.

use std::sync::Arc;

use broker::ids::BackendSessionId;
use broker::jsonrpc::RequestId;
use http::header::HeaderMap;
use serde_json::json;

use super::{Abandon, Watch};
use crate::backend::outbound::session_headers;
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::message_routing::rounds::Park;
use crate::mcp::message_routing::{Courier, IdMap, SealFor};

/// Fills `watch` for a response from `session`. `protocol`: the revision spoken on it; `call_id`:
/// the client's id of the single request, if it is one.
pub fn watch_session(
    app: &Arc<Mcp>,
    caller: &Caller,
    session: &BackendSessionId,
    protocol: Option<&str>,
    call_id: Option<&RequestId>,
    ids: &IdMap,
    watch: &mut Watch,
) {
    if !ids.is_empty() {
        let headers = caller.own_request_headers();
        watch.on_abandon = Some(cancel_hook(app, headers, session, protocol));
    }
    let courier = app.settings.redis_url.is_some().then(|| {
        let lease = Arc::new(());
        let alive = Arc::downgrade(&lease);
        watch.lease = Some(lease);
        let headers = session_headers(caller.own_request_headers(), Some(session), protocol);
        Courier {
            app: app.clone(),
            headers,
            alive,
        }
    });
    let seal = SealFor {
        sealer: app.sealer.clone(),
        principal: caller.principal.clone(),
        upstream: app.upstream_id.clone(),
        backend: session.clone(),
        courier,
    };
    if caller.bridge.is_some()
        && let Some(client_id) = call_id
        && let Some(call) = ids.upstream_of(client_id)
    {
        // A modern client cannot answer a server request: a bridged call that asks one is parked
        // and answered input_required (broker::rounds).
        watch.park = Some(Park::new(app, &seal, call, client_id.clone()));
    }
    watch.seal = Some(seal);
}

/// The hook run when a client closes a reply stream before every request on it was answered: the
/// backend session is told to cancel each (`ids`: the upstream ids left unanswered).
pub fn cancel_hook(
    app: &Arc<Mcp>,
    credential: HeaderMap,
    session: &BackendSessionId,
    protocol: Option<&str>,
) -> Abandon {
    let app = app.clone();
    let headers = session_headers(credential, Some(session), protocol);
    Box::new(move |ids: Vec<RequestId>| {
        if ids.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for id in ids {
                let notification = json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": id.to_value(), "reason": "the client closed the request"},
                });
                let sent = crate::backend::outbound::post_json(
                    &app.upstream,
                    app.settings.mcp_path(),
                    headers.clone(),
                    &notification,
                )
                .await;
                match sent {
                    Ok(_) => tracing::info!(
                        "the client closed its request: told the backend to cancel it"
                    ),
                    Err(error) => tracing::warn!(%error, "could not tell the backend to cancel"),
                }
            }
        });
    })
}
