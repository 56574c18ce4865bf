//! MCP message edits the broker makes, and the messages it sends on its own.
//!
//! - `tools/list` replies gain an optional `work_session` argument on every tool;
//! - a successful select reply gains a last text item with the work-session handle;
//! - to open a backend session the broker sends `initialize`, `notifications/initialized` and, to
//!   replay a binding, a `tools/call` of the select tool.

use serde_json::{Map, Value, json};

use crate::ids::Project;

/// The argument name models use to pass a handle back.
pub const WORK_SESSION_ARG: &str = "work_session";

/// The `result` of a JSON-RPC reply, when it is a success.
fn result_mut(reply: &mut Value) -> Option<&mut Map<String, Value>> {
    reply.get_mut("result")?.as_object_mut()
}

/// Adds the optional `work_session` string to every tool's input schema. Returns whether it changed
/// anything (a reply that is an error, or lists no tools, is left alone).
pub fn add_work_session_argument(reply: &mut Value) -> bool {
    let Some(tools) = result_mut(reply)
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let mut changed = false;
    for tool in tools.iter_mut().filter_map(Value::as_object_mut) {
        let schema = tool
            .entry("inputSchema")
            .or_insert_with(|| json!({"type": "object"}));
        let Some(schema) = schema.as_object_mut() else {
            continue;
        };
        let properties = schema
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(properties) = properties.as_object_mut() {
            properties.entry(WORK_SESSION_ARG).or_insert_with(|| {
                json!({
                    "type": "string",
                    "description": "Optional. The work_session value returned when the project was selected; \
                                    pass it to keep working on that project.",
                    // Modern clients mirror it into `Mcp-Param-Work-Session`.
                    "x-mcp-header": crate::modern::WORK_SESSION_HEADER_TOKEN,
                })
            });
            changed = true;
        }
    }
    changed
}

/// Did a `tools/call` reply succeed (a result, and `isError` not true)?
pub fn call_succeeded(reply: &Value) -> bool {
    match reply.get("result") {
        Some(result) => result.get("isError").and_then(Value::as_bool) != Some(true),
        None => false,
    }
}

/// The first text of a `tools/call` reply, or its JSON-RPC error message: for logs and error details.
pub fn reply_text(reply: &Value) -> String {
    if let Some(message) = reply.pointer("/error/message").and_then(Value::as_str) {
        return message.to_owned();
    }
    reply
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("no detail")
        .chars()
        .take(300)
        .collect()
}

/// Appends a text item to a successful `tools/call` reply.
pub fn append_text(reply: &mut Value, text: &str) -> bool {
    let Some(content) = result_mut(reply)
        .and_then(|r| r.get_mut("content"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    content.push(json!({"type": "text", "text": text}));
    true
}

/// An `initialize` request with the client's own params.
pub fn initialize_request(id: &str, params: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params})
}

/// The `notifications/initialized` that completes a handshake.
pub fn initialized_notification() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// A `tools/call` of the select tool.
pub fn select_request(id: &str, tool: &str, arg: &str, project: &Project) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {arg: project.as_str()}},
    })
}

/// The protocol version an `initialize` reply agreed on.
pub fn negotiated_version(reply: &Value) -> Option<&str> {
    reply
        .pointer("/result/protocolVersion")
        .and_then(Value::as_str)
}

/// Most bytes of `initialize` params a session id carries (the id must stay a reasonable header).
pub const REPLAYABLE_BUDGET: usize = 2048;
/// Most bytes kept of `clientInfo.name` and of `clientInfo.version` (cut at a character boundary).
pub const CLIENT_INFO_FIELD_BYTES: usize = 256;
/// Most bytes kept of `protocolVersion` (a date: far shorter).
const PROTOCOL_VERSION_BYTES: usize = 64;

/// Keeps only what is needed to open the same kind of backend session again, within
/// [`REPLAYABLE_BUDGET`] bytes of JSON so a session id stays a reasonable header whatever the client
/// sent: the protocol version, `clientInfo` (name and version cut to [`CLIENT_INFO_FIELD_BYTES`]), and
/// the capabilities and other `clientInfo` fields only when everything fits.
pub fn replayable_initialize_params(params: Option<&Map<String, Value>>) -> Value {
    let Some(params) = params else {
        return json!({});
    };
    let mut kept = Map::new();
    if let Some(Value::String(version)) = params.get("protocolVersion") {
        kept.insert(
            "protocolVersion".into(),
            clip(version, PROTOCOL_VERSION_BYTES).into(),
        );
    }
    if let Some(Value::Object(info)) = params.get("clientInfo") {
        let mut info = info.clone();
        for field in ["name", "version"] {
            if let Some(Value::String(text)) = info.get_mut(field) {
                *text = clip(text, CLIENT_INFO_FIELD_BYTES).to_owned();
            }
        }
        kept.insert("clientInfo".into(), Value::Object(info));
    }
    if let Some(capabilities) = params.get("capabilities") {
        kept.insert("capabilities".into(), capabilities.clone());
    }
    if json_len(&kept) > REPLAYABLE_BUDGET {
        kept.insert("capabilities".into(), json!({}));
        if let Some(info) = kept.get_mut("clientInfo").and_then(Value::as_object_mut) {
            info.retain(|k, v| (k == "name" || k == "version") && v.is_string());
        }
    }
    // Escaping can still make short strings long (a control character is six bytes of JSON): halve
    // the name and version until everything fits.
    let mut limit = CLIENT_INFO_FIELD_BYTES;
    while json_len(&kept) > REPLAYABLE_BUDGET && limit > 0 {
        limit /= 2;
        if let Some(info) = kept.get_mut("clientInfo").and_then(Value::as_object_mut) {
            for text in info.values_mut() {
                if let Value::String(text) = text {
                    *text = clip(text, limit).to_owned();
                }
            }
        }
    }
    Value::Object(kept)
}

