//! What the broker changes in a parsed JSON-RPC message, and the replies it writes itself: an
//! argument taken out of a `tools/call` (or an entry out of another request's `_meta`), in both the
//! typed view and the JSON; JSON-RPC error replies and tool-error replies.

use serde_json::Value;

use super::{Kind, Message, RequestId};

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
