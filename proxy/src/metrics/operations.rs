//! The metrics the OpenTelemetry MCP conventions name, beside the broker's own: the duration of
//! each MCP operation the broker serves (`mcp_server_operation_duration_seconds`, by
//! `mcp_method_name`, unprefixed as the conventions spell it), the finalization events moved to
//! the dead letters, and the spans the trace exporter had to drop. The last is process-wide (the
//! exporter starts before the registry exists), so every registry shares one family.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The MCP methods the `mcp_method_name` label names; any other is `other` (the label stays
/// bounded whatever a client sends).
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "roots/list",
    "sampling/createMessage",
    "elicitation/create",
    "server/discover",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// `method` as the `mcp_method_name` label: itself when it is an MCP method, else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OperationLabels {
    pub(super) mcp_method_name: &'static str,
}

/// Why the trace exporter lost spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansDropped {
    /// The export queue was full (the exporter is down or slow).
    QueueFull,
    /// An export failed (the spans it carried are lost).
    ExportFailed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    reason: &'static str,
}

static SPANS_DROPPED: LazyLock<Family<DroppedLabels, Counter>> = LazyLock::new(Family::default);

/// Counts `count` spans the exporter lost.
pub fn span_dropped(reason: SpansDropped, count: u64) {
    let reason = match reason {
        SpansDropped::QueueFull => "queue_full",
        SpansDropped::ExportFailed => "export_failed",
    };
    SPANS_DROPPED
        .get_or_create(&DroppedLabels { reason })
        .inc_by(count);
}

/// An MCP operation's duration: 100 µs to about 100 s.
fn operation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 20))
}

/// The families of this module, registered: `root` unprefixed, `prefixed` under the broker's prefix.
pub(super) fn register(root: &mut Registry) -> (super::Histograms<OperationLabels>, Counter) {
    let operations: super::Histograms<OperationLabels> =
        Family::new_with_constructor(operation_histogram as fn() -> Histogram);
    root.register_with_unit(
        "mcp_server_operation_duration",
        "Duration of each MCP operation the broker served (from the request to its response headers), by method (the OpenTelemetry MCP conventions' mcp.server.operation.duration)",
        Unit::Seconds,
        Family::clone(&operations),
    );
    let prefixed = root.sub_registry_with_prefix(super::PREFIX);
    let dead_letters = Counter::default();
    prefixed.register(
        "finalization_dead_letters",
        "Finalization events moved to the dead letters after their actions failed every attempt",
        dead_letters.clone(),
    );
    prefixed.register(
        "trace_spans_dropped",
        "Trace spans not exported, by reason (queue_full: the exporter could not keep up; export_failed: an export failed)",
        Family::clone(&SPANS_DROPPED),
    );
    (operations, dead_letters)
}
