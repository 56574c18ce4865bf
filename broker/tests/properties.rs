//! Property tests for the parts of the broker that read untrusted bytes: the SSE parser, the
//! JSON-RPC classifier and token verification. They run in the normal `cargo test` (256 cases
//! each, 32 for EdDSA tokens; `PROPTEST_CASES=n` sets every test to n); `fuzz/` holds the
//! coverage-guided counterparts (docs/fuzzing.md).

use std::sync::LazyLock;
use std::time::Duration;

use broker::ids::{PrincipalId, WorkSessionId};
use broker::jsonrpc::{self, Body, Kind, RequestId, Taken};
use broker::keys::{self, KeyMaterial};
use broker::sse::{Block, Event, Parser};
use broker::tokens::{HANDLE_AUDIENCE, HandleClaims, KeyRing, SESSION_AUDIENCE};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};

/// Default case count (256, or `PROPTEST_CASES`), and no regression files next to this source:
/// a failure prints its minimal input instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// -------------------------------------------------------------------------------------------------
// SSE
// -------------------------------------------------------------------------------------------------

const SSE_LIMIT: usize = 1 << 20;

/// One line of a block, as a generator sees it.
#[derive(Debug, Clone)]
enum Line {
    /// `name:` + optional space + value (name is `event`, `data`, `id` or some other field).
    Field {
        name: &'static str,
        space: bool,
        value: String,
    },
    /// A field name alone, no colon (`data` alone is an empty data line).
    Bare(&'static str),
    /// `:` + text.
    Comment(String),
}

const FIELD_NAMES: &[&str] = &[
    "event", "data", "id", "retry", "Data", "event ", " data", "ids", "x",
];

/// Field values: any text without a line break, biased towards the characters that matter.
fn sse_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[^\r\n]{0,12}",
        1 => "[ :\0a-z{}\"é]{0,8}",
    ]
}

fn sse_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        6 => (prop::sample::select(FIELD_NAMES), any::<bool>(), sse_value())
            .prop_map(|(name, space, value)| Line::Field { name, space, value }),
        1 => prop::sample::select(FIELD_NAMES).prop_map(Line::Bare),
        1 => sse_value().prop_map(Line::Comment),
    ]
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["\n", "\r\n", "\r"][..])
}

/// A block: lines with their endings, then the blank line (its own ending).
#[derive(Debug, Clone)]
struct GenBlock {
    lines: Vec<(Line, &'static str)>,
    end: &'static str,
}

fn gen_block() -> impl Strategy<Value = GenBlock> {
    (
        prop::collection::vec((sse_line(), line_end()), 0..5),
        line_end(),
    )
        .prop_map(|(lines, end)| GenBlock { lines, end })
}

/// A stream: complete blocks, then maybe an unterminated tail (lines, then maybe a partial line).
#[derive(Debug, Clone)]
struct GenStream {
    blocks: Vec<GenBlock>,
    tail: Vec<(Line, &'static str)>,
    partial: String,
}

fn gen_stream() -> impl Strategy<Value = GenStream> {
    (
        prop::collection::vec(gen_block(), 0..8),
        prop::collection::vec((sse_line(), line_end()), 0..3),
        prop_oneof![2 => Just(String::new()), 1 => "data: [^\r\n]{0,6}"],
    )
        .prop_map(|(blocks, tail, partial)| GenStream {
            blocks,
            tail,
            partial,
        })
}

fn line_text(line: &Line) -> String {
    match line {
        Line::Field { name, space, value } => {
            format!("{name}:{}{value}", if *space { " " } else { "" })
        }
        Line::Bare(name) => (*name).to_owned(),
        Line::Comment(text) => format!(":{text}"),
    }
}

/// Appends a line ending. A `\r` followed by `\n` is one `\r\n`, so a `\n` that would follow a `\r`
/// is written as `\r\n` instead: the bytes then hold exactly the lines the generator meant.
fn push_end(out: &mut Vec<u8>, end: &str) {
    if end == "\n" && out.last() == Some(&b'\r') {
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(end.as_bytes());
    }
}

/// What the SSE rules say a block dispatches.
fn model_event(lines: &[(Line, &'static str)]) -> Option<Event> {
    let (mut name, mut data, mut id) = (None, None::<String>, None);
    for (line, _) in lines {
        let text = line_text(line);
        if text.starts_with(':') {
            continue;
        }
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_str(), ""),
        };
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => id = Some(value.to_owned()),
            _ => {}
        }
    }
    data.map(|data| Event { name, data, id })
}

/// The stream's bytes, the raw bytes of each block, and the tail's bytes.
fn render(stream: &GenStream) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let mut out = Vec::new();
    let mut raws = Vec::new();
    for block in &stream.blocks {
        let start = out.len();
        for (line, end) in &block.lines {
            out.extend_from_slice(line_text(line).as_bytes());
            push_end(&mut out, end);
        }
        push_end(&mut out, block.end);
        raws.push(out[start..].to_vec());
    }
    let start = out.len();
    for (line, end) in &stream.tail {
        out.extend_from_slice(line_text(line).as_bytes());
        push_end(&mut out, end);
    }
    out.extend_from_slice(stream.partial.as_bytes());
    let tail = out[start..].to_vec();
    (out, raws, tail)
}