fn json_len(value: &Map<String, Value>) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `clientInfo.name` from stored `initialize` params.
pub fn client_name(params: &Value) -> Option<&str> {
    params.pointer("/clientInfo/name").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_list_gains_the_optional_argument() {
        let mut reply = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"a","inputSchema":{"type":"object","properties":{"x":{"type":"string"}},"required":["x"]}},
            {"name":"b"}
        ]}});
        assert!(add_work_session_argument(&mut reply));
        let tools = reply["result"]["tools"].as_array().expect("tools");
        for tool in tools {
            assert_eq!(
                tool["inputSchema"]["properties"]["work_session"]["type"],
                "string"
            );
        }
        assert_eq!(tools[0]["inputSchema"]["required"], json!(["x"]));
        let mut error = json!({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"no"}});
        assert!(!add_work_session_argument(&mut error));
    }

    #[test]
    fn success_and_failure_of_calls() {
        assert!(call_succeeded(&json!({"result":{"content":[]}})));
        assert!(call_succeeded(
            &json!({"result":{"content":[],"isError":false}})
        ));
        assert!(!call_succeeded(
            &json!({"result":{"content":[],"isError":true}})
        ));
        assert!(!call_succeeded(&json!({"error":{"code":-1,"message":"x"}})));
    }

    #[test]
    fn append_text_goes_last() {
        let mut reply = json!({"result":{"content":[{"type":"text","text":"Selected"}]}});
        assert!(append_text(&mut reply, "work_session: h"));
        assert_eq!(reply["result"]["content"][1]["text"], "work_session: h");
    }

    #[test]
    fn initialize_params_are_kept_small() {
        let params = json!({"protocolVersion":"2025-06-18","capabilities":{"x":"y".repeat(5000)},
                            "clientInfo":{"name":"claude-ai","version":"1","icons":["z"]},"other":1});
        let kept = replayable_initialize_params(params.as_object());
        assert_eq!(kept["capabilities"], json!({}));
        assert_eq!(
            kept["clientInfo"],
            json!({"name":"claude-ai","version":"1"})
        );
        assert!(kept.get("other").is_none());
        assert_eq!(client_name(&kept), Some("claude-ai"));
    }

    #[test]
    fn huge_client_info_is_cut_to_fit() {
        let size = |v: &Value| serde_json::to_vec(v).expect("json").len();
        let params = json!({"protocolVersion":"2025-06-18","capabilities":{},
                            "clientInfo":{"name":"n".repeat(50_000),"version":"v".repeat(50_000),
                                          "title":"t".repeat(50_000)}});
        let kept = replayable_initialize_params(params.as_object());
        assert_eq!(
            client_name(&kept).map(str::len),
            Some(CLIENT_INFO_FIELD_BYTES)
        );
        assert_eq!(
            kept["clientInfo"]["version"].as_str().map(str::len),
            Some(256)
        );
        assert!(kept["clientInfo"].get("title").is_none());
        assert_eq!(kept["protocolVersion"], "2025-06-18");
        assert!(size(&kept) <= REPLAYABLE_BUDGET);

        // Multi-byte characters are cut at a boundary; escaped control characters still fit.
        for name in [
            "é".repeat(50_000),
            "\u{1}".repeat(50_000),
            "\"".repeat(50_000),
        ] {
            let params = json!({"protocolVersion":"x".repeat(50_000),"clientInfo":{"name":name,"version":name}});
            let kept = replayable_initialize_params(params.as_object());
            assert!(size(&kept) <= REPLAYABLE_BUDGET, "{}", size(&kept));
            assert!(client_name(&kept).is_some_and(|n| !n.is_empty()));
        }
        // Small params are kept whole.
        let small = json!({"protocolVersion":"2025-06-18","capabilities":{"roots":{}},
                           "clientInfo":{"name":"claude-code","version":"2.1","title":"Claude Code"}});
        assert_eq!(replayable_initialize_params(small.as_object()), small);
    }
}
