//! Finalizing idle work sessions. Every replica runs two tasks:
//! - the **sweeper** asks the store, every `--sweep-interval`, to finalize what is past its idle
//!   deadline (the store makes each work session's finalization exactly-once across replicas);
//! - the **deliverer** takes finalized events and runs the configured actions (webhook, backend tool),
//!   acknowledging an event only when every action succeeded. An event a replica took and never
//!   acknowledged (it died) is handed to another after `--redeliver-after`: at least once.

use std::sync::Arc;
use std::time::Duration;

use broker::finalize::{Delivery, Finalized, webhook_payload};
use broker::mcp;
use broker::session::WorkSession;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::backend::{self, BackendError};
use crate::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::upstream::error_chain;

/// How many work sessions one claim may finalize.
const CLAIM_BATCH: usize = 100;
/// Attempts of one webhook delivery before the event is left for redelivery.
const WEBHOOK_ATTEMPTS: u32 = 6;

/// Why an action failed (the event stays unacknowledged and is delivered again).
#[derive(Debug, thiserror::Error)]
enum ActionError {
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("tool {tool}: {detail}")]
    Tool { tool: String, detail: String },
}

/// Starts the sweeper and the deliverer; both stop when `stop` turns true.
pub fn spawn(app: Arc<App>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let consumer = format!(
        "{}-{}",
        std::process::id(),
        &broker::ids::random_hex128()[..8]
    );
    let webhook = Webhook::new();
    vec![
        tokio::spawn(sweep(app.clone(), stop.clone())),
        tokio::spawn(deliver(app, consumer, webhook, stop)),
    ]
}

/// Logs a task's store failures once per outage: a WARN when the first one happens, an INFO when
/// the store answers again; the failures in between only at DEBUG (one per second would bury the
/// first, and look like a new outage each time).
struct Outage {
    task: &'static str,
    since: Option<std::time::Instant>,
}

impl Outage {
    fn new(task: &'static str) -> Self {
        Self { task, since: None }
    }

    fn failed(&mut self, error: &broker::store::StoreError) {
        match self.since {
            None => {
                self.since = Some(std::time::Instant::now());
                tracing::warn!(task = self.task, %error, "the session store failed; retrying (logged again when it recovers)");
            }
            Some(_) => tracing::debug!(task = self.task, %error, "the session store failed again"),
        }
    }

    fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(task = self.task, outage = ?since.elapsed(), "the session store answers again");
        }
    }
}

async fn sweep(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = Outage::new("sweeper");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        loop {
            match app.store.claim_expired(CLAIM_BATCH).await {
                Ok(claimed) => {
                    outage.succeeded();
                    app.metrics
                        .work_sessions_finalized(u64::try_from(claimed).unwrap_or(0));
                    if claimed == CLAIM_BATCH {
                        continue;
                    }
                    if claimed > 0 {
                        tracing::info!(claimed, "finalized idle work sessions");
                    }
                    break;
                }
                Err(error) => {
                    outage.failed(&error);
                    break;
                }
            }
        }
        if let Ok(live) = app.store.live_work_sessions().await {
            app.metrics
                .set_work_sessions_live(i64::try_from(live).unwrap_or(i64::MAX));
        }
    }
}

async fn deliver(
    app: Arc<App>,
    consumer: String,
    webhook: Webhook,
    mut stop: watch::Receiver<bool>,
) {
    let wait = Duration::from_millis(500);
    let mut outage = Outage::new("deliverer");
    loop {
        if *stop.borrow() {
            return;
        }
        let batch = tokio::select! {
            batch = app.store.next_finalized(&consumer, 16, wait, app.settings.redeliver_after) => batch,
            _ = stop.changed() => return,
        };
        let deliveries = match batch {
            Ok(deliveries) => {
                outage.succeeded();
                deliveries
            }
            Err(error) => {
                outage.failed(&error);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        for delivery in deliveries {
            handle(&app, &webhook, delivery).await;
        }
    }
}

async fn handle(app: &App, webhook: &Webhook, delivery: Delivery) {
    let event = &delivery.event;
    match run_actions(app, webhook, event).await {
        Ok(()) => {
            if let Err(error) = app.store.ack_finalized(&delivery.id).await {
                tracing::warn!(%error, "could not acknowledge a finalized work session; it will be delivered again");
            }
            tracing::info!(
                work_session = %event.work_session,
                principal = %event.principal,
                surface = %event.surface,
                project = %event.project,
                calls = event.calls,
                redelivery = delivery.redeliveries,
                "work session finalized"
            );
        }
        Err(error) => tracing::warn!(
            work_session = %event.work_session,
            %error,
            "finalization action failed; the event will be delivered again"
        ),
    }
}

async fn run_actions(app: &App, webhook: &Webhook, event: &Finalized) -> Result<(), ActionError> {
    if let Some(url) = &app.settings.on_expire_webhook {
        webhook.deliver(url, event).await?;
    }
    if let Some(tool) = &app.settings.on_expire_tool {
        call_tool(app, tool, event)
            .await
            .map_err(|detail| ActionError::Tool {
                tool: tool.clone(),
                detail,
            })?;
    }
    Ok(())
}

/// The webhook client: plain HTTP, pooled, each attempt bounded.
struct Webhook {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Webhook {
    fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// POSTs the event, retrying with exponential backoff; any 2xx is success.
    async fn deliver(&self, url: &Uri, event: &Finalized) -> Result<(), ActionError> {
        let body = Bytes::from(serde_json::to_vec(&webhook_payload(event)).unwrap_or_default());
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            match self.attempt(url, event, body.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(attempt, %error, "webhook attempt failed");
                    last = error;
                }
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        Err(ActionError::Webhook(last))
    }

    async fn attempt(&self, url: &Uri, event: &Finalized, body: Bytes) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", event.work_session.as_str())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// Calls `tool` for the finalized work session: a fresh backend session, the project selected on it,
/// then the tool, with the trusted headers of that work session.
async fn call_tool(app: &App, tool: &str, event: &Finalized) -> Result<(), String> {
    let work = WorkSession {
        id: event.work_session.clone(),
        principal: event.principal.clone(),
        surface: event.surface.clone(),
        conversation: None,
        project: event.project.clone(),
        created_ms: event.started_ms,
        last_active_ms: event.last_active_ms,
        calls: event.calls,
        backends: Default::default(),
    };
    let ini = json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "session-broker", "version": env!("CARGO_PKG_VERSION")},
    });
    let detail = |e: BackendError| e.to_string();
    let opened = backend::open(app, HeaderMap::new(), &ini)
        .await
        .map_err(detail)?;
    let version = opened.protocol_version.as_deref();
    backend::replay(app, HeaderMap::new(), &opened.session, version, &work)
        .await
        .map_err(detail)?;
    let id = format!(
        "session-broker-expire-{}",
        &broker::ids::random_hex128()[..12]
    );
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(opened.session.as_str()) {
        headers.insert(MCP_SESSION_ID, value);
    }
    if let Some(value) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(MCP_PROTOCOL_VERSION, value);
    }
    backend::set_trusted(app, &mut headers, Some(&work), Some("finalizer"));
    let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    let response = app
        .upstream
        .post_json(app.settings.mcp_path(), headers, &request)
        .await
        .map_err(|e| e.to_string())?;
    let reply = app
        .upstream
        .read_reply(response, &id)
        .await
        .map_err(|e| e.to_string())?;
    if mcp::call_succeeded(&reply) {
        Ok(())
    } else {
        Err(mcp::reply_text(&reply))
    }
}
