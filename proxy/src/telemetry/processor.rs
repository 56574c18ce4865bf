//! The span processor between the tracing bridge and the OTLP exporter: a bounded queue that never
//! blocks or slows the code that ends a span. A span that finds the queue full is dropped and
//! counted (`session_broker_trace_spans_dropped_total{reason="queue_full"}`); one task sends
//! batches to the exporter (the official OTLP one) and counts what an export loses
//! (`reason="export_failed"`). An exporter that is down costs the reply path nothing.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

use crate::metrics::{self, SpansDropped};

/// Spans waiting for export, at most.
pub const QUEUE: usize = 2048;
/// Spans in one export, at most.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill before it is sent anyway.
const DELAY: Duration = Duration::from_secs(1);

/// See the module doc.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    /// Told to send what is queued and stop; answers when done.
    stop: Mutex<Option<mpsc::Sender<std::sync::mpsc::Sender<()>>>>,
}

impl QueueProcessor {
    /// Starts the export task on the current runtime; every span goes out with `resource` (the
    /// service's name and attributes).
    pub fn start<E: SpanExporter + 'static>(mut exporter: E, resource: &Resource) -> Self {
        exporter.set_resource(resource);
        let (queue, spans) = mpsc::channel(QUEUE);
        let (stop, stopping) = mpsc::channel(1);
        tokio::spawn(export(exporter, spans, stopping));
        Self {
            queue,
            stop: Mutex::new(Some(stop)),
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            metrics::span_dropped(SpansDropped::QueueFull, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Sends what is queued (within `timeout`) and stops. Blocks: call it off the runtime's
    /// workers (`spawn_blocking`).
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let stop = self
            .stop
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("poisoned".into()))?
            .take();
        let Some(stop) = stop else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let (done, finished) = std::sync::mpsc::channel();
        stop.try_send(done)
            .map_err(|_| OTelSdkError::InternalFailure("the export task is gone".into()))?;
        finished
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

async fn export<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut stopping: mpsc::Receiver<std::sync::mpsc::Sender<()>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stop = tokio::select! {
            received = spans.recv_many(&mut batch, BATCH) => received == 0,
            done = stopping.recv() => {
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                }
                send(&exporter, &mut batch).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        };
        if stop {
            return;
        }
        // Let the batch fill a little, unless it is full already.
        if batch.len() < BATCH {
            let deadline = tokio::time::sleep(DELAY);
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                tokio::select! {
                    received = spans.recv_many(&mut batch, room) => {
                        if received == 0 { break; }
                    }
                    () = &mut deadline => break,
                }
            }
        }
        send(&exporter, &mut batch).await;
    }
}

async fn send<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let count = spans.len() as u64;
    if let Err(error) = exporter.export(spans).await {
        metrics::span_dropped(SpansDropped::ExportFailed, count);
        tracing::debug!(%error, spans = count, "trace export failed");
    }
}
