//! The outbound request: how a request on its way to the backend is rewritten for the era the
//! backend speaks.

use broker::modern;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};

use crate::backend::headers::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

/// A legacy client's request on its way to a backend that speaks only 2026-07-28: the body gains
/// the `_meta` envelope, the headers the version, method and name. `None`: nothing to change.
pub fn modernize_request(
    body: &Bytes,
    ini: &serde_json::Value,
    headers: &mut HeaderMap,
) -> Option<Bytes> {
    let mut message: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (method, name) = modern::modernize(&mut message, ini)?;
    headers.insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2026-07-28"));
    if let Ok(value) = HeaderValue::from_str(&method) {
        headers.insert(MCP_METHOD, value);
    }
    if let Some(value) = name.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert(MCP_NAME, value);
    }
    headers.remove(MCP_SESSION_ID);
    serde_json::to_vec(&message).ok().map(Bytes::from)
}
