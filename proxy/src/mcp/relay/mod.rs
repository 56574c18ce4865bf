//! Relaying the backend's answer to the client. Unwatched answers pass through untouched (SSE
//! streams are never buffered). Watched ones are rewritten, an SSE stream event by event and a
//! JSON body whole: replies get the client's ids back and server requests sealed ids
//! ([`crate::mcp::message_routing`]), then `tools/list` and select replies are edited. Edits of ids
//! alone happen in the body the client reads ([`fast`]); the others in a task ([`tasks`]) that
//! runs in the request's span (a select's hook binds and is counted there).

use std::sync::Arc;

use broker::jsonrpc::RequestId;
use broker::mcp;
use broker::store::BackendRef;
use http::{Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tracing::Instrument;

use crate::backend::body::{self, ProxyBody};
use crate::backend::headers;
use crate::backend::upstream::content_type_is;
use crate::mcp::message_routing::rounds::{Park, Questions};
use crate::mcp::message_routing::{IdMap, SealFor};

mod fast;
pub mod session;
mod tasks;

pub use crate::mcp::REWRITE_LIMIT;

/// A hook the relay runs on the one reply it waits for, which may edit it. The relay only moves
/// bytes and hands replies to hooks; what a hook does (bind a select, [`crate::mcp::select`]) is
/// its owner's, decided in `broker::decide`.
pub trait ReplyHook: Send + Sync {
    /// The client's id of the reply it waits for.
    fn id(&self) -> &RequestId;
    /// The backend session the request was sent on (set before the relay starts).
    fn ran_on(&mut self, _backend: BackendRef) {}
    /// The reply arrived: edit it; `true` when it changed.
    fn on_reply<'a>(self: Box<Self>, reply: &'a mut Value) -> BoxFuture<'a, bool>;
}

/// A boxed future a hook returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What to rewrite in an answer.
#[derive(Default)]
pub struct Watch {
    pub tools_list: Vec<RequestId>,
    /// A select call: its hook binds when the reply says it ran.
    pub select: Option<Box<dyn ReplyHook>>,
    /// Replies to a modern client from a legacy backend: results gain `resultType` (and caching
    /// directives when the method's results are cacheable: the `bool`).
    pub complete: Vec<(RequestId, bool)>,
    /// The upstream ids of the forwarded requests, for their replies to get the client's back.
    pub ids: IdMap,
    /// Server requests on this answer get sealed ids naming its backend session.
    pub seal: Option<SealFor>,
    /// Run when the client goes away before every request was answered (how a client cancels).
    pub on_abandon: Option<Abandon>,
    /// A modern client's bridged call: a server request parks it (`input_required`).
    pub park: Option<Park>,
    /// A legacy client's call to a modern-only backend: `input_required` becomes server requests.
    pub questions: Option<Questions>,
    /// Held while the relay lives: couriers watching for answers stop when it is dropped.
    pub lease: Option<Arc<()>>,
    /// A forwarded `initialize`: its result is kept for the next ones.
    pub learn_initialize: Option<crate::mcp::initialize_cache::Learn>,
}

/// What to do when the client abandons requests (tell the backend to cancel them), given the
/// upstream ids left unanswered.
pub type Abandon = Box<dyn FnOnce(Vec<RequestId>) + Send + Sync>;

impl Watch {
    pub fn is_empty(&self) -> bool {
        self.tools_list.is_empty()
            && self.ids.is_empty()
            && self.seal.is_none()
            && self.select.is_none()
            && self.complete.is_empty()
            && self.on_abandon.is_none()
            && self.learn_initialize.is_none()
            && self.park.is_none()
            && self.questions.is_none()
    }

    /// The client went away: run the abandon hook, once, for what it left unanswered.
    fn abandoned(&mut self) {
        if let Some(hook) = self.on_abandon.take() {
            hook(self.ids.unanswered());
        }
    }

    /// Rewrites one JSON-RPC message if it is watched. Returns whether it changed. Only a response
    /// (no `method`, a `result` or an `error`) is a reply: a server's own request that happens to
    /// reuse the id is not.
    async fn apply(&mut self, message: &mut Value) -> bool {
        let mut changed = self.ids.to_client(self.seal.as_ref(), message);
        let is_response = message.get("method").is_none()
            && (message.get("result").is_some() || message.get("error").is_some());
        let Some(id) = message
            .get("id")
            .and_then(RequestId::from_value)
            .filter(|_| is_response)
        else {
            return changed;
        };
        if self.learn_initialize.as_ref().is_some_and(|l| l.id == id)
            && let Some(learn) = self.learn_initialize.take()
        {
            learn.reply(message);
        }
        if self.tools_list.contains(&id) {
            changed |= mcp::add_work_session_argument(message);
        }
        if self.select.as_ref().is_some_and(|s| *s.id() == id)
            && let Some(select) = self.select.take()
        {
            changed |= select.on_reply(message).await;
        }
        if let Some((_, cacheable)) = self.complete.iter().find(|(c, _)| *c == id) {
            changed |= broker::modern::mark_complete(message, *cacheable);
        }
        changed
    }

    async fn apply_value(&mut self, value: &mut Value) -> bool {
        match value {
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= Box::pin(self.apply_value(item)).await;
                }
                changed
            }
            other => self.apply(other).await,
        }
    }
}

/// The client's response for a backend response.
pub fn relay(response: Response<Incoming>, mut watch: Watch) -> Response<ProxyBody> {
    let (mut parts, incoming) = response.into_parts();
    parts.headers = headers::toward_client(&parts.headers);
    // Error statuses are rewritten only for the ids (a JSON-RPC error names the upstream id too).
    if watch.is_empty() || (!parts.status.is_success() && watch.ids.is_empty()) {
        return Response::from_parts(parts, body::pass(incoming));
    }
    let is_sse = content_type_is(&parts.headers, "text/event-stream");
    let is_json = content_type_is(&parts.headers, "application/json");
    if !is_sse && !is_json {
        return Response::from_parts(parts, body::pass(incoming));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(edits) = fast::Ids::only(&mut watch) {
        // Only ids to rewrite: in the body itself, no task (a steady call's reply).
        let rewritten = fast::Rewritten::new(incoming, is_sse, edits);
        return Response::from_parts(parts, rewritten.boxed_unsync());
    }
    let (tx, out) = body::channel(16);
    let span = tracing::Span::current();
    if is_json && watch.questions.is_some() {
        // The reply may turn into server requests first: the client gets a stream.
        parts.headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        tokio::spawn(tasks::relay_questions(incoming, watch, tx).instrument(span));
    } else if is_sse {
        tokio::spawn(tasks::relay_sse(incoming, watch, tx).instrument(span));
    } else {
        tokio::spawn(tasks::relay_json(incoming, watch, tx).instrument(span));
    }
    Response::from_parts(parts, out)
}
