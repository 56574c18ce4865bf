//! JSON-RPC as MCP clients send it: parse a POST body once into typed messages.
//!
//! A body is one message or (protocol 2025-03-26) a non-empty batch array. Each message is classified
//! into what the broker cares about (`initialize`, `tools/call`, `tools/list`, `server/discover`, other
//! requests, notifications, responses). Anything the broker does not intercept is forwarded as the
//! client wrote it, but for its id on a backend session ([`crate::rpc_ids`]); the parsed form is only
//! re-serialized when the broker changed something.

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

/// An argument the broker removed from a `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// It was not there.
    Absent,
    /// It was a string (or null, which counts as absent but still changed the message).
    Text(Option<String>),
    /// It was there but not a string.
    NotText,
}

impl Taken {
    /// Did removing it change the message?
    pub fn changed(&self) -> bool {
        !matches!(self, Taken::Absent)
    }
}

/// Removes `arguments[name]` from a `tools/call` message.
pub fn take_argument(message: &mut Message, name: &str) -> Taken {
    let Kind::ToolsCall(call) = &mut message.kind else {
        return Taken::Absent;
    };
    let Some(taken) = call.arguments.remove(name) else {
        return Taken::Absent;
    };
    if let Some(arguments) = message
        .value
        .get_mut("params")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.get_mut("arguments"))
        .and_then(Value::as_object_mut)
    {
        arguments.remove(name);
    }
    match taken {
        Value::String(s) => Taken::Text(Some(s)),
        Value::Null => Taken::Text(None),
        _ => Taken::NotText,
    }
}

/// Removes `params._meta[name]` from a request other than a call (where a project-scoped request
/// carries a `work_session` handle).
pub fn take_meta(message: &mut Message, name: &str) -> Taken {
    let Some(taken) = message
        .value
        .get_mut("params")
        .and_then(Value::as_object_mut)
        .and_then(|p| p.get_mut("_meta"))
        .and_then(Value::as_object_mut)
        .and_then(|meta| meta.remove(name))
    else {
        return Taken::Absent;
    };
    match taken {
        Value::String(s) => Taken::Text(Some(s)),
        Value::Null => Taken::Text(None),
        _ => Taken::NotText,
    }
}

/// A JSON-RPC error reply.
pub fn error_reply(id: Option<&RequestId>, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.map(RequestId::to_value).unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    })
}

/// A successful `tools/call` reply that carries a tool error (`isError: true`) with one text item.
pub fn tool_error_reply(id: &RequestId, text: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.to_value(),
        "result": {"content": [{"type": "text", "text": text}], "isError": true},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Message {
        match parse(json.as_bytes()).expect("parses") {
            Body::Single(m) => m,
            Body::Batch(_) => panic!("expected one message"),
        }
    }

    #[test]
    fn classifies_what_the_broker_intercepts() {
        let init = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-ai","version":"1"}}}"#,
        );
        assert_eq!(init.kind, Kind::Initialize);
        assert_eq!(init.id, Some(RequestId::Number(1)));

        let call = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"lock_context","arguments":{"topic":"t"},"_meta":{"openai/session":"s1"}}}"#,
        );
        match &call.kind {
            Kind::ToolsCall(c) => {
                assert_eq!(c.name, "lock_context");
                assert_eq!(c.arguments.get("topic"), Some(&Value::from("t")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(call.meta_str("openai/session"), Some("s1"));

        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).kind,
            Kind::ToolsList
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":2,"method":"server/discover","params":{}}"#).kind,
            Kind::Discover
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).kind,
            Kind::Notification("notifications/initialized".into())
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#).kind,
            Kind::Response
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"x"}}"#).kind,
            Kind::OtherRequest("resources/read".into())
        );
    }

    #[test]
    fn batches_are_classified_message_by_message() {
        let body = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}]"#).expect("batch");
        assert_eq!(body.messages().len(), 2);
        assert!(!body.is_initialize());
        assert_eq!(parse(b"[]"), Err(ParseError::EmptyBatch));
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        assert_eq!(parse(b"{").map_err(|e| e.code()), Err(codes::PARSE_ERROR));
        for bad in [
            r#"42"#,
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            r#"{"jsonrpc":"2.0"}"#,
        ] {
            let err = parse(bad.as_bytes()).expect_err(bad);
            assert_eq!(err.code(), codes::INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn take_argument_strips_from_both_views() {
        let mut call = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"work_session":"h","a":1}}}"#,
        );
        assert_eq!(
            take_argument(&mut call, "work_session"),
            Taken::Text(Some("h".into()))
        );
        let body = Body::Single(call);
        let json: Value = serde_json::from_slice(&body.to_json()).expect("json");
        assert_eq!(json["params"]["arguments"], serde_json::json!({"a":1}));
        let mut bad = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"work_session":3}}}"#,
        );
        assert_eq!(take_argument(&mut bad, "work_session"), Taken::NotText);
    }
}
