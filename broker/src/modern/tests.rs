//! The modern request ladder, the header codec, the bridge decision, and what the broker writes.

use serde_json::json;

use super::*;
use crate::jsonrpc::{self, Body};

fn message(value: Value) -> Message {
    match jsonrpc::parse(&serde_json::to_vec(&value).expect("json")).expect("parses") {
        Body::Single(m) => m,
        Body::Batch(_) => panic!("one"),
    }
}

fn call(name: &str, version: &str) -> Message {
    message(
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
            "name": name, "arguments": {},
            "_meta": {META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {}, META_CLIENT_INFO: {"name":"c","version":"1"}}
        }}),
    )
}

fn headers<'a>(version: &'a str, method: &'a str, name: Option<&'a str>) -> RoutingHeaders<'a> {
    RoutingHeaders {
        protocol_version: Some(version),
        method: Some(method),
        name,
        duplicated: false,
    }
}

fn code(result: Result<(), Rejection>) -> Option<i64> {
    result.err().map(|r| r.code)
}

#[test]
fn the_request_ladder() {
    let v = "2026-07-28";
    let good = call("get_last_handover", v);
    #[rustfmt::skip]
    let rows: Vec<(&str, Message, RoutingHeaders<'_>, Option<i64>)> = vec![
        ("matching headers", good.clone(), headers(v, "tools/call", Some("get_last_handover")), None),
        ("Mcp-Name in base64 form", good.clone(), headers(v, "tools/call", Some("=?base64?Z2V0X2xhc3RfaGFuZG92ZXI=?=")), None),
        ("another method in the header", good.clone(), headers(v, "tools/list", Some("get_last_handover")), Some(HEADER_MISMATCH)),
        ("another tool in the header", good.clone(), headers(v, "tools/call", Some("write_handover")), Some(HEADER_MISMATCH)),
        ("no Mcp-Name", good.clone(), headers(v, "tools/call", None), Some(HEADER_MISMATCH)),
        ("malformed base64 Mcp-Name", good.clone(), headers(v, "tools/call", Some("=?base64?!!?=")), Some(HEADER_MISMATCH)),
        ("no version header", good.clone(), RoutingHeaders { protocol_version: None, ..headers(v, "tools/call", Some("get_last_handover")) }, Some(HEADER_MISMATCH)),
        ("version header differs from _meta", good.clone(), headers("2026-08-01", "tools/call", Some("get_last_handover")), Some(HEADER_MISMATCH)),
        ("a routing header twice", good.clone(), RoutingHeaders { duplicated: true, ..headers(v, "tools/call", Some("get_last_handover")) }, Some(HEADER_MISMATCH)),
        ("an unsupported version", call("x", "2099-01-01"), headers("2099-01-01", "tools/call", Some("x")), Some(UNSUPPORTED_PROTOCOL_VERSION)),
        ("no _meta", message(json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}})), headers(v, "tools/list", None), Some(INVALID_PARAMS)),
        ("_meta without capabilities", message(json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{META_PROTOCOL_VERSION: v}}})), headers(v, "tools/list", None), Some(INVALID_PARAMS)),
    ];
    for (what, message, headers, want) in rows {
        assert_eq!(code(check(&message, &headers)), want, "{what}");
    }
}

#[test]
fn an_unsupported_version_names_the_supported_ones() {
    let rejection = check(
        &call("x", "2099-01-01"),
        &headers("2099-01-01", "tools/call", Some("x")),
    )
    .expect_err("refused");
    let reply = rejection.reply(Some(&RequestId::Number(1)));
    assert_eq!(reply["error"]["code"], -32022);
    assert_eq!(reply["error"]["data"]["supported"], json!(["2026-07-28"]));
    assert_eq!(reply["error"]["data"]["requested"], "2099-01-01");
    assert_eq!(rejection.http_status(), 400);
}

#[test]
fn header_values() {
    assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
    assert_eq!(
        decode_header_value("=?base64?w6l0w6k=?=").as_deref(),
        Some("été")
    );
    assert_eq!(
        decode_header_value("=?base64?w6l0w6k?="),
        None,
        "not canonical"
    );
}

#[test]
fn a_legacy_message_for_a_modern_only_backend() {
    let ini = json!({"protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "old", "version": "1"}});
    let mut call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"café","arguments":{}}});
    let (method, name) = modernize(&mut call, &ini).expect("a request");
    assert_eq!(method, "tools/call");
    assert_eq!(name.as_deref(), Some("=?base64?Y2Fmw6k=?="));
    assert_eq!(
        decode_header_value(name.as_deref().expect("name")).as_deref(),
        Some("café")
    );
    assert_eq!(call["params"]["_meta"][META_PROTOCOL_VERSION], "2026-07-28");
    assert_eq!(
        call["params"]["_meta"][META_CLIENT_CAPABILITIES]["roots"],
        json!({})
    );
    assert_eq!(call["params"]["_meta"][META_CLIENT_INFO]["name"], "old");
    let mut list = json!({"jsonrpc":"2.0","id":4,"method":"tools/list"});
    assert_eq!(
        modernize(&mut list, &ini),
        Some(("tools/list".into(), None))
    );
    assert!(list["params"]["_meta"].is_object());
    let mut response = json!({"jsonrpc":"2.0","id":4,"result":{}});
    assert_eq!(modernize(&mut response, &ini), None);

    let discover = json!({"capabilities": {"tools": {}}, "_meta": {META_SERVER_INFO: {"name": "m", "version": "2"}}, "instructions": "hi"});
    let handshake = ["2025-03-26", "2025-06-18", "2025-11-25"];
    let result = initialize_result(&discover, Some("2025-06-18"), &handshake);
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(result["serverInfo"]["name"], "m");
    assert_eq!(result["instructions"], "hi");
    assert_eq!(
        initialize_result(&discover, Some("1999-01-01"), &handshake)["protocolVersion"],
        "2025-11-25"
    );
}

#[test]
fn when_to_bridge() {
    let e = |modern, stateful| BackendEras { modern, stateful };
    assert!(bridges(BridgeMode::Auto, e(false, true)), "legacy");
    assert!(
        bridges(BridgeMode::Auto, e(true, true)),
        "modern but stateful"
    );
    assert!(
        !bridges(BridgeMode::Auto, e(true, false)),
        "modern and stateless"
    );
    assert!(!bridges(BridgeMode::Off, e(false, true)));
}

#[test]
fn what_the_broker_writes() {
    let mut reply = json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}});
    assert!(mark_complete(&mut reply, false));
    assert_eq!(reply["result"]["resultType"], "complete");
    assert!(reply["result"].get("ttlMs").is_none());
    assert!(!mark_complete(&mut reply, false), "already marked");
    let mut listed = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}});
    assert!(mark_complete(&mut listed, is_cacheable("tools/list")));
    assert_eq!(listed["result"]["cacheScope"], "private");
    assert_eq!(listed["result"]["ttlMs"], 0);
    let mut error = json!({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}});
    assert!(!mark_complete(&mut error, true));

    let discover = discover_result(&json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": "s", "version": "1"},
        "instructions": "be nice"
    }));
    assert_eq!(discover["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(discover["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(discover["_meta"][META_SERVER_INFO]["name"], "s");
    assert_eq!(discover["instructions"], "be nice");
    assert_eq!(discover["resultType"], "complete");

    let ini = legacy_initialize_params(&call("x", "2026-07-28"), "2025-06-18");
    assert_eq!(ini["protocolVersion"], "2025-06-18");
    assert_eq!(ini["clientInfo"]["name"], "c");
}
