//! The relay's fast path: an answer whose only edits are its ids (replies get the client's ids
//! back, server requests get sealed ids) is rewritten inside the body the client reads, an SSE
//! stream event by event and a JSON body whole, with no task and no channel. A steady call's reply
//! takes this path. Dropped before its end (the client went away), it runs the abandon hook for
//! what it left unanswered, as the task-based relay does.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use broker::jsonrpc::envelope::Envelope;
use broker::sse;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use serde_json::Value;

use super::{Abandon, REWRITE_LIMIT, Watch};
use crate::backend::body::BoxError;
use crate::mcp::message_routing::{IdMap, SealFor};

/// The edits of the fast path, taken from a [`Watch`] that holds nothing else.
pub struct Ids {
    ids: IdMap,
    seal: Option<SealFor>,
    on_abandon: Option<Abandon>,
    /// Held while the body lives (couriers watching for answers stop when it goes).
    _lease: Option<Arc<()>>,
}

impl Ids {
    /// The edits, when the watch holds no other (no select, list, park, questions, `resultType`).
    pub fn only(watch: &mut Watch) -> Option<Self> {
        let only_ids = watch.tools_list.is_empty()
            && watch.select.is_none()
            && watch.complete.is_empty()
            && watch.learn_initialize.is_none()
            && watch.park.is_none()
            && watch.questions.is_none();
        only_ids.then(|| Self {
            ids: std::mem::take(&mut watch.ids),
            seal: watch.seal.take(),
            on_abandon: watch.on_abandon.take(),
            _lease: watch.lease.take(),
        })
    }

    /// Rewrites one message; whether it changed.
    fn apply(&mut self, message: &mut Value) -> bool {
        self.ids.to_client(self.seal.as_ref(), message)
    }

    /// One message's text rewritten (`None`: unchanged). A single message has its id spliced in,
    /// every other byte as the backend wrote it; a batch, or text the envelope leaves to the full
    /// parse, is parsed and written again.
    fn rewrite(&mut self, text: &str) -> Option<String> {
        let Some(envelope) = Envelope::read(text) else {
            let mut value = serde_json::from_str::<Value>(text).ok()?;
            return if self.apply_value(&mut value) {
                serde_json::to_string(&value).ok()
            } else {
                None
            };
        };
        let id = self.ids.id_to_client(
            self.seal.as_ref(),
            envelope.response_id(),
            envelope.request_id(),
        )?;
        envelope.with_id(&id)
    }

    fn apply_value(&mut self, value: &mut Value) -> bool {
        match value {
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.apply(item) | changed),
            other => self.apply(other),
        }
    }
}

enum Shape {
    Sse(sse::Parser),
    /// A JSON body, collected whole (`None`: past [`REWRITE_LIMIT`], passed on as it comes).
    Json(Option<Vec<u8>>),
}

/// The client's body: the backend's, with the ids rewritten.
pub struct Rewritten {
    inner: Incoming,
    shape: Shape,
    edits: Ids,
    ready: VecDeque<Bytes>,
    ended: bool,
}

impl Rewritten {
    pub fn new(inner: Incoming, sse: bool, edits: Ids) -> Self {
        let shape = if sse {
            Shape::Sse(sse::Parser::new(REWRITE_LIMIT))
        } else {
            Shape::Json(Some(Vec::new()))
        };
        Self {
            inner,
            shape,
            edits,
            ready: VecDeque::new(),
            ended: false,
        }
    }

    fn push(&mut self, data: Bytes) -> Result<(), BoxError> {
        match &mut self.shape {
            Shape::Sse(parser) => {
                let blocks = parser.push(&data)?;
                self.blocks(blocks);
            }
            Shape::Json(Some(collected)) if collected.len() + data.len() <= REWRITE_LIMIT => {
                collected.extend_from_slice(&data);
            }
            Shape::Json(collected) => {
                // Too large to rewrite: what was collected and the rest go on untouched.
                if let Some(collected) = collected.take() {
                    self.ready.push_back(Bytes::from(collected));
                }
                self.ready.push_back(data);
            }
        }
        Ok(())
    }

    fn blocks(&mut self, blocks: Vec<sse::Block>) {
        for block in blocks {
            let rewritten = block.event.and_then(|mut event| {
                event.data = self.edits.rewrite(&event.data)?;
                Some(event.to_bytes())
            });
            self.ready.push_back(rewritten.unwrap_or(block.raw));
        }
    }

    fn finish(&mut self) {
        self.ended = true;
        match &mut self.shape {
            Shape::Sse(parser) => {
                let blocks = parser.end();
                let parser = std::mem::replace(parser, sse::Parser::new(0));
                self.blocks(blocks);
                self.ready.extend(parser.finish());
            }
            Shape::Json(collected) => {
                let Some(collected) = collected.take() else {
                    return;
                };
                let rewritten = std::str::from_utf8(&collected)
                    .ok()
                    .and_then(|text| self.edits.rewrite(text))
                    .map(String::into_bytes);
                self.ready
                    .push_back(Bytes::from(rewritten.unwrap_or(collected)));
            }
        }
    }
}

impl Body for Rewritten {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.finish(),
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(error) = this.push(data) {
                            this.ended = true;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))), // trailers
                },
            }
        }
    }
}

impl Drop for Rewritten {
    fn drop(&mut self) {
        if !self.ended
            && let Some(hook) = self.edits.on_abandon.take()
        {
            hook(self.edits.ids.unanswered()); // the client went away before the end
        }
    }
}
