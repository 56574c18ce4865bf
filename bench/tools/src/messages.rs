//! The MCP messages the load generator sends: what Claude's connectors send on every turn.

use serde_json::json;

/// The protocol version the load generator speaks.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// `initialize` with `clientInfo.name` = `client` (the broker derives the surface from it).
pub fn initialize(client: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
        "clientInfo": {"name": client, "version": "1.0"}}})
    .to_string()
    .into_bytes()
}

/// `notifications/initialized`.
pub fn initialized() -> Vec<u8> {
    br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec()
}

/// `tools/call` of `tool` with `arguments`.
pub fn tools_call(tool: &str, arguments: serde_json::Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json_rpc() {
        for body in [
            initialize("claude-ai"),
            initialized(),
            tools_call("x", json!({})),
        ] {
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(value["jsonrpc"], "2.0");
        }
    }
}
