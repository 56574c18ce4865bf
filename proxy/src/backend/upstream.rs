//! The backend side: a pooled keep-alive HTTP client with timeouts, and reading one JSON-RPC reply
//! (JSON or SSE) for the requests the broker sends on its own.

use std::time::Duration;
use tracing::Instrument;

use broker::sse;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::settings::Settings;

/// A failure talking to the backend. Says whether the request may have reached it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the MCP server is unreachable: {0}")]
    Unreachable(String),
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the MCP server answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("the MCP server's reply could not be read: {0}")]
    Malformed(String),
    #[error("the MCP server closed the reply before answering")]
    NoReply,
}

/// The client span of one request to the backend (traces on: [`crate::telemetry::propagation`]),
/// carried in the request's extensions from [`crate::backend::outbound::UpstreamRequest::build`]
/// to [`Upstream::send`], which ends it at the response headers.
#[derive(Clone)]
pub struct ClientSpan(pub tracing::Span);

/// The pooled client for one upstream.
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    scheme_authority: String,
    authority: HeaderValue,
    timeout: Duration,
    max_reply: usize,
}

impl Upstream {
    pub fn new(settings: &Settings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.upstream_idle_timeout)
            .pool_max_idle_per_host(128)
            .build(connector);
        let authority = settings
            .upstream
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        Self {
            client,
            scheme_authority: format!("http://{authority}"),
            authority: HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            timeout: settings.upstream_timeout,
            max_reply: 16 * 1024 * 1024,
        }
    }

    /// The value of `Host` the backend expects.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// The backend URI for a client's path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        format!("{}{path_and_query}", self.scheme_authority)
            .parse()
            .map_err(|e: http::uri::InvalidUri| UpstreamError::Malformed(e.to_string()))
    }

    /// Sends a request; the response headers must come within the upstream timeout (the body may
    /// then stream for as long as it likes).
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let span = request.extensions_mut().remove::<ClientSpan>();
        let sending = tokio::time::timeout(self.timeout, self.client.request(request));
        let sent = match &span {
            Some(ClientSpan(span)) => sending.instrument(span.clone()).await,
            None => sending.await,
        };
        let result = match sent {
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(error_chain(&e))),
            Ok(Ok(response)) => Ok(response),
        };
        if let Some(ClientSpan(span)) = span {
            match &result {
                Ok(response) => {
                    span.record(
                        "http.response.status_code",
                        i64::from(response.status().as_u16()),
                    );
                    if response.status().is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", error.to_string());
                }
            }
        }
        result
    }

    /// Reads the JSON-RPC reply with `id` from a response, whether JSON or SSE, within the timeout.
    pub async fn read_reply(
        &self,
        response: Response<Incoming>,
        id: &str,
    ) -> Result<Value, UpstreamError> {
        let status = response.status();
        let is_sse = content_type_is(response.headers(), "text/event-stream");
        let body = response.into_body();
        let work = async move {
            if !status.is_success() {
                let bytes = collect(body, 4096).await.unwrap_or_default();
                return Err(UpstreamError::Status {
                    status: status.as_u16(),
                    detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                });
            }
            if is_sse {
                read_sse_reply(body, id, self.max_reply).await
            } else {
                let bytes = collect(body, self.max_reply).await?;
                let value: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
                find_reply(value, id).ok_or(UpstreamError::NoReply)
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
    }
}

/// Does the `Content-Type` start with `kind`?
pub fn content_type_is(headers: &HeaderMap, kind: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with(kind))
}

async fn collect(body: Incoming, limit: usize) -> Result<Bytes, UpstreamError> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| UpstreamError::Malformed(e.to_string()))
}

async fn read_sse_reply(
    mut body: Incoming,
    id: &str,
    limit: usize,
) -> Result<Value, UpstreamError> {
    let mut parser = sse::Parser::new(limit);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let blocks = parser
            .push(&data)
            .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        if let Some(reply) = reply_in(blocks, id) {
            return Ok(reply);
        }
    }
    reply_in(parser.end(), id).ok_or(UpstreamError::NoReply)
}

/// The reply with `id` among the events of some SSE blocks.
fn reply_in(blocks: Vec<sse::Block>, id: &str) -> Option<Value> {
    blocks
        .into_iter()
        .filter_map(|b| b.event)
        .filter_map(|event| serde_json::from_str::<Value>(&event.data).ok())
        .find_map(|value| find_reply(value, id))
}

/// The reply with `id` in a message or batch.
fn find_reply(value: Value, id: &str) -> Option<Value> {
    match value {
        Value::Array(items) => items.into_iter().find_map(|v| find_reply(v, id)),
        Value::Object(ref map) if map.get("id").and_then(Value::as_str) == Some(id) => Some(value),
        _ => None,
    }
}

/// An error with its sources, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
