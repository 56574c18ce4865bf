//! Unit tests of the JSON-RPC parser and classifier, and of the edits in `edit.rs`.

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
