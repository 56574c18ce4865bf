//! Relaying the backend's answer to the client. Unwatched answers pass through untouched (SSE
//! streams are never buffered). Watched ones go through a task that rewrites only the JSON-RPC
//! messages it watches, an SSE stream event by event, a JSON body whole: replies get the client's
//! ids back and server requests sealed ids ([`crate::message_routing`]), then `tools/list` and
//! select replies are edited. The task runs in the request's span; a settled select is counted.

use std::sync::Arc;

use broker::jsonrpc::RequestId;
use broker::session::{BackendSessions, Links, WorkSession};
use broker::store::{BackendRef, Store, StoreError};
use broker::{guidance, mcp, sse};
use bytes::Bytes;
use http::{Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tracing::Instrument;

use crate::body::{self, ProxyBody};
use crate::headers;
use crate::message_routing::rounds::{PARKED_TTL, Park, Questions};
use crate::message_routing::{IdMap, SealFor};
use crate::metrics::{Metrics, Refusal, StoreOp};
use crate::upstream::content_type_is;

/// Largest JSON body or SSE event the relay rewrites.
pub const REWRITE_LIMIT: usize = 16 * 1024 * 1024;

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
    pub learn_initialize: Option<crate::initialize::Learn>,
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
pub fn relay(response: Response<Incoming>, watch: Watch) -> Response<ProxyBody> {
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
    let (tx, out) = body::channel(16);
    let span = tracing::Span::current();
    if is_json && watch.questions.is_some() {
        // The reply may turn into server requests first: the client gets a stream.
        parts.headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        tokio::spawn(relay_questions(incoming, watch, tx).instrument(span));
    } else if is_sse {
        tokio::spawn(relay_sse(incoming, watch, tx).instrument(span));
    } else {
        tokio::spawn(relay_json(incoming, watch, tx).instrument(span));
    }
    Response::from_parts(parts, out)
}

type Sender = tokio::sync::mpsc::Sender<Result<Bytes, body::BoxError>>;

async fn relay_sse(mut incoming: Incoming, mut watch: Watch, tx: Sender) {
    let mut parser = sse::Parser::new(REWRITE_LIMIT);
    loop {
        // A client that closes its reply stream while the backend is still silent is noticed now,
        // not when the backend next writes: the backend is released (and told, when bridged).
        let frame = tokio::select! {
            frame = incoming.frame() => frame,
            () = tx.closed() => {
                watch.abandoned();
                return;
            }
        };
        let Some(frame) = frame else { break };
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        let blocks = match parser.push(&data) {
            Ok(blocks) => blocks,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        match forward_blocks(&mut watch, blocks, &tx).await {
            Flow::Go => {}
            Flow::Gone => {
                watch.abandoned(); // the client went away
                return;
            }
            Flow::Parked(park) => {
                drop(tx); // the client has its input_required: its stream ends here
                return park_rest(incoming, parser, watch, park).await;
            }
        }
    }
    let ended = parser.end();
    match forward_blocks(&mut watch, ended, &tx).await {
        Flow::Go => {}
        Flow::Gone => return,
        Flow::Parked(park) => {
            drop(tx);
            park.ended().await;
            return;
        }
    }
    if let Some(rest) = parser.finish() {
        let _ = tx.send(Ok(rest)).await;
    }
}

/// What the relay does after a batch of blocks.
enum Flow {
    Go,
    /// The client went away.
    Gone,
    /// The backend asked the (modern) client something: the call is parked.
    Parked(Park),
}

/// Sends blocks on, rewriting the watched replies among them.
async fn forward_blocks(watch: &mut Watch, blocks: Vec<sse::Block>, tx: &Sender) -> Flow {
    for block in blocks {
        let out = match block.event {
            Some(event) if watch.park.is_some() => match park_on_request(watch, &event) {
                Some(parked) => {
                    let (reply, park) = parked;
                    let _ = tx.send(Ok(reply)).await;
                    return Flow::Parked(park);
                }
                None => rewrite_event(watch, event).await.unwrap_or(block.raw),
            },
            Some(event) if !watch.is_empty() => {
                rewrite_event(watch, event).await.unwrap_or(block.raw)
            }
            _ => block.raw,
        };
        if tx.send(Ok(out)).await.is_err() {
            return Flow::Gone;
        }
    }
    Flow::Go
}

/// A server request on a parkable call's stream: the `input_required` event for the client, and
/// the park that takes over the stream.
fn park_on_request(watch: &mut Watch, event: &sse::Event) -> Option<(Bytes, Park)> {
    let mut value: Value = serde_json::from_str(&event.data).ok()?;
    broker::rpc_ids::request_id(&value)?;
    watch.seal.as_ref()?.seal(&mut value);
    let park = watch.park.take()?;
    let reply = park.first_reply(&value);
    let event = sse::Event {
        data: serde_json::to_string(&reply).ok()?,
        ..event.clone()
    };
    Some((event.to_bytes(), park))
}

/// Reads the rest of a parked call's stream into rounds for the client's retries, for at most
/// [`PARKED_TTL`]: a call whose client never comes back is then cancelled at the backend.
async fn park_rest(incoming: Incoming, parser: sse::Parser, mut watch: Watch, park: Park) {
    tracing::info!("the backend asked a modern client something: the call is parked for its retry");
    let read = read_parked(incoming, parser, &watch, &park);
    match tokio::time::timeout(PARKED_TTL, read).await {
        Ok(true) => watch.ids = IdMap::default(), // answered: nothing to cancel
        Ok(false) => park.ended().await,
        Err(_) => {
            tracing::info!("a parked call's client never came back: cancelled at the backend");
            watch.abandoned();
            park.ended().await;
        }
    }
}

/// Whether the call's response came (else the stream ended first).
async fn read_parked(
    mut incoming: Incoming,
    mut parser: sse::Parser,
    watch: &Watch,
    park: &Park,
) -> bool {
    loop {
        let blocks = match incoming.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => parser.push(&data).unwrap_or_default(),
                Err(_) => continue,
            },
            Some(Err(_)) | None => return false,
        };
        for block in blocks {
            let Some(event) = block.event else { continue };
            let Ok(mut value) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(seal) = &watch.seal {
                seal.seal(&mut value);
            }
            if park.message(&value).await {
                return true;
            }
        }
    }
}