/// Cuts `bytes` at the given points (any order, repeats allowed: empty chunks are fed too).
fn chunks<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for point in points {
        out.push(&bytes[from..point]);
        from = point;
    }
    out.push(&bytes[from..]);
    out
}

/// Feeds the chunks; returns the blocks and what `finish` gave back.
fn feed(chunks: &[&[u8]]) -> (Vec<Block>, Vec<u8>) {
    let mut parser = Parser::new(SSE_LIMIT);
    let mut blocks = Vec::new();
    for chunk in chunks {
        blocks.extend(parser.push(chunk).expect("within the limit"));
    }
    let rest = parser.finish().map(|b| b.to_vec()).unwrap_or_default();
    (blocks, rest)
}

fn joined(blocks: &[Block], rest: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = blocks.iter().flat_map(|b| b.raw.to_vec()).collect();
    out.extend_from_slice(rest);
    out
}

proptest! {
    #![proptest_config(config())]

    /// Every byte comes back exactly once, and the blocks do not depend on how the stream was cut.
    #[test]
    fn sse_is_byte_exact_and_chunking_independent(
        stream in gen_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let (bytes, _, _) = render(&stream);
        let (whole, whole_rest) = feed(&[&bytes]);
        prop_assert_eq!(joined(&whole, &whole_rest), bytes.clone());

        let (cut, cut_rest) = feed(&chunks(&bytes, &cuts));
        prop_assert_eq!(joined(&cut, &cut_rest), bytes.clone());
        prop_assert_eq!(&cut, &whole);
        prop_assert_eq!(&cut_rest, &whole_rest);

        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        let (bytewise, bytewise_rest) = feed(&single);
        prop_assert_eq!(&bytewise, &whole);
        prop_assert_eq!(&bytewise_rest, &whole_rest);
    }

    /// The blocks are the generated blocks, and each dispatches what the SSE rules say it does.
    /// One exception, pinned here: when the very last byte of the stream is a `\r` ending a block,
    /// the parser cannot know it is not half of `\r\n`, so that block stays in `finish()`,
    /// undispatched (its bytes are not lost).
    #[test]
    fn sse_blocks_match_the_model(
        stream in gen_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let (bytes, raws, tail) = render(&stream);
        let (blocks, rest) = feed(&chunks(&bytes, &cuts));
        let mut expected: Vec<(Vec<u8>, Option<Event>)> = raws
            .iter()
            .zip(&stream.blocks)
            .map(|(raw, block)| (raw.clone(), model_event(&block.lines)))
            .collect();
        let mut expected_rest = tail;
        if expected_rest.is_empty() && bytes.last() == Some(&b'\r') {
            let (last, _) = expected.pop().expect("a stream ending in \\r has a block");
            expected_rest = last;
        }
        let got: Vec<(Vec<u8>, Option<Event>)> =
            blocks.into_iter().map(|b| (b.raw.to_vec(), b.event)).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(rest, expected_rest);
    }

    /// Arbitrary bytes, arbitrary chunks, any limit: no panic; while under the limit, byte-exact.
    #[test]
    fn sse_arbitrary_bytes_never_panic(
        // Mostly the bytes that matter to the parser, and any byte at all.
        bytes in prop::collection::vec(any::<u8>(), 0..256).prop_map(|raw| {
            raw.into_iter()
                .map(|b| match b % 8 {
                    0 => b'\r',
                    1 => b'\n',
                    2 => b':',
                    _ => b,
                })
                .collect::<Vec<u8>>()
        }),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        limit in prop_oneof![Just(SSE_LIMIT), 0usize..64],
    ) {
        let mut parser = Parser::new(limit);
        let mut out = Vec::new();
        let mut too_large = false;
        for chunk in chunks(&bytes, &cuts) {
            match parser.push(chunk) {
                Ok(blocks) => out.extend(blocks.iter().flat_map(|b| b.raw.to_vec())),
                Err(e) => {
                    prop_assert_eq!(e.limit, limit);
                    too_large = true;
                    break;
                }
            }
        }
        if !too_large {
            // What end() completes and what finish() leaves add up to the rest of the stream.
            for block in parser.end() {
                out.extend_from_slice(&block.raw);
            }
            out.extend(parser.finish().map(|b| b.to_vec()).unwrap_or_default());
            prop_assert_eq!(out, bytes);
        }
    }

    /// `Event::to_bytes` parses back to the same event.
    #[test]
    fn sse_event_serialization_round_trips(
        name in proptest::option::of("[^\r\n]{0,8}"),
        id in proptest::option::of("[^\r\n\0]{0,8}"),
        data in "[^\r]{0,16}",
    ) {
        let event = Event { name, data, id };
        let (blocks, rest) = feed(&[&event.to_bytes()]);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(blocks.len(), 1);
        prop_assert_eq!(blocks[0].event.as_ref(), Some(&event));
    }
}

