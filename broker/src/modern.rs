//! Protocol revision 2026-07-28 ("modern"): no `initialize`, no session; every request carries its
//! protocol version, client capabilities and client info in `params._meta`, and mirrors its method
//! (and, for `tools/call`, `resources/read` and `prompts/get`, its name) in `Mcp-Method` /
//! `Mcp-Name` headers, so that gateways can route without reading the body. The broker routes on the
//! body, so a request whose headers say something else is refused, exactly as the spec's server
//! ladder does (a header/body mismatch is a confused-deputy vector). Pure: the proxy hands in the
//! message and header values.
//!
//! Which era a POST is served in is [`era`] (`modern/era.rs`).
//!
//! Also here: what the broker writes for modern clients (`resultType`, `server/discover`), what it
//! sends a legacy backend on a modern client's behalf (an `initialize` built from `_meta`), and
//! whether to bridge at all ([`bridges`]).

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::jsonrpc::{Message, RequestId};

mod era;
pub use era::{Era, era};

/// The modern revisions the broker speaks.
pub const SUPPORTED: &[&str] = &["2026-07-28"];
/// The handshake (legacy) revisions, oldest first.
pub const HANDSHAKE: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// `_meta` key of the request's protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client's capabilities.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the client's name and version.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the server's name and version in a `server/discover` result.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The headers do not match the body (or a required one is missing or doubled).
pub const HEADER_MISMATCH: i64 = -32020;
/// The request's protocol version is not served; `data.supported` lists what is.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Invalid params (here: the `_meta` envelope).
pub const INVALID_PARAMS: i64 = -32602;
/// The `x-mcp-header` token of the `work_session` argument: clients mirror it into
/// `Mcp-Param-Work-Session`.
pub const WORK_SESSION_HEADER_TOKEN: &str = "Work-Session";

/// Is a request of this declared version (from `_meta` or the `MCP-Protocol-Version` header) modern?
pub fn is_modern(declared: Option<&str>) -> bool {
    declared.is_some_and(|v| v >= SUPPORTED[0])
}

/// The routing headers of one request, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingHeaders<'a> {
    pub protocol_version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
    /// One of the three was sent twice (first-copy and last-copy readers would disagree).
    pub duplicated: bool,
}

/// A modern request refused before anything is routed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl Rejection {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Every rejection here is a 400.
    pub fn http_status(&self) -> u16 {
        400
    }

    /// The JSON-RPC error reply.
    pub fn reply(&self, id: Option<&RequestId>) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        json!({
            "jsonrpc": "2.0",
            "id": id.map(RequestId::to_value).unwrap_or(Value::Null),
            "error": error,
        })
    }
}

/// The body field whose value `Mcp-Name` mirrors, for the methods that have one.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Checks a modern request, in the spec's order: the `_meta` envelope, then the headers against the
/// body, then the version.
pub fn check(message: &Message, headers: &RoutingHeaders<'_>) -> Result<(), Rejection> {
    if headers.duplicated {
        return Err(Rejection::new(
            HEADER_MISMATCH,
            "a routing header (MCP-Protocol-Version, Mcp-Method, Mcp-Name) was sent twice",
        ));
    }
    let meta = message
        .params()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let Some(meta) = meta else {
        return Err(Rejection::new(
            INVALID_PARAMS,
            format!(
                "params._meta must be an object carrying {META_PROTOCOL_VERSION} and {META_CLIENT_CAPABILITIES}"
            ),
        ));
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::new(
            INVALID_PARAMS,
            format!(
                "params._meta is missing the required key(s): {}",
                missing.join(", ")
            ),
        ));
    }
    let version = meta.get(META_PROTOCOL_VERSION).and_then(Value::as_str);
    if headers.protocol_version.is_none() || headers.protocol_version != version {
        return Err(Rejection::new(
            HEADER_MISMATCH,
            "the MCP-Protocol-Version header does not match params._meta's protocol version",
        ));
    }
    let method = message.value.get("method").and_then(Value::as_str);
    if headers.method != method {
        return Err(Rejection::new(
            HEADER_MISMATCH,
            "the Mcp-Method header does not match the request's method",
        ));
    }
    if let Some(field) = method.and_then(name_field)
        && let Some(body) = message.params().and_then(|p| p.get(field))
    {
        let header = headers.name.and_then(decode_header_value);
        if header.as_deref() != body.as_str() {
            return Err(Rejection::new(
                HEADER_MISMATCH,
                format!("the Mcp-Name header does not match params.{field}"),
            ));
        }
    }
    let Some(version) = version else {
        return Err(Rejection::new(
            INVALID_PARAMS,
            "the protocol version must be a string",
        ));
    };
    if !SUPPORTED.contains(&version) {
        return Err(Rejection {
            code: UNSUPPORTED_PROTOCOL_VERSION,
            message: "Unsupported protocol version".into(),
            data: Some(json!({"supported": SUPPORTED, "requested": version})),
        });
    }
    Ok(())
}

/// A header value as the client meant it: verbatim, or the `=?base64?...?=` form decoded (`None` when
/// that form is malformed, so a corrupt header never matches a body value by accident).
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_owned());
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(payload).ok()?;
    if engine.encode(&bytes) != payload {
        return None; // not canonical: not what a client would have sent
    }
    String::from_utf8(bytes).ok()
}

