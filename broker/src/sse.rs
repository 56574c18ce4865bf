//! An incremental Server-Sent Events parser that never loses a byte.
//!
//! The proxy streams SSE replies event by event. Most events are forwarded as the backend wrote them;
//! a few (the reply to `tools/list` or to the select tool) are rewritten. So the parser hands back each
//! complete event block as its exact raw bytes plus the parsed fields, and keeps any incomplete tail
//! until more bytes arrive. Lines may end in `\n`, `\r\n` or `\r`, and a chunk may split anywhere,
//! including between `\r` and `\n`.

use bytes::{Bytes, BytesMut};

/// One complete block of an SSE stream (up to and including its blank line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The exact bytes of the block, to forward unchanged.
    pub raw: Bytes,
    /// The event it dispatches, if any (a block of only comments dispatches none).
    pub event: Option<Event>,
}

/// A dispatched SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field, when given.
    pub name: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `id:` field, when given.
    pub id: Option<String>,
}

impl Event {
    /// Serializes the event in canonical form (`\n` line ends, one blank line after).
    pub fn to_bytes(&self) -> Bytes {
        let name = self.name.as_ref().map_or(0, |n| n.len() + 8);
        let id = self.id.as_ref().map_or(0, |i| i.len() + 5);
        let lines = self.data.bytes().filter(|&b| b == b'\n').count() + 1;
        let mut out = String::with_capacity(name + id + self.data.len() + 7 * lines + 1);
        if let Some(name) = &self.name {
            out.push_str("event: ");
            out.push_str(name);
            out.push('\n');
        }
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

/// The stream broke the parser's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event is larger than {limit} bytes")]
pub struct TooLarge {
    pub limit: usize,
}

/// Incremental parser state.
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    /// Where scanning for the next line end resumes.
    scan: usize,
    pending: Pending,
    limit: usize,
}

#[derive(Debug, Default)]
struct Pending {
    name: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl Pending {
    fn take_event(&mut self) -> Option<Event> {
        let pending = std::mem::take(self);
        pending.data.map(|data| Event {
            name: pending.name,
            data,
            id: pending.id,
        })
    }

    fn field(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match name {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl Parser {
    /// A parser that refuses events larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scan: 0,
            pending: Pending::default(),
            limit,
        }
    }

    /// Feeds a chunk and returns every block it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Block>, TooLarge> {
        self.buf.extend_from_slice(chunk);
        let blocks = self.drain(false);
        if self.buf.len() > self.limit {
            return Err(TooLarge { limit: self.limit });
        }
        Ok(blocks)
    }

    /// The stream has ended: a `\r` that was the last byte is a line end after all (no `\n` can
    /// follow), so the block it completes is dispatched. Call before [`Parser::finish`].
    pub fn end(&mut self) -> Vec<Block> {
        self.drain(true)
    }

    fn drain(&mut self, at_end: bool) -> Vec<Block> {
        let mut blocks = Vec::new();
        while let Some((line_end, next)) = self.next_line_end(at_end) {
            let line_start = self.scan;
            self.scan = next;
            if line_end == line_start {
                let raw = self.buf.split_to(next).freeze();
                self.scan = 0;
                blocks.push(Block {
                    raw,
                    event: self.pending.take_event(),
                });
            } else {
                let line = self.buf[line_start..line_end].to_vec();
                self.pending.field(&line);
            }
        }
        blocks
    }

    /// Ends the stream: whatever is left (an unterminated block) as raw bytes, with no event, since
    /// the SSE rules discard an event that was never terminated by a blank line.
    pub fn finish(self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.freeze())
    }

    /// Finds the end of the next line from `scan`: (index of the terminator, index after it).
    /// A `\r` at the very end of the buffer waits for the next chunk, which may start with `\n`,
    /// unless the stream has ended.
    fn next_line_end(&self, at_end: bool) -> Option<(usize, usize)> {
        let rest = &self.buf[self.scan..];
        let at = rest.iter().position(|b| *b == b'\n' || *b == b'\r')?;
        let index = self.scan + at;
        if self.buf[index] == b'\n' {
            return Some((index, index + 1));
        }
        match self.buf.get(index + 1) {
            None if at_end => Some((index, index + 1)),
            None => None,
            Some(b'\n') => Some((index, index + 2)),
            Some(_) => Some((index, index + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<Block>, Option<Bytes>) {
        let mut parser = Parser::new(1 << 20);
        let mut blocks = Vec::new();
        for chunk in chunks {
            blocks.extend(parser.push(chunk).expect("within limit"));
        }
        (blocks, parser.finish())
    }

    const STREAM: &[u8] =
        b"event: message\r\ndata: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\nid: 7\n\n";

    #[test]
    fn parses_events_comments_and_multiline_data() {
        let (blocks, rest) = feed_all(&[STREAM]);
        assert_eq!(rest, None);
        assert_eq!(blocks.len(), 3);
        let first = blocks[0].event.as_ref().expect("event");
        assert_eq!(first.name.as_deref(), Some("message"));
        assert_eq!(first.data, "{\"a\":1}");
        assert_eq!(blocks[1].event, None);
        let third = blocks[2].event.as_ref().expect("event");
        assert_eq!(third.data, "x\ny");
        assert_eq!(third.id.as_deref(), Some("7"));
    }

    #[test]
    fn every_split_point_gives_the_same_blocks_and_bytes() {
        let (whole, _) = feed_all(&[STREAM]);
        for split in 0..=STREAM.len() {
            let (blocks, rest) = feed_all(&[&STREAM[..split], &STREAM[split..]]);
            assert_eq!(rest, None, "split at {split}");
            assert_eq!(blocks, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (blocks, _) = feed_all(&bytes);
        assert_eq!(blocks, whole);
        let joined: Vec<u8> = whole.iter().flat_map(|b| b.raw.to_vec()).collect();
        assert_eq!(joined, STREAM);
    }

    #[test]
    fn lone_cr_line_endings() {
        // A `\r` ending a chunk may be half of `\r\n`: the block completes when the next byte comes.
        let (blocks, rest) = feed_all(&[b"data: a\r\rdata: b\r", b"\r"]);
        assert_eq!(blocks.len(), 1);
        assert_eq!(rest.as_deref(), Some(&b"data: b\r\r"[..]));
        let (blocks, _) = feed_all(&[b"data: a\r\rdata: b\r", b"\r", b"data: c\n\n"]);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[1].event.as_ref().map(|e| e.data.as_str()), Some("b"));
    }

    #[test]
    fn a_final_cr_ends_its_line_when_the_stream_ends() {
        let mut parser = Parser::new(1 << 20);
        assert!(parser.push(b"data: x\r\r").expect("push").is_empty());
        let blocks = parser.end();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].raw.as_ref(), b"data: x\r\r");
        assert_eq!(blocks[0].event.as_ref().map(|e| e.data.as_str()), Some("x"));
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn unterminated_tail_is_returned_raw() {
        let (blocks, rest) = feed_all(&[b"data: done\n\ndata: cut"]);
        assert_eq!(blocks.len(), 1);
        assert_eq!(rest.as_deref(), Some(&b"data: cut"[..]));
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut parser = Parser::new(8);
        assert_eq!(parser.push(b"data: 0123456789"), Err(TooLarge { limit: 8 }));
    }

    #[test]
    fn serializes_round_trip() {
        let event = Event {
            name: Some("message".into()),
            data: "a\nb".into(),
            id: None,
        };
        let (blocks, _) = feed_all(&[&event.to_bytes()]);
        assert_eq!(blocks[0].event.as_ref(), Some(&event));
    }
}
