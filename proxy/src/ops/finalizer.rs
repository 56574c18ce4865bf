//! Finalizing idle work sessions. Every replica runs two tasks:
//! - the **sweeper** asks the store, every `--sweep-interval`, to finalize what is past its idle
//!   deadline, however long ago (the store makes each work session's finalization exactly-once
//!   across replicas);
//! - the **deliverer** takes finalized events and runs the configured actions ([`webhook`],
//!   [`tool`]), each event in its own task (a failing or slow one never holds up the others),
//!   acknowledging an event only when every action succeeded. An event whose actions failed, or
//!   whose taker died, is delivered again after a backoff that doubles from `--redeliver-after`;
//!   after `--finalize-attempts` deliveries it goes to the dead letters, which an operator lists
//!   and replays (`session-broker sessions dead-letters|replay`).

mod tool;
mod webhook;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::finalize::{Delivery, Finalized, Redelivery};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::edge::App;

/// How many work sessions one claim may finalize.
const CLAIM_BATCH: usize = 100;
/// How many events one replica acts on at once.
const CONCURRENT_DELIVERIES: usize = 8;

/// Why an action failed (the event stays unacknowledged and is delivered again, or dead-lettered).
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
    vec![
        tokio::spawn(sweep(app.clone(), stop.clone())),
        tokio::spawn(deliver(app, consumer, stop)),
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
                        .work_sessions_finalized(u64::try_from(claimed.finalized).unwrap_or(0));
                    if claimed.dropped > 0 {
                        tracing::error!(
                            dropped = claimed.dropped,
                            "work sessions waited for a sweeper longer than the safety TTL: their data \
                             expired and they were dropped without an event"
                        );
                    }
                    if claimed.finalized > 0 {
                        tracing::info!(claimed = claimed.finalized, "finalized idle work sessions");
                    }
                    if claimed.finalized < CLAIM_BATCH {
                        break;
                    }
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

/// The redelivery policy from the settings.
fn policy(app: &App) -> Redelivery {
    Redelivery {
        after: app.settings.redeliver_after,
        attempts: app.settings.finalize_attempts.max(1),
    }
}

async fn deliver(app: Arc<App>, consumer: String, mut stop: watch::Receiver<bool>) {
    // Poll often enough to honour short backoffs, rarely enough to stay cheap (each poll reads
    // every bucket's stream: docs/design.md, "Finalization").
    let poll = (app.settings.redeliver_after / 2)
        .clamp(Duration::from_millis(50), Duration::from_millis(500));
    let policy = policy(&app);
    let webhook = Arc::new(webhook::Webhook::new());
    let running = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut outage = Outage::new("deliverer");
    loop {
        if *stop.borrow() {
            return;
        }
        let free = running.available_permits();
        let batch = if free == 0 {
            Ok(Vec::new())
        } else {
            app.store.next_finalized(&consumer, free, &policy).await
        };
        let deliveries = match batch {
            Ok(deliveries) => {
                outage.succeeded();
                deliveries
            }
            Err(error) => {
                outage.failed(&error);
                Vec::new()
            }
        };
        let idle = deliveries.is_empty();
        for delivery in deliveries {
            let fresh = in_flight
                .lock()
                .map(|mut set| set.insert(delivery.id.clone()))
                .unwrap_or(false);
            if !fresh {
                continue; // this replica is still acting on it (a slow action)
            }
            let Ok(permit) = running.clone().acquire_owned().await else {
                return;
            };
            let (app, webhook, in_flight) = (app.clone(), webhook.clone(), in_flight.clone());
            tokio::spawn(async move {
                let id = delivery.id.clone();
                handle(&app, &webhook, &policy, delivery).await;
                if let Ok(mut set) = in_flight.lock() {
                    set.remove(&id);
                }
                drop(permit);
            });
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

async fn handle(app: &App, webhook: &webhook::Webhook, policy: &Redelivery, delivery: Delivery) {
    let event = &delivery.event;
    let attempt = delivery.redeliveries + 1;
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
        Err(error) if attempt >= u64::from(policy.attempts) => {
            let reason = error.to_string();
            match app.store.dead_letter(&delivery, &reason).await {
                Ok(()) => {
                    app.metrics.dead_letter();
                    tracing::error!(
                        work_session = %event.work_session,
                        event = %delivery.id,
                        attempt,
                        %error,
                        "finalization actions failed every attempt; the event is a dead letter now \
                         (session-broker sessions dead-letters)"
                    );
                }
                Err(store) => {
                    tracing::warn!(%store, %error, "could not dead-letter a failed event; it will be delivered again")
                }
            }
        }
        Err(error) => tracing::warn!(
            work_session = %event.work_session,
            attempt,
            next_in = ?policy.backoff(attempt),
            %error,
            "finalization action failed; the event will be delivered again"
        ),
    }
}

async fn run_actions(
    app: &App,
    webhook: &webhook::Webhook,
    event: &Finalized,
) -> Result<(), ActionError> {
    if let Some(url) = &app.settings.on_expire_webhook {
        webhook.deliver(url, event).await?;
    }
    if let Some(tool) = &app.settings.on_expire_tool {
        tool::call(app, tool, event)
            .await
            .map_err(|detail| ActionError::Tool {
                tool: tool.clone(),
                detail,
            })?;
    }
    Ok(())
}
