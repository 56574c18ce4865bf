//! Generators of JSON and JSON-RPC for the classifier's properties ([`crate::jsonrpc`]): any JSON,
//! float-free JSON, method names near the intercepted ones, requests, notifications, responses and
//! values merely shaped like JSON-RPC; and what a parsed body is expected to be.

use broker::jsonrpc::{self, Body, Kind, RequestId};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::any_json;

/// JSON without floats (serde_json, without its `float_roundtrip` feature, may read a printed
/// float back one ULP off, so exact round trips are checked on float-free values).
pub fn plain_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

pub fn plain_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(".{0,6}", plain_json(), 0..4).prop_map(|m| m.into_iter().collect())
}

pub const INTERCEPTED: &[&str] = &["initialize", "tools/call", "tools/list", "server/discover"];

/// Method names: the intercepted ones, near misses, and anything non-empty.
pub fn method_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(INTERCEPTED).prop_map(str::to_owned),
        2 => prop::sample::select(&[
            "Initialize", "tools/call ", " tools/list", "tools/list\0", "server/discover/",
            "tools\\/call", "notifications/initialized", "tools/calls", "initialize\u{200b}",
            "🛠/call", "resources/read", "/", "a",
        ][..])
        .prop_map(str::to_owned),
        2 => ".{1,16}",
    ]
}

pub fn request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![
        any::<i64>().prop_map(RequestId::Number),
        ".{0,12}".prop_map(RequestId::Text),
    ]
}

/// A `tools/call` params object: a non-empty name, arguments (object, null or absent), maybe
/// `_meta`.
pub fn tool_call_params() -> impl Strategy<Value = Map<String, Value>> {
    (
        ".{1,12}",
        prop_oneof![
            3 => plain_object().prop_map(|a| Some(Value::Object(a))),
            1 => Just(Some(Value::Null)),
            1 => Just(None),
        ],
        proptest::option::of(plain_object()),
        plain_object(),
    )
        .prop_map(|(name, arguments, meta, extra)| {
            let mut params = extra;
            params.insert("name".into(), Value::from(name));
            match arguments {
                Some(a) => params.insert("arguments".into(), a),
                None => params.remove("arguments"),
            };
            match meta {
                Some(m) => params.insert("_meta".into(), Value::Object(m)),
                None => params.remove("_meta"),
            };
            params
        })
}

/// A valid request: its JSON, its method and its id.
pub fn request() -> impl Strategy<Value = (Value, String, RequestId)> {
    (
        method_name(),
        request_id(),
        tool_call_params(),
        proptest::option::of(plain_object()),
    )
        .prop_map(|(method, id, call_params, other_params)| {
            let mut map = Map::new();
            map.insert("jsonrpc".into(), json!("2.0"));
            map.insert("id".into(), id.to_value());
            map.insert("method".into(), Value::from(method.clone()));
            if method == "tools/call" {
                map.insert("params".into(), Value::Object(call_params));
            } else if let Some(params) = other_params {
                map.insert("params".into(), Value::Object(params));
            }
            (Value::Object(map), method, id)
        })
}

/// Any valid message: a request, a notification or a response.
pub fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => request().prop_map(|(v, _, _)| v),
        1 => (".{1,12}", proptest::option::of(plain_object())).prop_map(|(method, params)| {
            let mut v = json!({"jsonrpc": "2.0", "method": method});
            if let Some(p) = params {
                v["params"] = Value::Object(p);
            }
            v
        }),
        1 => (request_id(), plain_json(), any::<bool>()).prop_map(|(id, payload, ok)| {
            if ok {
                json!({"jsonrpc": "2.0", "id": id.to_value(), "result": payload})
            } else {
                let error = json!({"code": -1, "message": payload});
                json!({"jsonrpc": "2.0", "id": id.to_value(), "error": error})
            }
        }),
    ]
}

/// Values shaped like JSON-RPC, with arbitrary values in every slot, to reach deep into `classify`.
pub fn rpc_shaped() -> impl Strategy<Value = Value> {
    let slot = || {
        proptest::option::of(prop_oneof![
            2 => any_json(),
            1 => prop::sample::select(&["2.0", "tools/call", "initialize", ""][..])
                .prop_map(Value::from),
        ])
    };
    let params = proptest::option::of(prop_oneof![
        any_json(),
        (
            proptest::option::of(any_json()),
            proptest::option::of(any_json()),
            proptest::option::of(any_json())
        )
            .prop_map(|(name, arguments, meta)| {
                let mut p = Map::new();
                for (k, v) in [("name", name), ("arguments", arguments), ("_meta", meta)] {
                    if let Some(v) = v {
                        p.insert(k.into(), v);
                    }
                }
                Value::Object(p)
            }),
    ]);
    let one = (slot(), slot(), slot(), params, slot(), slot())
        .prop_map(|(jsonrpc, id, method, params, result, error)| {
            let mut m = Map::new();
            for (k, v) in [
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
                ("result", result),
                ("error", error),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
        .boxed();
    prop_oneof![
        3 => one.clone(),
        1 => prop::collection::vec(one, 0..4).prop_map(Value::Array),
    ]
}

pub fn expected_kind(method: &str) -> &'static str {
    match method {
        "initialize" => "initialize",
        "tools/call" => "tools/call",
        "tools/list" => "tools/list",
        "server/discover" => "server/discover",
        _ => "other",
    }
}

pub fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Initialize => "initialize",
        Kind::ToolsCall(_) => "tools/call",
        Kind::ToolsList => "tools/list",
        Kind::Discover => "server/discover",
        Kind::OtherRequest(_) => "other",
        Kind::Notification(_) => "notification",
        Kind::Response => "response",
    }
}

/// When a body parses, re-serializing it and parsing again gives the same classification.
pub fn reparse_keeps_kinds(body: &Body) -> Result<(), TestCaseError> {
    let again = jsonrpc::parse(&body.to_json())
        .map_err(|e| TestCaseError::fail(format!("re-serialized body refused: {e}")))?;
    prop_assert_eq!(again.messages().len(), body.messages().len());
    for (a, b) in again.messages().iter().zip(body.messages()) {
        prop_assert_eq!(&a.id, &b.id);
        prop_assert_eq!(kind_name(&a.kind), kind_name(&b.kind));
    }
    Ok(())
}
