//! Relaying the backend's answer to the client. Unwatched answers pass through untouched (SSE
//! streams are never buffered). Watched ones are rewritten, an SSE stream event by event and a
//! JSON body whole: replies get the client's ids back and server requests sealed ids
//! ([`crate::mcp::message_routing`]), then `tools/list` and select replies are edited. Edits of ids
//! alone happen in the body the client reads ([`fast`]); the others in a task ([`tasks`]) that
//! runs in the request's span (a settled select binds and is counted there).

use std::sync::Arc;

use broker::jsonrpc::RequestId;
use broker::session::{BackendSessions, Links, WorkSession};
use broker::store::{BackendRef, Store, StoreError};
use broker::{guidance, mcp};
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
use crate::metrics::{Metrics, Refusal, StoreOp};

mod fast;
pub mod session;
mod tasks;

pub use crate::mcp::REWRITE_LIMIT;

/// The select call being watched: bind when its reply says it succeeded.
pub struct SelectWatch {
    pub id: RequestId,
    pub plan: WorkSession,
    pub links: Links,
    pub backend: Option<BackendRef>,
    /// The handle to give the model, already signed for `plan`.
    pub handle: String,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// The planned work session is new (not the resolved one): counted as created when bound.
    pub created: bool,
}

/// What to rewrite in an answer.
#[derive(Default)]
pub struct Watch {
    pub tools_list: Vec<RequestId>,
    pub select: Option<SelectWatch>,
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
        let mut changed = self.ids.restore(message);
        if let Some(seal) = &self.seal {
            changed |= seal.seal(message);
        }
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
        if self.select.as_ref().is_some_and(|s| s.id == id)
            && let Some(select) = self.select.take()
        {
            changed |= select.settle(message).await;
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

impl SelectWatch {
    /// The select reply arrived: bind on success (with the backend session that selected, which
    /// from now on serves this work session's project) and hand the model its handle.
    async fn settle(mut self, reply: &mut Value) -> bool {
        if !mcp::call_succeeded(reply) {
            tracing::info!(project = %self.plan.project, "select call failed at the backend: nothing bound");
            return false;
        }
        // The bind carries only the backend session this select ran on: the plan's others are a
        // copy that calls may have replaced since; the store keeps what it holds for them.
        self.plan.backends = BackendSessions::default();
        if let Some(backend) = &self.backend {
            let field = BackendSessions::field(&backend.upstream, &self.plan.project);
            self.plan
                .backends
                .insert_field(field, backend.session.clone());
        }
        let bind = self.store.bind(&self.plan, &self.links);
        if let Err(error) = self.metrics.store(StoreOp::Bind, bind).await {
            let text = match error {
                StoreError::TooMany(cap) => {
                    tracing::warn!(principal = %self.plan.principal, cap, "work-session cap reached at bind");
                    self.metrics.refusal(&Refusal::TooMany { cap });
                    guidance::too_many_unbound(cap)
                }
                error => {
                    tracing::error!(%error, "the backend selected a project but the broker could not record it");
                    guidance::select_not_recorded(&self.plan.project)
                }
            };
            *reply = broker::jsonrpc::tool_error_reply(&self.id, &text);
            return true;
        }
        self.metrics.selection(self.created);
        tracing::info!(work_session = %self.plan.id, project = %self.plan.project, surface = %self.plan.surface, "bound");
        mcp::append_text(reply, &guidance::handle_item(&self.handle))
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
