//! The JSON-RPC classifier: never a panic on bytes, damaged JSON or odd values; valid requests
//! classified by method with their id and arguments; bodies that round-trip (floats exactly); and
//! `take_argument` removing an argument from both the typed call and the JSON.

use broker::jsonrpc::{self, Body, Kind, Taken};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::json_gen::*;
use crate::{any_json, bytes, config};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jsonrpc_parse_never_panics_on_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = jsonrpc::parse(&bytes);
    }

    /// Mostly-JSON bytes: valid JSON-RPC with a few bytes overwritten.
    #[test]
    fn jsonrpc_parse_never_panics_on_damaged_json(
        value in message(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = bytes(&value);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(body) = jsonrpc::parse(&bytes) {
            reparse_keeps_kinds(&body)?;
        }
    }

    #[test]
    fn jsonrpc_parse_never_panics_on_json_values(value in prop_oneof![any_json(), rpc_shaped()]) {
        if let Ok(body) = jsonrpc::parse(&bytes(&value)) {
            reparse_keeps_kinds(&body)?;
        }
    }

    #[test]
    fn jsonrpc_requests_are_classified(req in request()) {
        let (value, method, id) = req;
        let body = jsonrpc::parse(&bytes(&value))
            .map_err(|e| TestCaseError::fail(format!("valid request refused: {e}")))?;
        let Body::Single(message) = &body else {
            return Err(TestCaseError::fail("one request parsed as a batch"));
        };
        prop_assert_eq!(message.id.as_ref(), Some(&id));
        prop_assert!(message.is_request());
        prop_assert_eq!(kind_name(&message.kind), expected_kind(&method));
        prop_assert_eq!(body.is_initialize(), method == "initialize");
        match &message.kind {
            Kind::OtherRequest(m) => prop_assert_eq!(m, &method),
            Kind::ToolsCall(call) => {
                let params = value["params"].as_object().expect("generated with params");
                prop_assert_eq!(Some(call.name.as_str()), params["name"].as_str());
                let arguments = params
                    .get("arguments")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                prop_assert_eq!(&call.arguments, &arguments);
                let meta = params
                    .get("_meta")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                prop_assert_eq!(&call.meta, &meta);
            }
            _ => {}
        }
        prop_assert_eq!(Value::Object(message.value.clone()), value);
    }

    /// `parse(to_json(parse(x))) == parse(x)`, single messages and batches.
    #[test]
    fn jsonrpc_round_trips(
        messages in prop::collection::vec(message(), 1..5),
        batch in any::<bool>(),
    ) {
        let value = if batch || messages.len() > 1 {
            Value::Array(messages)
        } else {
            messages.into_iter().next().expect("one message")
        };
        let body = jsonrpc::parse(&bytes(&value))
            .map_err(|e| TestCaseError::fail(format!("valid body refused: {e}")))?;
        prop_assert_eq!(matches!(body, Body::Batch(_)), value.is_array());
        let again = jsonrpc::parse(&body.to_json())
            .map_err(|e| TestCaseError::fail(format!("re-serialized body refused: {e}")))?;
        prop_assert_eq!(again, body);
    }

    /// A body the broker re-serializes (after `take_argument`, say) carries every float exactly as the
    /// client sent it (serde_json's `float_roundtrip`; without it `-2.0288025659160037e270` went out as
    /// `-2.0288025659160034e+270`, found by this test).
    #[test]
    fn jsonrpc_round_trips_floats(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let value = json!({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"f": f}});
        let body = jsonrpc::parse(&bytes(&value))
            .map_err(|e| TestCaseError::fail(format!("valid body refused: {e}")))?;
        prop_assert_eq!(body.messages()[0].value["params"]["f"].as_f64(), Some(f));
        let again = jsonrpc::parse(&body.to_json())
            .map_err(|e| TestCaseError::fail(format!("re-serialized body refused: {e}")))?;
        prop_assert_eq!(again, body);
    }

    /// `take_argument` removes the argument from the typed call and from the JSON, and nothing
    /// else.
    #[test]
    fn take_argument_strips_both_views(
        id in request_id(),
        params in tool_call_params(),
        target in prop_oneof![Just("work_session".to_owned()), ".{0,6}"],
        planted in proptest::option::of(prop_oneof![
            ".{0,8}".prop_map(Value::from),
            Just(Value::Null),
            plain_json(),
        ]),
    ) {
        let mut params = params;
        if let Some(v) = &planted
            && let Some(Value::Object(arguments)) = params.get_mut("arguments")
        {
            arguments.insert(target.clone(), v.clone());
        }
        let before = params
            .get("arguments")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let value = json!({
            "jsonrpc": "2.0",
            "id": id.to_value(),
            "method": "tools/call",
            "params": params,
        });
        let body = jsonrpc::parse(&bytes(&value))
            .map_err(|e| TestCaseError::fail(format!("valid tools/call refused: {e}")))?;
        let Body::Single(mut message) = body else {
            return Err(TestCaseError::fail("one request parsed as a batch"));
        };
        let taken = jsonrpc::take_argument(&mut message, &target);

        let expected = match before.get(&target) {
            None => Taken::Absent,
            Some(Value::String(s)) => Taken::Text(Some(s.clone())),
            Some(Value::Null) => Taken::Text(None),
            Some(_) => Taken::NotText,
        };
        prop_assert_eq!(&taken, &expected);
        let mut after = before.clone();
        after.remove(&target);

        let Kind::ToolsCall(call) = &message.kind else {
            return Err(TestCaseError::fail("tools/call not classified as such"));
        };
        prop_assert_eq!(&call.arguments, &after);
        let in_json = message
            .value
            .get("params")
            .and_then(|p| p.get("arguments"));
        if let Some(Value::Object(a)) = in_json {
            prop_assert_eq!(a, &after);
        }
        // The JSON the backend would get, parsed again, agrees.
        let again = jsonrpc::parse(&Body::Single(message.clone()).to_json())
            .map_err(|e| TestCaseError::fail(format!("re-serialized call refused: {e}")))?;
        let Some(Kind::ToolsCall(call)) = again.messages().first().map(|m| &m.kind) else {
            return Err(TestCaseError::fail("re-serialized call not a tools/call"));
        };
        prop_assert_eq!(&call.arguments, &after);
        prop_assert!(!call.arguments.contains_key(&target));
    }
}