/// Do results of this method carry caching directives (`ttlMs`, `cacheScope`) on the modern wire?
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "server/discover"
    )
}

/// Marks a successful reply as a complete result (`resultType`), as the modern wire requires of
/// every result, and gives a cacheable one the most cautious caching directives (immediately stale,
/// private: what the broker answers depends on the caller). An error reply, or fields already
/// there, are left alone. Returns whether it changed.
pub fn mark_complete(reply: &mut Value, cacheable: bool) -> bool {
    let Some(result) = reply.get_mut("result").and_then(Value::as_object_mut) else {
        return false;
    };
    let mut changed = false;
    let mut add = |key: &str, value: Value| {
        if !result.contains_key(key) {
            result.insert(key.to_owned(), value);
            changed = true;
        }
    };
    add("resultType", json!("complete"));
    if cacheable {
        add("ttlMs", json!(0));
        add("cacheScope", json!("private"));
    }
    changed
}

/// The `server/discover` result a bridged legacy backend would give, from its `initialize` result.
pub fn discover_result(initialize: &Value) -> Value {
    let mut meta = Map::new();
    if let Some(info) = initialize.get("serverInfo") {
        meta.insert(META_SERVER_INFO.into(), info.clone());
    }
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": SUPPORTED,
        "capabilities": initialize.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": meta,
    });
    if let Some(instructions) = initialize.get("instructions").and_then(Value::as_str) {
        result["instructions"] = json!(instructions);
    }
    result
}

/// The `initialize` params the broker sends a legacy backend for a modern client: its `_meta`
/// client info and capabilities, at the backend's own protocol version.
pub fn legacy_initialize_params(message: &Message, legacy_version: &str) -> Value {
    let meta = message
        .params()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let field = |key: &str| meta.and_then(|m| m.get(key)).cloned();
    json!({
        "protocolVersion": legacy_version,
        "capabilities": field(META_CLIENT_CAPABILITIES).unwrap_or_else(|| json!({})),
        "clientInfo": field(META_CLIENT_INFO)
            .unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
    })
}

/// Turns a legacy client's message into a modern one for a backend that speaks only 2026-07-28:
/// `params._meta` gains the protocol version and the client's capabilities and info (from its
/// stored `initialize` params). Returns the `Mcp-Method` and `Mcp-Name` header values (the name
/// base64-wrapped when it would not survive as a header), or `None` for a message with no method.
pub fn modernize(message: &mut Value, ini: &Value) -> Option<(String, Option<String>)> {
    let method = message.get("method")?.as_str()?.to_owned();
    let object = message.as_object_mut()?;
    let params = object
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()));
    let params = params.as_object_mut()?;
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()?;
    meta.insert(META_PROTOCOL_VERSION.into(), json!(SUPPORTED[0]));
    let capabilities = ini
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    meta.insert(META_CLIENT_CAPABILITIES.into(), capabilities);
    if let Some(info) = ini.get("clientInfo") {
        meta.insert(META_CLIENT_INFO.into(), info.clone());
    }
    let name = name_field(&method)
        .and_then(|field| params.get(field))
        .and_then(Value::as_str)
        .map(encode_header_value);
    Some((method, name))
}

/// A value as a header carries it: verbatim when it is plain visible ASCII without surrounding
/// blanks, else in the `=?base64?...?=` form.
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        value.to_owned()
    } else {
        let engine = base64::engine::general_purpose::STANDARD;
        format!("=?base64?{}?=", engine.encode(value.as_bytes()))
    }
}

/// The `initialize` result the broker gives a legacy client of a backend that speaks only
/// 2026-07-28, from the backend's `server/discover` result: the client's requested revision when
/// it is a handshake one, its capabilities, server info and instructions.
pub fn initialize_result(discover: &Value, requested: Option<&str>, handshake: &[&str]) -> Value {
    let version = requested
        .filter(|v| handshake.contains(v))
        .or_else(|| handshake.last().copied())
        .unwrap_or("2025-11-25");
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": discover.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "serverInfo": discover
            .pointer(&format!("/_meta/{}", META_SERVER_INFO.replace('/', "~1")))
            .cloned()
            .unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
    });
    if let Some(instructions) = discover.get("instructions").and_then(Value::as_str) {
        result["instructions"] = json!(instructions);
    }
    result
}

/// How the broker treats modern traffic (`--bridge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BridgeMode {
    /// Bridge whenever the backend is legacy or stateful.
    #[default]
    Auto,
    /// Pass modern traffic through.
    Off,
}

impl std::str::FromStr for BridgeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => Err(format!("unknown bridge mode {other:?}: use auto or off")),
        }
    }
}

/// What the backend turned out to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendEras {
    /// It answers `server/discover` offering a modern revision.
    pub modern: bool,
    /// Its `initialize` hands out a session id: its tools may keep per-session state.
    pub stateful: bool,
}

/// Whether modern requests are bridged onto legacy backend sessions: under `auto`, when the backend
/// is legacy (it would answer them with 400) or stateful (a sessionless request would never reach
/// the per-session state its tools keep, the selected project first of all).
pub fn bridges(mode: BridgeMode, backend: BackendEras) -> bool {
    match mode {
        BridgeMode::Off => false,
        BridgeMode::Auto => !backend.modern || backend.stateful,
    }
}

#[cfg(test)]
mod tests;
