//! JSON-RPC as MCP clients send it: parse a POST body once into typed messages.
//!
//! A body is one message or (protocol 2025-03-26) a non-empty batch array. Each message is classified
//! into what the broker cares about (`initialize`, `tools/call`, `tools/list`, `server/discover`, other
//! requests, notifications, responses). Anything the broker does not intercept is forwarded as the
//! client wrote it, but for its id on a backend session ([`crate::rpc_ids`]); the parsed form is only
//! re-serialized when the broker changed something.
//!
//! This file parses and classifies; `edit.rs` holds what the broker changes in a parsed message
//! (an argument or a `_meta` entry taken out) and the replies it writes itself.

use serde_json::{Map, Value};

/// Names of the methods the broker intercepts.
pub mod methods {
    pub const INITIALIZE: &str = "initialize";
    pub const INITIALIZED: &str = "notifications/initialized";
    pub const TOOLS_CALL: &str = "tools/call";
    pub const TOOLS_LIST: &str = "tools/list";
    pub const DISCOVER: &str = "server/discover";
}

/// JSON-RPC error codes used in replies the broker writes itself.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Used by MCP servers for "Session not found".
    pub const SESSION_NOT_FOUND: i64 = -32001;
}

/// Why a body is not JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("a JSON-RPC batch must not be empty")]
    EmptyBatch,
    #[error("a batch may hold at most {0} messages")]
    BatchTooLarge(usize),
    #[error("message {index}: {reason}")]
    Invalid { index: usize, reason: &'static str },
}

impl ParseError {
    /// The JSON-RPC code that describes this error.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::NotJson(_) => codes::PARSE_ERROR,
            _ => codes::INVALID_REQUEST,
        }
    }
}

/// A JSON-RPC id: a string or an integer (MCP forbids null for requests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    Number(i64),
    Text(String),
}

impl RequestId {
    /// The id of a JSON value, when it is a string or an integer.
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::Text(s.clone())),
            Value::Number(n) => n.as_i64().map(Self::Number),
            _ => None,
        }
    }

    /// The id as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Number(n) => Value::from(*n),
            Self::Text(s) => Value::from(s.clone()),
        }
    }
}

/// What one message is, as far as the broker cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Initialize,
    ToolsCall(ToolCall),
    ToolsList,
    Discover,
    OtherRequest(String),
    Notification(String),
    Response,
}

/// The parts of a `tools/call` the broker needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// `params.arguments` (an empty object when absent).
    pub arguments: Map<String, Value>,
    /// `params._meta` (an empty object when absent).
    pub meta: Map<String, Value>,
}

/// One parsed message: its kind, its id and the JSON it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Option<RequestId>,
    pub kind: Kind,
    pub value: Map<String, Value>,
}

impl Message {
    /// `params` as an object, when there is one.
    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.value.get("params").and_then(Value::as_object)
    }

    /// `params._meta[key]` as text.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.params()?.get("_meta")?.as_object()?.get(key)?.as_str()
    }

    /// `true` for a request (has an id and a method).
    pub fn is_request(&self) -> bool {
        !matches!(self.kind, Kind::Notification(_) | Kind::Response)
    }
}

/// A whole POST body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Single(Message),
    Batch(Vec<Message>),
}

impl Body {
    /// The messages, one or many.
    pub fn messages(&self) -> &[Message] {
        match self {
            Body::Single(m) => std::slice::from_ref(m),
            Body::Batch(ms) => ms,
        }
    }

    /// Mutable access to the messages.
    pub fn messages_mut(&mut self) -> &mut [Message] {
        match self {
            Body::Single(m) => std::slice::from_mut(m),
            Body::Batch(ms) => ms,
        }
    }

    /// The body as JSON again (used only when the broker changed a message).
    pub fn to_json(&self) -> Vec<u8> {
        let value = match self {
            Body::Single(m) => Value::Object(m.value.clone()),
            Body::Batch(ms) => {
                Value::Array(ms.iter().map(|m| Value::Object(m.value.clone())).collect())
            }
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Is this exactly one `initialize` request?
    pub fn is_initialize(&self) -> bool {
        matches!(
            self,
            Body::Single(Message {
                kind: Kind::Initialize,
                ..
            })
        )
    }
}

/// Largest batch the broker accepts.
pub const MAX_BATCH: usize = 256;

/// Parses and classifies a POST body.
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::EmptyBatch);
            }
            if items.len() > MAX_BATCH {
                return Err(ParseError::BatchTooLarge(MAX_BATCH));
            }
            let messages = items
                .into_iter()
                .enumerate()
                .map(|(index, item)| classify(index, item))
                .collect::<Result<_, _>>()?;
            Ok(Body::Batch(messages))
        }
        other => classify(0, other).map(Body::Single),
    }
}

fn classify(index: usize, value: Value) -> Result<Message, ParseError> {
    let invalid = |reason| ParseError::Invalid { index, reason };
    let Value::Object(map) = value else {
        return Err(invalid("a JSON-RPC message must be an object"));
    };
    if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match map.get("id") {
        None => None,
        Some(v) => Some(
            RequestId::from_value(v)
                .ok_or_else(|| invalid("\"id\" must be a string or an integer"))?,
        ),
    };
    let method = match map.get("method") {
        None => None,
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        Some(_) => return Err(invalid("\"method\" must be a non-empty string")),
    };
    if let Some(params) = map.get("params")
        && !params.is_object()
        && !params.is_array()
    {
        return Err(invalid("\"params\" must be an object or an array"));
    }
    let kind = match (method, &id) {
        (Some(method), None) => Kind::Notification(method),
        (Some(method), Some(_)) => request_kind(&map, method).map_err(invalid)?,
        (None, Some(_)) if map.contains_key("result") || map.contains_key("error") => {
            Kind::Response
        }
        (None, _) => {
            return Err(invalid(
                "a message needs a \"method\", or an \"id\" with \"result\" or \"error\"",
            ));
        }
    };
    Ok(Message {
        id,
        kind,
        value: map,
    })
}

fn request_kind(map: &Map<String, Value>, method: String) -> Result<Kind, &'static str> {
    Ok(match method.as_str() {
        methods::INITIALIZE => Kind::Initialize,
        methods::TOOLS_LIST => Kind::ToolsList,
        methods::DISCOVER => Kind::Discover,
        methods::TOOLS_CALL => {
            let params = map
                .get("params")
                .and_then(Value::as_object)
                .ok_or("tools/call needs \"params\" with a \"name\"")?;
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or("tools/call needs a non-empty string \"params.name\"")?;
            let arguments = match params.get("arguments") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(a)) => a.clone(),
                Some(_) => return Err("tools/call \"params.arguments\" must be an object"),
            };
            let meta = params
                .get("_meta")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            Kind::ToolsCall(ToolCall {
                name: name.to_owned(),
                arguments,
                meta,
            })
        }
        _ => Kind::OtherRequest(method),
    })
}

mod edit;
pub mod envelope;
pub use edit::{Taken, error_reply, take_argument, take_meta, tool_error_reply};

#[cfg(test)]
mod tests;
