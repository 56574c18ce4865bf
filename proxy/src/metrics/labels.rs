//! The label values of the metrics: typed enums for the code, `&'static str` for the encoder.

use prometheus_client::encoding::EncodeLabelSet;

/// What a request was, for the `method` label: the MCP method of a POST, or the HTTP method of a
/// stream request; `passthrough` for paths other than the MCP path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    Initialize,
    ToolsCall,
    ToolsList,
    /// Any `notifications/*` (and anything else the client sends without an id).
    Notification,
    /// Batches, other requests, client responses, and POSTs refused before their body was read.
    Other,
    Get,
    Delete,
    Passthrough,
}

impl Rpc {
    /// The label of one parsed message.
    pub fn of(kind: &broker::jsonrpc::Kind) -> Self {
        use broker::jsonrpc::Kind;
        match kind {
            Kind::Initialize => Rpc::Initialize,
            Kind::ToolsCall(_) => Rpc::ToolsCall,
            Kind::ToolsList => Rpc::ToolsList,
            Kind::Notification(_) => Rpc::Notification,
            Kind::Discover | Kind::OtherRequest(_) | Kind::Response => Rpc::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Initialize => "initialize",
            Rpc::ToolsCall => "tools/call",
            Rpc::ToolsList => "tools/list",
            Rpc::Notification => "notification",
            Rpc::Other => "other",
            Rpc::Get => "GET",
            Rpc::Delete => "DELETE",
            Rpc::Passthrough => "passthrough",
        }
    }
}

/// Why a `tools/call` was answered by the broker instead of the backend (labelled by
/// [`Refusal::label`]).
pub use broker::decide::Refusal;

/// Why the broker opened a backend session on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reinit {
    /// The backend answered 404 for its session (restart, expiry).
    NotFound,
    /// The client's session id names a backend session of another upstream instance.
    OtherInstance,
    /// A work session needed its own backend session for its project on this upstream.
    WorkSession,
    /// A client whose `initialize` was answered from the cache needed its own backend session.
    Lazy,
}

impl Reinit {
    pub fn as_str(self) -> &'static str {
        match self {
            Reinit::NotFound => "not_found",
            Reinit::OtherInstance => "other_instance",
            Reinit::WorkSession => "work_session",
            Reinit::Lazy => "lazy",
        }
    }
}

/// One store operation, for the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Lookup,
    McpState,
    Touch,
    Bind,
    SetWorkBackend,
    SetBackendSession,
    EndMcpSession,
    Ping,
}

impl StoreOp {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Lookup => "lookup",
            StoreOp::McpState => "mcp_state",
            StoreOp::Touch => "touch",
            StoreOp::Bind => "bind",
            StoreOp::SetWorkBackend => "set_work_backend",
            StoreOp::SetBackendSession => "set_backend_session",
            StoreOp::EndMcpSession => "end_mcp_session",
            StoreOp::Ping => "ping",
        }
    }
}

/// The broker's own requests to the backend, for the upstream latency `request` label (client
/// requests use their [`Rpc`] label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// `initialize` and `notifications/initialized` of a backend session the broker opens.
    Open,
    /// The select call replayed onto a backend session.
    Replay,
}

impl Own {
    pub fn as_str(self) -> &'static str {
        match self {
            Own::Open => "open",
            Own::Replay => "replay",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) method: &'static str,
    pub(super) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamLabels {
    pub(super) request: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SelectionLabels {
    pub(super) work_session: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PathLabels {
    pub(super) path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub(super) kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StoreLabels {
    pub(super) operation: &'static str,
}
