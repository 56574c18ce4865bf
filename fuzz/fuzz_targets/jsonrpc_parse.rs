//! `broker::jsonrpc::parse` on arbitrary bytes.
//!
//! Checks: no panic; what parses is classified consistently (requests have ids, notifications do
//! not, a `tools/call` has a non-empty name); re-serializing (`Body::to_json`) and parsing again
//! keeps every id and kind, and the whole body when it holds no floats (serde_json without
//! `float_roundtrip` may read a printed float back one ULP off); `take_argument` of every argument
//! of every `tools/call` empties the arguments in both the typed call and the JSON.

#![no_main]

use broker::jsonrpc::{self, Body, Kind, Message};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

fn body_has_float(body: &Body) -> bool {
    body.messages()
        .iter()
        .any(|m| m.value.values().any(has_float))
}

fn kind_tag(kind: &Kind) -> u8 {
    match kind {
        Kind::Initialize => 0,
        Kind::ToolsCall(_) => 1,
        Kind::ToolsList => 2,
        Kind::Discover => 3,
        Kind::OtherRequest(_) => 4,
        Kind::Notification(_) => 5,
        Kind::Response => 6,
    }
}

fn check_message(m: &Message) {
    match &m.kind {
        Kind::Notification(method) => {
            assert!(m.id.is_none(), "a notification with an id");
            assert!(!method.is_empty());
        }
        Kind::ToolsCall(call) => {
            assert!(m.id.is_some(), "a request without an id");
            assert!(!call.name.is_empty(), "a tools/call without a name");
        }
        _ => assert!(m.id.is_some(), "a request or response without an id"),
    }
    let _ = m.meta_str("openai/session");
    let _ = m.params();
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = jsonrpc::parse(data) else {
        return;
    };
    body.messages().iter().for_each(check_message);

    let again = jsonrpc::parse(&body.to_json()).expect("a re-serialized body parses");
    assert_eq!(again.messages().len(), body.messages().len());
    for (a, b) in again.messages().iter().zip(body.messages()) {
        assert_eq!(a.id, b.id);
        assert_eq!(kind_tag(&a.kind), kind_tag(&b.kind));
    }
    if !body_has_float(&body) {
        assert_eq!(again, body, "re-serializing changed the body");
    }

    let mut body = body;
    for m in body.messages_mut() {
        let Kind::ToolsCall(call) = &m.kind else {
            continue;
        };
        let names: Vec<String> = call.arguments.keys().cloned().collect();
        for name in names {
            assert!(jsonrpc::take_argument(m, &name).changed());
        }
        let Kind::ToolsCall(call) = &m.kind else {
            unreachable!("take_argument keeps the kind");
        };
        assert!(call.arguments.is_empty());
        if let Some(Value::Object(arguments)) = m.params().and_then(|p| p.get("arguments")) {
            assert!(arguments.is_empty(), "an argument left in the JSON");
        }
    }
    let stripped = jsonrpc::parse(&body.to_json()).expect("a stripped body parses");
    assert_eq!(stripped.messages().len(), body.messages().len());
});
