//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format
//! (`prometheus-client`, the official Rust client of the Prometheus project).
//!
//! [`Metrics`] holds the registry and every family; it is cheap to clone (all shared), so the
//! relay's tasks carry a copy. Request-level accounting (the MCP method label and the time spent
//! waiting on the backend) lives in a task-local [`RequestScope`] that [`in_request`] opens around
//! one request: the code deep down (forward, backend) adds to it without threading a parameter.
//! Outside a scope (unit tests calling `call::plan`) the scope functions do nothing.
//!
//! The catalogue, with labels and meanings, is in `docs/operations.md`.

mod labels;
mod operations;
mod scope;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::resolve::Path;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use labels::{
    KindLabels, PathLabels, ReasonLabels, RequestLabels, ResultLabels, SelectionLabels,
    StoreLabels, UpstreamLabels,
};
pub use labels::{Own, Refusal, Reinit, Rpc, StoreOp};
pub use operations::{SpansDropped, method_label, span_dropped};
pub use scope::{
    RequestScope, add_upstream_time, current_mcp_method, current_method, in_request,
    set_mcp_method, set_method, upstream_body, upstream_time,
};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Every metric name starts with this (plus `_`).
pub const PREFIX: &str = "session_broker";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Backend round trips: 1 ms to about 65 s.
fn upstream_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The broker's own work and store round trips: 50 µs to about 0.8 s.
fn fast_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