// -------------------------------------------------------------------------------------------------
// JSON-RPC
// -------------------------------------------------------------------------------------------------

/// Any JSON value, floats included.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON without floats (serde_json, without its `float_roundtrip` feature, may read a printed
/// float back one ULP off, so exact round trips are checked on float-free values).
fn plain_json() -> impl Strategy<Value = Value> {
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

fn plain_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(".{0,6}", plain_json(), 0..4).prop_map(|m| m.into_iter().collect())
}

const INTERCEPTED: &[&str] = &["initialize", "tools/call", "tools/list", "server/discover"];

/// Method names: the intercepted ones, near misses, and anything non-empty.
fn method_name() -> impl Strategy<Value = String> {
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

fn request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![
        any::<i64>().prop_map(RequestId::Number),
        ".{0,12}".prop_map(RequestId::Text),
    ]
}

/// A `tools/call` params object: a non-empty name, arguments (object, null or absent), maybe
/// `_meta`.
fn tool_call_params() -> impl Strategy<Value = Map<String, Value>> {
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
fn request() -> impl Strategy<Value = (Value, String, RequestId)> {
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
fn message() -> impl Strategy<Value = Value> {
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
fn rpc_shaped() -> impl Strategy<Value = Value> {
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

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Value always serializes")
}

fn expected_kind(method: &str) -> &'static str {
    match method {
        "initialize" => "initialize",
        "tools/call" => "tools/call",
        "tools/list" => "tools/list",
        "server/discover" => "server/discover",
        _ => "other",
    }
}

fn kind_name(kind: &Kind) -> &'static str {
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
fn reparse_keeps_kinds(body: &Body) -> Result<(), TestCaseError> {
    let again = jsonrpc::parse(&body.to_json())
        .map_err(|e| TestCaseError::fail(format!("re-serialized body refused: {e}")))?;
    prop_assert_eq!(again.messages().len(), body.messages().len());
    for (a, b) in again.messages().iter().zip(body.messages()) {
        prop_assert_eq!(&a.id, &b.id);
        prop_assert_eq!(kind_name(&a.kind), kind_name(&b.kind));
    }
    Ok(())
}

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

// -------------------------------------------------------------------------------------------------
// Tokens
// -------------------------------------------------------------------------------------------------

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .expect("the clock is after 1970")
}

fn claims() -> HandleClaims {
    HandleClaims {
        p: PrincipalId::parse("ab".repeat(16)).expect("principal"),
        ws: WorkSessionId::random(),
    }
}

/// An HS256 ring and an EdDSA ring, each with a valid handle token.
static RINGS: LazyLock<Vec<(KeyRing, String)>> = LazyLock::new(|| {
    let hs = KeyRing::hs256("broker", SECRET).expect("hs256 ring");
    let pem = keys::generate_ed25519_pem().expect("ed25519 key");
    let material = KeyMaterial::parse(pem.as_bytes()).expect("pem parses");
    let ed = KeyRing::from_material("broker", &material).expect("ed25519 ring");
    [hs, ed]
        .into_iter()
        .map(|ring| {
            let token = ring
                .sign(HANDLE_AUDIENCE, Duration::from_secs(3600), now(), &claims())
                .expect("sign");
            ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token)
                .expect("a fresh token verifies");
            (ring, token)
        })
        .collect()
});