async fn rewrite_event(watch: &mut Watch, mut event: sse::Event) -> Option<Bytes> {
    let mut value: Value = serde_json::from_str(&event.data).ok()?;
    if !watch.apply_value(&mut value).await {
        return None;
    }
    event.data = serde_json::to_string(&value).ok()?;
    Some(event.to_bytes())
}

/// A modern-only backend's JSON reply to a legacy client, as a stream: each `input_required` round
/// becomes server requests to the client, then the call is retried with its answers; the last
/// reply ends the stream.
async fn relay_questions(incoming: Incoming, mut watch: Watch, tx: Sender) {
    let collected = tokio::select! {
        collected = Limited::new(incoming, REWRITE_LIMIT).collect() => collected,
        () = tx.closed() => return,
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let _ = tx.send(Err(error)).await;
            return;
        }
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        let _ = tx.send(Ok(message_event(&bytes))).await;
        return;
    };
    if let Some(mut questions) = watch.questions.take() {
        while broker::rounds::input_required_of(&value).is_some() {
            let send = |message: Value| {
                let tx = tx.clone();
                async move {
                    let bytes = serde_json::to_vec(&message).unwrap_or_default();
                    tx.send(Ok(message_event(&bytes))).await.is_ok()
                }
            };
            let gone = || tx.is_closed();
            value = match questions.round(&value, send, gone).await {
                Ok(next) => next,
                Err(failed) => failed,
            };
        }
    }
    watch.apply_value(&mut value).await;
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let _ = tx.send(Ok(message_event(&bytes))).await;
}

/// One SSE `message` event carrying `data`.
fn message_event(data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

async fn relay_json(incoming: Incoming, mut watch: Watch, tx: Sender) {
    let collected = tokio::select! {
        collected = Limited::new(incoming, REWRITE_LIMIT).collect() => collected,
        () = tx.closed() => {
            watch.abandoned();
            return;
        }
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let _ = tx.send(Err(error)).await;
            return;
        }
    };
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            if watch.apply_value(&mut value).await {
                serde_json::to_vec(&value).map(Bytes::from).unwrap_or(bytes)
            } else {
                bytes
            }
        }
        Err(_) => bytes,
    };
    let _ = tx.send(Ok(out)).await;
}
