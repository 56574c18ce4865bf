//! Property tests for the parts of the broker that read untrusted bytes: the SSE parser
//! ([`sse`]), the JSON-RPC classifier ([`jsonrpc`], its generators in [`json_gen`]) and token
//! verification ([`tokens`]). They run in the normal `cargo test` (256 cases each, 32 for EdDSA
//! tokens; `PROPTEST_CASES=n` sets every test to n); `fuzz/` holds the coverage-guided counterparts
//! (docs/fuzzing.md).

mod json_gen;
mod jsonrpc;
mod sse;
mod tokens;

use proptest::prelude::*;
use serde_json::Value;

/// Default case count (256, or `PROPTEST_CASES`), and no regression files next to this source:
/// a failure prints its minimal input instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

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

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Value always serializes")
}
