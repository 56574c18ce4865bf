//! Classifying a POST body (`broker::jsonrpc::parse`): every request to the MCP path pays it once.
//!
//! Run: `cargo bench -p broker --bench classify` (see docs/performance.md).

use std::hint::black_box;

use broker::jsonrpc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A connector's `tools/call` as Claude sends it: a tool, small arguments, `_meta` with a token.
const TOOLS_CALL: &str = r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"get_last_handover","arguments":{"topic":"release notes","limit":5},"_meta":{"progressToken":17,"claudeai/conversation":"4b1c2a8e-5f0d-4f43-9a55-2d1e0c8b7a61"}}}"#;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"claude-ai","version":"0.1.0"}}}"#;

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// A `tools/call` carrying a 4 KiB text argument (a handover being written).
fn large_call() -> String {
    let text = "lorem ipsum dolor sit amet ".repeat(152);
    serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "write_handover", "arguments": {"summary": text, "work_session": "eyJhbGciOi.x.y"}}})
    .to_string()
}

fn bench(c: &mut Criterion) {
    let large = large_call();
    let mut group = c.benchmark_group("jsonrpc::parse");
    for (name, body) in [
        ("tools_call", TOOLS_CALL),
        ("initialize", INITIALIZE),
        ("notification", INITIALIZED),
        ("tools_call_4k", large.as_str()),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| jsonrpc::parse(black_box(body.as_bytes())).expect("a valid body"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
