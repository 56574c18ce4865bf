//! A client's answers to server requests and its cancellations, sent to the backend session they
//! concern (where they go is [`crate::mcp::message_routing`]'s to say).

use std::sync::Arc;

use broker::ids::BackendSessionId;
use broker::jsonrpc::{Kind, Message};
use broker::rpc_ids;
use bytes::Bytes;
use http::request::Parts;
use http::{Response, StatusCode};
use serde_json::Value;

use crate::backend::body::ProxyBody;
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::errors::ProxyError;
use crate::mcp::forward::{Outbound, forward};
use crate::mcp::message_routing::{Target, answer_target};

/// A legacy client's single response: when its id is one the broker sealed, it is delivered to the
/// backend session that asked (`None`: not sealed, it goes where it went before). A forged id, or
/// one sealed for another principal, is refused (400) and reaches no backend; the backend session
/// that asked being gone (404) is logged and the client told 202, as it has nothing to retry.
pub async fn answer(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: &Caller,
    message: &Message,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    let value = Value::Object(message.value.clone());
    if let Some(id) = &message.id
        && let Some(left) =
            crate::mcp::message_routing::rounds::leave_answer(app, caller, id, &value).await
    {
        // An answer to a question the broker asked for a backend that speaks only 2026-07-28.
        return Some(left.map(|()| accepted()));
    }
    let (backend, body) = match answer_target(app, caller, &value) {
        Ok(Some(Target::Backend(backend, body))) => (backend, body),
        Ok(Some(Target::Relay(sealed, body))) => {
            // Another replica's upstream asked: its relay takes the answer from the store.
            let left =
                crate::mcp::message_routing::courier::leave(app, &caller.principal, &sealed, &body)
                    .await;
            return Some(left.map(|()| accepted()));
        }
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "a client's answer to a server request was refused");
            return Some(Err(error.into()));
        }
    };
    let forwarded = forward(app, Outbound::to_target(parts, caller, body, backend)).await;
    Some(match forwarded {
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            tracing::warn!(
                "the backend session that asked is gone: the client's answer is dropped"
            );
            Ok(accepted())
        }
        other => other,
    })
}

/// A legacy client's `notifications/cancelled`, sent to the backend session its request runs on,
/// naming the request by its upstream id. Runs through this replica: sent there alone (`Some`).
/// Otherwise (another replica ran it, or it ended) it is sent to the backend session its work
/// session has for its project, as a project-scoped request would resolve, and `None` tells the
/// caller to send it on the client's own backend session too (where an exempt tool runs). A backend
/// ignores a cancellation of an id it does not run, so the extra copy is harmless.
pub async fn cancel(
    app: &Arc<Mcp>,
    parts: &Parts,
    caller: &Caller,
    message: &Message,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    // Every other single message passes here on its way: decide before copying anything.
    if !matches!(&message.kind, Kind::Notification(m) if m == "notifications/cancelled") {
        return None;
    }
    let claims = caller.session.as_ref()?;
    let value = Value::Object(message.value.clone());
    let requested = rpc_ids::cancelled_request_id(&value)?;
    let body = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
    let send = |target: BackendSessionId| Outbound::to_target(parts, caller, body.clone(), target);
    if let Some(running) = app
        .in_flight
        .find(&caller.principal, &claims.sid, &requested)
    {
        tracing::info!("a client cancelled a request in flight here: sent where it runs");
        return Some(forward(app, send(running.backend)).await);
    }
    let query = crate::mcp::caller::mcp_query(app, claims);
    if let Some(work) = crate::mcp::call::resolve_passive(app, caller, Some(query)).await
        && let Some(backend) = work.backends.get(&app.upstream_id, &work.project)
    {
        match forward(app, send(backend.clone())).await {
            Ok(_) => tracing::info!(
                "a client cancelled a request: sent to its work session's backend session"
            ),
            Err(error) => {
                tracing::warn!(%error, "could not send a cancellation to the work backend session")
            }
        }
    }
    None
}

fn accepted() -> Response<ProxyBody> {
    crate::backend::body::empty_response(StatusCode::ACCEPTED)
}
