//! Logs and traces: the `tracing` subscriber every process of the broker logs through (text or JSON
//! lines, filtered by `RUST_LOG`), and, when traces are on (`--traces otlp`, or
//! `OTEL_TRACES_EXPORTER=otlp`), OpenTelemetry traces bridged from `tracing`
//! (`tracing-opentelemetry`) and sent over OTLP/HTTP (protobuf) by the official exporter, configured
//! the standard way: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
//!
//! What is traced (docs/operations.md, "Traces"): the `request` span of each client request is the
//! server span; store operations and every request to the backend are its children (`otel`
//! target). W3C trace context is taken from the client (`traceparent`/`tracestate` headers, or the
//! same keys in `params._meta`) and handed to the backend in both places ([`propagation`]).
//! Export never waits: spans go through a bounded queue ([`processor`]) and are dropped, and
//! counted, when it is full.

mod processor;
pub mod propagation;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The `tracing` target of the spans that exist for traces only (store operations, backend
/// requests): never logged.
pub const TARGET: &str = "otel";
/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const SERVICE: &str = "session-broker";

static ON: AtomicBool = AtomicBool::new(false);

/// Are traces exported? (Propagation does nothing when they are not: the broker then forwards
/// the client's trace context untouched.)
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

pub use crate::config::cli::TracesExporter;

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Why traces cannot start.
#[derive(Debug, thiserror::Error)]
#[error("traces: {0}")]
pub struct TelemetryError(String);

/// Installs the process's subscriber: logs (JSON lines or text, coloured only at a terminal), and
/// traces when `traces` says so. Call once, within the runtime.
pub fn init(log_json: bool, traces: TracesExporter) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target(TARGET, tracing_subscriber::filter::LevelFilter::OFF);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = if log_json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_filter(logs)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_filter(logs)
            .with_filter(filter)
            .boxed()
    };
    let (otel, provider) = match traces {
        TracesExporter::None => (None, None),
        TracesExporter::Otlp => {
            let provider = provider()?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE))
                // Spans start when a child needs them or they end, so a request's trace context
                // can still come from its body (`params._meta`) once that is read.
                .with_context_activation(false)
                .with_tracked_inactivity(false)
                .with_filter(
                    Targets::new()
                        .with_target(TARGET, tracing::Level::INFO)
                        .with_target("proxy::edge::routes", tracing::Level::INFO),
                );
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            ON.store(true, Ordering::Relaxed);
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError(e.to_string()))?;
    Ok(Telemetry { provider })
}

fn provider() -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithHttpConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http_client()?)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let mut resource = Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(SERVICE);
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the SDK's default
    // config reads them; parent-based always-on otherwise).
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor::QueueProcessor::start(exporter, &resource))
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: hyper (the broker's own HTTP stack), `http://` or `https://` (the
/// system's roots, else Mozilla's), each export bounded by `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (ms, 10 s by default).
fn http_client() -> Result<opentelemetry_http::hyper::HyperClient<HttpsConnector>, TelemetryError> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    let connector = builder.https_or_http().enable_http1().build();
    let timeout = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .map_or(Duration::from_secs(10), Duration::from_millis);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

impl Telemetry {
    /// Sends the spans still queued, within `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        if let Some(provider) = self.provider {
            let stopped =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
            if let Ok(Err(error)) = stopped {
                tracing::warn!(%error, "traces: not every span was sent before exit");
            }
        }
    }
}
