//! The envelope answers what the id rules answer on the parsed message, and its splice is the
//! message `set_id` writes, byte for byte everywhere but the id.

use serde_json::Value;

use super::Envelope;
use crate::jsonrpc::RequestId;
use crate::rpc_ids;

/// Messages the relay meets, and the shapes a careless or hostile peer may send.
const READ: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#,
    r#"{"jsonrpc":"2.0","id":"a-1","result":{"content":[{"type":"text","text":"{\"id\":9}"}]}}"#,
    r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32600,"message":"no"}}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"id":3}}"#,
    r#"{"jsonrpc":"2.0","id":"msb-c-abc","method":"elicitation/create","params":{}}"#,
    r#"  { "result" : {} ,  "id" :   42 , "jsonrpc":"2.0" }  "#,
    r#"{"jsonrpc":"2.0","\u0069d":5,"result":null}"#,
    r#"{"jsonrpc":"2.0","id":"\u00e9t\u00e9 \"q\"","result":{}}"#,
    r#"{"jsonrpc":"2.0","id":1.5,"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}"#,
    r#"{"jsonrpc":"2.0","id":{"nested":1},"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":9223372036854775807,"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":18446744073709551615,"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":-3,"method":"ping"}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"x","result":{}}"#,
    r#"{"jsonrpc":"2.0","id":3}"#,
    r#"{"jsonrpc":"2.0","result":{}}"#,
    r#"{"params":{"id":1,"method":"m"},"error":{}}"#,
    r#"{}"#,
];

/// What the envelope must leave to the full parse.
const REFUSED: &[&str] = &[
    r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
    r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
    r#"{"jsonrpc":"2.0","id":1,"error":{},"error":{}}"#,
    r#"{"jsonrpc":"2.0","id":1,"result":{}"#,
    r#"{"jsonrpc":"2.0","id":1,"result":{}} trailing"#,
    r#""a string""#,
    r#"42"#,
    r#""#,
];

#[test]
fn reads_what_the_id_rules_read_on_the_parsed_message() {
    for text in READ {
        let envelope = Envelope::read(text).unwrap_or_else(|| panic!("read {text}"));
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(
            envelope.request_id(),
            rpc_ids::request_id(&value),
            "request id of {text}"
        );
        assert_eq!(
            envelope.response_id(),
            rpc_ids::response_id(&value),
            "response id of {text}"
        );
    }
}

#[test]
fn leaves_batches_duplicates_and_invalid_text_to_the_full_parse() {
    for text in REFUSED {
        assert!(Envelope::read(text).is_none(), "{text}");
    }
}

#[test]
fn splices_the_id_and_keeps_every_other_byte() {
    let ids = [
        RequestId::Number(0),
        RequestId::Number(-12),
        RequestId::Text("msb-c-0123456789abcdef".to_owned()),
        RequestId::Text("quote \" backslash \\ newline \n é".to_owned()),
    ];
    for text in READ {
        let envelope = Envelope::read(text).expect("read");
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        for id in &ids {
            let Some(spliced) = envelope.with_id(id) else {
                assert!(
                    value.get("id").is_none(),
                    "no splice although {text} has an id"
                );
                continue;
            };
            let mut expected = value.clone();
            rpc_ids::set_id(&mut expected, id);
            let parsed: Value = serde_json::from_str(&spliced).expect("the splice is JSON");
            assert_eq!(parsed, expected, "{text} with {id:?}");
            // Only the id's bytes changed.
            let (start, end) = envelope
                .id
                .as_ref()
                .map(|(r, _)| (r.start, r.end))
                .expect("id");
            assert_eq!(&spliced[..start], &text[..start]);
            assert_eq!(&spliced[spliced.len() - (text.len() - end)..], &text[end..]);
        }
    }
}

#[test]
fn an_id_inside_a_string_or_a_nested_object_is_never_the_one_spliced() {
    let text = r#"{"result":{"id":1,"text":"\"id\":1"},"id":1,"jsonrpc":"2.0"}"#;
    let spliced = Envelope::read(text)
        .and_then(|e| e.with_id(&RequestId::Number(99)))
        .expect("spliced");
    assert_eq!(
        spliced,
        r#"{"result":{"id":1,"text":"\"id\":1"},"id":99,"jsonrpc":"2.0"}"#
    );
}
