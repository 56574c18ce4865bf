//! The select hook: when a watched select's reply says the backend ran it, the planned work session
//! is bound (with the backend session that selected) and the model is handed its handle. What is
//! bound and what the client reads is decided by [`broker::decide::select`]; this executes it.
//!
//! Shared state: the bind is the store's (`Store::bind` keeps what calls recorded meanwhile, and
//! the per-principal cap is checked in the same atomic step), so two selects settling at once each
//! bind their own plan; the one over the cap is refused and told so.

use std::sync::Arc;

use broker::decide::select::{self, Settlement};
use broker::jsonrpc::RequestId;
use broker::session::{Links, WorkSession};
use broker::store::{BackendRef, Store};
use serde_json::Value;

use crate::mcp::relay::{BoxFuture, ReplyHook};
use crate::metrics::{Metrics, Refusal, StoreOp};

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

impl ReplyHook for SelectWatch {
    fn id(&self) -> &RequestId {
        &self.id
    }

    fn ran_on(&mut self, backend: BackendRef) {
        self.backend = Some(backend);
    }

    fn on_reply<'a>(self: Box<Self>, reply: &'a mut Value) -> BoxFuture<'a, bool> {
        Box::pin(self.settle(reply))
    }
}

impl SelectWatch {
    /// The select reply arrived: bind on success (with the backend session that selected, which
    /// from now on serves this work session's project) and hand the model its handle.
    async fn settle(self, reply: &mut Value) -> bool {
        if !select::succeeded(reply) {
            tracing::info!(project = %self.plan.project, "select call failed at the backend: nothing bound");
            return false;
        }
        let plan = select::to_bind(&self.plan, self.backend.as_ref());
        let bind = self
            .metrics
            .store(StoreOp::Bind, self.store.bind(&plan, &self.links))
            .await;
        match select::after_bind(bind.as_ref().map(|_| ()), &plan, &self.handle) {
            Settlement::Bound { append } => {
                self.metrics.selection(self.created);
                tracing::info!(work_session = %plan.id, project = %plan.project, surface = %plan.surface, "bound");
                broker::mcp::append_text(reply, &append)
            }
            Settlement::TooMany { cap, text } => {
                tracing::warn!(principal = %plan.principal, cap, "work-session cap reached at bind");
                self.metrics.refusal(&Refusal::TooMany { cap });
                *reply = broker::jsonrpc::tool_error_reply(&self.id, &text);
                true
            }
            Settlement::NotRecorded { text } => {
                if let Err(error) = &bind {
                    tracing::error!(%error, "the backend selected a project but the broker could not record it");
                }
                *reply = broker::jsonrpc::tool_error_reply(&self.id, &text);
                true
            }
        }
    }
}
