//! Parsing an SSE reply (`broker::sse::Parser`): watched replies (a select, `tools/list`) are
//! parsed event by event.
//!
//! Run: `cargo bench -p broker --bench sse` (see docs/performance.md).

use std::hint::black_box;

use broker::sse::Parser;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LIMIT: usize = 4 << 20;

/// One event as FastMCP writes a `tools/call` reply (`\r\n` line ends).
fn reply(text_len: usize) -> Vec<u8> {
    let text = "x".repeat(text_len);
    let data = serde_json::json!({"jsonrpc": "2.0", "id": 4, "result": {
        "content": [{"type": "text", "text": text}], "isError": false}});
    format!("event: message\r\ndata: {data}\r\n\r\n").into_bytes()
}

fn parse_all(body: &[u8], chunk: usize) -> usize {
    let mut parser = Parser::new(LIMIT);
    let mut events = 0;
    for piece in body.chunks(chunk) {
        events += parser.push(piece).expect("within the limit").len();
    }
    events + parser.end().len()
}

fn bench(c: &mut Criterion) {
    let small = reply(200);
    let large = reply(64 * 1024);
    let mut group = c.benchmark_group("sse::Parser");
    for (name, body, chunk) in [
        ("event_300b_one_chunk", &small, usize::MAX),
        ("event_300b_64b_chunks", &small, 64),
        ("event_64k_one_chunk", &large, usize::MAX),
        ("event_64k_16k_chunks", &large, 16 * 1024),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let events = parse_all(black_box(body), chunk);
                assert_eq!(events, 1);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
