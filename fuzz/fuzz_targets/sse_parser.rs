//! `broker::sse::Parser` on arbitrary bytes, cut into chunks by the input's first bytes.
//!
//! Input layout: byte 0 = n (mod 8) chunk lengths follow, then the stream itself (the last chunk is
//! whatever is left). Checks: every byte comes back exactly once (the `Block.raw`s then `finish()`
//! equal the stream); the blocks are the same as when the stream is pushed in one piece; every block
//! ends in a line end; every dispatched event, serialized again (`Event::to_bytes`), parses back to
//! itself; with a small limit (from the first chunk length) the parser refuses or stays byte-exact,
//! and never panics.

#![no_main]

use broker::sse::{Block, Parser};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

/// Pushes the chunks; `None` when the parser refused (too large).
fn feed(chunks: &[&[u8]], limit: usize) -> Option<(Vec<Block>, Vec<u8>)> {
    let mut parser = Parser::new(limit);
    let mut blocks = Vec::new();
    for chunk in chunks {
        match parser.push(chunk) {
            Ok(more) => blocks.extend(more),
            Err(e) => {
                assert_eq!(e.limit, limit);
                return None;
            }
        }
    }
    let rest = parser.finish().map(|b| b.to_vec()).unwrap_or_default();
    Some((blocks, rest))
}

fn joined(blocks: &[Block], rest: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = blocks.iter().flat_map(|b| b.raw.to_vec()).collect();
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(n % 8).min(rest.len()));
    let mut chunks = Vec::new();
    let mut from = 0;
    for &size in sizes {
        let to = (from + usize::from(size)).min(stream.len());
        chunks.push(&stream[from..to]);
        from = to;
    }
    chunks.push(&stream[from..]);

    let (blocks, tail) = feed(&chunks, LIMIT).expect("inputs are far below the limit");
    assert_eq!(joined(&blocks, &tail), stream, "bytes lost or duplicated");
    let (whole, whole_tail) = feed(&[stream], LIMIT).expect("inputs are far below the limit");
    assert_eq!(blocks, whole, "the blocks depend on the chunking");
    assert_eq!(tail, whole_tail, "the tail depends on the chunking");

    for block in &blocks {
        assert!(
            matches!(block.raw.last(), Some(b'\n' | b'\r')),
            "a block without its line end"
        );
        if let Some(event) = &block.event {
            let (again, again_tail) =
                feed(&[&event.to_bytes()], LIMIT).expect("far below the limit");
            assert!(again_tail.is_empty());
            assert_eq!(again.len(), 1);
            assert_eq!(
                again[0].event.as_ref(),
                Some(event),
                "to_bytes does not round-trip"
            );
        }
    }

    let small = sizes.first().map_or(16, |s| usize::from(*s));
    if let Some((blocks, tail)) = feed(&chunks, small) {
        assert_eq!(
            joined(&blocks, &tail),
            stream,
            "bytes lost under a small limit"
        );
    }
});