/// Strings shaped like JWTs: dot-separated base64url-ish parts, some with a real header.
fn jwt_shaped() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        "[A-Za-z0-9_-]{0,40}",
        any_json().prop_map(|v| b64(&bytes(&v))),
        (
            prop::sample::select(&["HS256", "EdDSA", "none", "RS256", "hs256", ""][..]),
            ".{0,12}"
        )
            .prop_map(|(alg, kid)| b64(&bytes(&json!({"alg": alg, "kid": kid, "typ": "JWT"})))),
        Just(()).prop_map(|()| b64(&bytes(
            &json!({"alg": "none", "kid": RINGS[0].0.signing_kid()})
        ))),
    ];
    let payload = prop_oneof![
        "[A-Za-z0-9_-]{0,60}",
        any_json().prop_map(|v| b64(&bytes(&v))),
    ];
    let sig = "[A-Za-z0-9_=+/-]{0,90}";
    prop_oneof![
        (header, payload, sig).prop_map(|(h, p, s)| format!("{h}.{p}.{s}")),
        prop::collection::vec("[A-Za-z0-9_.-]{0,20}", 0..6).prop_map(|parts| parts.join(".")),
    ]
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn verify_never_panics(token in prop_oneof![".{0,120}", jwt_shaped()]) {
        for (ring, _) in RINGS.iter() {
            let _ = ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token);
            let _ = ring.verify::<Value>(SESSION_AUDIENCE, &token);
        }
    }

    /// Any single-character change to a valid HS256 token's header, payload or signature is
    /// refused.
    #[test]
    fn mutated_hs256_tokens_are_refused(mutation in mutation()) {
        check_mutation(&RINGS[0], mutation)?;
    }
}

proptest! {
    // An EdDSA verification costs milliseconds in an unoptimized build: fewer cases, aimed at the
    // signature (header and payload changes are covered above: they change the signed input).
    #![proptest_config(ProptestConfig { cases: 32, ..config() })]

    #[test]
    fn mutated_eddsa_tokens_are_refused(mutation in mutation()) {
        check_mutation(&RINGS[1], Mutation { part: 2, ..mutation })?;
    }
}

/// A one-character change: which part, where (`None`: its last character), to what.
#[derive(Debug, Clone, Copy)]
struct Mutation {
    part: usize,
    at: Option<Index>,
    to: char,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let base64url: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .chars()
        .collect();
    (
        0usize..3,
        prop_oneof![1 => Just(None), 3 => any::<Index>().prop_map(Some)],
        prop_oneof![
            6 => prop::sample::select(base64url),
            1 => prop::sample::select(vec!['=', '+', '/', '.', ' ', 'é', '\0']),
        ],
    )
        .prop_map(|(part, at, to)| Mutation { part, at, to })
}

fn check_mutation((ring, token): &(KeyRing, String), m: Mutation) -> Result<(), TestCaseError> {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    prop_assert_eq!(parts.len(), 3);
    let mut chars: Vec<char> = parts[m.part].chars().collect();
    let i = m.at.map_or(chars.len() - 1, |at| at.index(chars.len()));
    prop_assume!(chars[i] != m.to);
    chars[i] = m.to;
    parts[m.part] = chars.into_iter().collect();
    let mutated = parts.join(".");
    let verdict = ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &mutated);
    prop_assert!(
        verdict.is_err(),
        "mutated token accepted: part {} index {} -> {:?}: {}",
        m.part,
        i,
        m.to,
        mutated
    );
    Ok(())
}

/// The last character of a base64url part carries padding bits: every other value of it, in every
/// part of an HS256 token, is refused (a decoder that ignored those bits would accept some).
#[test]
fn every_last_character_change_is_refused() {
    let (ring, token) = &RINGS[0];
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for part in 0..3 {
        for to in alphabet.chars() {
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let mut chars: Vec<char> = parts[part].chars().collect();
            let last = chars.len() - 1;
            if chars[last] == to {
                continue;
            }
            chars[last] = to;
            parts[part] = chars.into_iter().collect();
            let mutated = parts.join(".");
            assert!(
                ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &mutated)
                    .is_err(),
                "accepted with the last character of part {part} set to {to:?}: {mutated}"
            );
        }
    }
}