/// The registry and every metric family of one broker process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    upstream_latency: Histograms<UpstreamLabels>,
    broker_overhead: Histogram,
    selections: Family<SelectionLabels, Counter>,
    resumes: Family<PathLabels, Counter>,
    refusals: Family<KindLabels, Counter>,
    replays: Family<ResultLabels, Counter>,
    reinitializations: Family<ReasonLabels, Counter>,
    store_errors: Family<StoreLabels, Counter>,
    store_latency: Histograms<StoreLabels>,
    work_sessions_finalized: Counter,
    work_sessions_live: Gauge,
    runtime_tasks: Gauge,
    operations: Histograms<operations::OperationLabels>,
    dead_letters: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Metrics {
    /// A registry with every family registered (and no samples yet).
    pub fn new() -> Self {
        let mut root = Registry::default();
        let (operations, dead_letters) = operations::register(&mut root);
        let registry = root.sub_registry_with_prefix(PREFIX);
        let requests = Family::default();
        let upstream_latency =
            Family::new_with_constructor(upstream_histogram as fn() -> Histogram);
        let broker_overhead = fast_histogram();
        let selections = Family::default();
        let resumes = Family::default();
        let refusals = Family::default();
        let replays = Family::default();
        let reinitializations = Family::default();
        let store_errors = Family::default();
        let store_latency = Family::new_with_constructor(fast_histogram as fn() -> Histogram);
        let work_sessions_finalized = Counter::default();
        let work_sessions_live = Gauge::default();
        let runtime_tasks = Gauge::default();
        let r = registry;
        r.register(
            "requests",
            "Requests on the MCP path and passed-through paths, by method label and HTTP status",
            Family::clone(&requests),
        );
        r.register_with_unit(
            "upstream_latency",
            "Time from sending a request to the backend until its response headers, by request",
            Unit::Seconds,
            Family::clone(&upstream_latency),
        );
        r.register_with_unit(
            "broker_overhead",
            "tools/call handling time until the response headers, minus the time spent waiting on the backend",
            Unit::Seconds,
            broker_overhead.clone(),
        );
        r.register(
            "selections",
            "Successful select calls, by whether they created a work session or continued one",
            Family::clone(&selections),
        );
        r.register(
            "resumes",
            "Calls that resumed a live work session, by resolution path",
            Family::clone(&resumes),
        );
        r.register(
            "refusals",
            "tools/call answered with a tool error by the broker, by kind",
            Family::clone(&refusals),
        );
        r.register(
            "replays",
            "Selections replayed onto a backend session, by result",
            Family::clone(&replays),
        );
        r.register(
            "backend_reinitializations",
            "Backend sessions the broker opened on its own, by reason",
            Family::clone(&reinitializations),
        );
        r.register(
            "store_errors",
            "Failed store operations, by operation",
            Family::clone(&store_errors),
        );
        r.register_with_unit(
            "store_latency",
            "Store operation latency, by operation",
            Unit::Seconds,
            Family::clone(&store_latency),
        );
        r.register(
            "work_sessions_finalized",
            "Work sessions finalized after idling out",
            work_sessions_finalized.clone(),
        );
        r.register(
            "work_sessions_live",
            "Work sessions live in the store",
            work_sessions_live.clone(),
        );
        r.register(
            "runtime_tasks_alive",
            "Tokio tasks alive in this process (read at scrape time): a leak shows as growth",
            runtime_tasks.clone(),
        );
        Self {
            registry: Arc::new(root),
            operations,
            dead_letters,
            requests,
            upstream_latency,
            broker_overhead,
            selections,
            resumes,
            refusals,
            replays,
            reinitializations,
            store_errors,
            store_latency,
            work_sessions_finalized,
            work_sessions_live,
            runtime_tasks,
        }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`), served with [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }

    /// One request answered with `status`.
    pub fn request(&self, method: Rpc, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.as_str(),
                status,
            })
            .inc();
    }

    /// One MCP operation served (the method label of [`method_label`]), in `elapsed`.
    pub fn operation(&self, mcp_method_name: &'static str, elapsed: Duration) {
        self.operations
            .get_or_create(&operations::OperationLabels { mcp_method_name })
            .observe(elapsed.as_secs_f64());
    }

    /// A finalization event went to the dead letters.
    pub fn dead_letter(&self) {
        self.dead_letters.inc();
    }

    /// The broker's own time on a `tools/call`: `total` (until the response headers) minus `upstream`.
    pub fn broker_overhead(&self, total: Duration, upstream: Duration) {
        self.broker_overhead
            .observe(total.saturating_sub(upstream).as_secs_f64());
    }

    /// Times one request to the backend until its response headers, labelled with the current
    /// request's method. The time also counts as upstream time of the request.
    pub async fn upstream<F: Future>(&self, send: F) -> F::Output {
        let label = current_method().unwrap_or(Rpc::Other).as_str();
        self.timed_upstream(label, send).await
    }

    /// Times one of the broker's own requests to the backend until its response headers.
    pub async fn own_upstream<F: Future>(&self, own: Own, send: F) -> F::Output {
        self.timed_upstream(own.as_str(), send).await
    }

    async fn timed_upstream<F: Future>(&self, label: &'static str, send: F) -> F::Output {
        let started = Instant::now();
        let output = send.await;
        let elapsed = started.elapsed();
        self.upstream_latency
            .get_or_create(&UpstreamLabels { request: label })
            .observe(elapsed.as_secs_f64());
        add_upstream_time(elapsed);
        output
    }

    /// A select succeeded: `created` when it started a new work session, else it continued the
    /// resolved one.
    pub fn selection(&self, created: bool) {
        let work_session = if created { "created" } else { "continued" };
        self.selections
            .get_or_create(&SelectionLabels { work_session })
            .inc();
    }

    /// A call resumed a live work session found by `path`.
    pub fn resume(&self, path: Path) {
        self.resumes
            .get_or_create(&PathLabels {
                path: path.as_str(),
            })
            .inc();
    }

    /// A `tools/call` was refused with a tool error.
    pub fn refusal(&self, kind: &Refusal) {
        self.refusals
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    /// A replay of the selection onto a backend session ended.
    pub fn replay(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.replays.get_or_create(&ResultLabels { result }).inc();
    }

    /// The broker opens a backend session on its own.
    pub fn reinitialization(&self, reason: Reinit) {
        self.reinitializations
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Runs one store operation, timing it and counting its failure.
    pub async fn store<T, E>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let labels = StoreLabels {
            operation: op.as_str(),
        };
        let started = Instant::now();
        // A child span of the request's for traces (target `otel`: never logged; no cost when
        // traces are off).
        let span = tracing::info_span!(
            target: "otel",
            "store",
            otel.name = %format_args!("session_store {}", op.as_str()),
            otel.kind = "client",
            db.operation.name = op.as_str(),
        );
        let result = tracing::Instrument::instrument(call, span).await;
        self.store_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.store_errors.get_or_create(&labels).inc();
        }
        result
    }

    /// This replica's sweeper finalized `count` work sessions (summed over replicas: each exactly once).
    pub fn work_sessions_finalized(&self, count: u64) {
        self.work_sessions_finalized.inc_by(count);
    }

    /// Sets the number of live work sessions (in Redis mode: across all replicas).
    pub fn set_work_sessions_live(&self, live: i64) {
        self.work_sessions_live.set(live);
    }

    /// The live work sessions gauge, to increment or decrement it.
    pub fn work_sessions_live(&self) -> &Gauge {
        &self.work_sessions_live
    }
}
