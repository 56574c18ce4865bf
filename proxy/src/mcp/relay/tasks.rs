//! The relay's tasks: answers whose edits may wait on the store (a select's bind) or take over the
//! stream (a parked call, a modern backend's questions) are rewritten by a task that feeds the
//! client's body through a channel, and notices at once when the client goes away.

use broker::sse;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::{REWRITE_LIMIT, Watch};
use crate::backend::body;
use crate::mcp::message_routing::IdMap;
use crate::mcp::message_routing::rounds::{PARKED_TTL, Park};

pub(super) type Sender = tokio::sync::mpsc::Sender<Result<Bytes, body::BoxError>>;

pub(super) async fn relay_sse(mut incoming: Incoming, mut watch: Watch, tx: Sender) {
    let mut parser = sse::Parser::new(REWRITE_LIMIT);
    loop {
        // A client that closes its reply stream while the backend is still silent is noticed now,
        // not when the backend next writes: the backend is released (and told, when bridged).
        let frame = tokio::select! {
            frame = incoming.frame() => frame,
            () = tx.closed() => {
                watch.abandoned();
                return;
            }
        };
        let Some(frame) = frame else { break };
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        let blocks = match parser.push(&data) {
            Ok(blocks) => blocks,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        match forward_blocks(&mut watch, blocks, &tx).await {
            Flow::Go => {}
            Flow::Gone => {
                watch.abandoned(); // the client went away
                return;
            }
            Flow::Parked(park) => {
                drop(tx); // the client has its input_required: its stream ends here
                return park_rest(incoming, parser, watch, park).await;
            }
        }
    }
    let ended = parser.end();
    match forward_blocks(&mut watch, ended, &tx).await {
        Flow::Go => {}
        Flow::Gone => return,
        Flow::Parked(park) => {
            drop(tx);
            park.ended().await;
            return;
        }
    }
    if let Some(rest) = parser.finish() {
        let _ = tx.send(Ok(rest)).await;
    }
}

/// What the relay does after a batch of blocks.
enum Flow {
    Go,
    /// The client went away.
    Gone,
    /// The backend asked the (modern) client something: the call is parked.
    Parked(Park),
}

/// Sends blocks on, rewriting the watched replies among them.
async fn forward_blocks(watch: &mut Watch, blocks: Vec<sse::Block>, tx: &Sender) -> Flow {
    for block in blocks {
        let out = match block.event {
            Some(event) if watch.park.is_some() => match park_on_request(watch, &event) {
                Some(parked) => {
                    let (reply, park) = parked;
                    let _ = tx.send(Ok(reply)).await;
                    return Flow::Parked(park);
                }
                None => rewrite_event(watch, event).await.unwrap_or(block.raw),
            },
            Some(event) if !watch.is_empty() => {
                rewrite_event(watch, event).await.unwrap_or(block.raw)
            }
            _ => block.raw,
        };
        if tx.send(Ok(out)).await.is_err() {
            return Flow::Gone;
        }
    }
    Flow::Go
}

/// A server request on a parkable call's stream: the `input_required` event for the client, and
/// the park that takes over the stream.
fn park_on_request(watch: &mut Watch, event: &sse::Event) -> Option<(Bytes, Park)> {
    let mut value: Value = serde_json::from_str(&event.data).ok()?;
    broker::rpc_ids::request_id(&value)?;
    watch.seal.as_ref()?.seal(&mut value);
    let park = watch.park.take()?;
    let reply = park.first_reply(&value);
    let event = sse::Event {
        data: serde_json::to_string(&reply).ok()?,
        ..event.clone()
    };
    Some((event.to_bytes(), park))
}

/// Reads the rest of a parked call's stream into rounds for the client's retries, for at most
/// [`PARKED_TTL`]: a call whose client never comes back is then cancelled at the backend.
async fn park_rest(incoming: Incoming, parser: sse::Parser, mut watch: Watch, park: Park) {
    tracing::info!("the backend asked a modern client something: the call is parked for its retry");
    let read = read_parked(incoming, parser, &watch, &park);
    match tokio::time::timeout(PARKED_TTL, read).await {
        Ok(true) => watch.ids = IdMap::default(), // answered: nothing to cancel
        Ok(false) => park.ended().await,
        Err(_) => {
            tracing::info!("a parked call's client never came back: cancelled at the backend");
            watch.abandoned();
            park.ended().await;
        }
    }
}

/// Whether the call's response came (else the stream ended first).
async fn read_parked(
    mut incoming: Incoming,
    mut parser: sse::Parser,
    watch: &Watch,
    park: &Park,
) -> bool {
    loop {
        let blocks = match incoming.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => parser.push(&data).unwrap_or_default(),
                Err(_) => continue,
            },
            Some(Err(_)) | None => return false,
        };
        for block in blocks {
            let Some(event) = block.event else { continue };
            let Ok(mut value) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(seal) = &watch.seal {
                seal.seal(&mut value);
            }
            if park.message(&value).await {
                return true;
            }
        }
    }
}

async fn rewrite_event(watch: &mut Watch, mut event: sse::Event) -> Option<Bytes> {
    let mut value: Value = serde_json::from_str(&event.data).ok()?;
    if !watch.apply_value(&mut value).await {
        return None;
    }
    event.data = serde_json::to_string(&value).ok()?;
    Some(event.to_bytes())
}

/// A modern-only backend's JSON reply to a legacy client, as a stream: each `input_required` round
/// becomes server requests to the client, then the call is retried with its answers; the last
/// reply ends the stream.
pub(super) async fn relay_questions(incoming: Incoming, mut watch: Watch, tx: Sender) {
    let collected = tokio::select! {
        collected = Limited::new(incoming, REWRITE_LIMIT).collect() => collected,
        () = tx.closed() => return,
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let _ = tx.send(Err(error)).await;
            return;
        }
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        let _ = tx.send(Ok(message_event(&bytes))).await;
        return;
    };
    if let Some(mut questions) = watch.questions.take() {
        while broker::rounds::input_required_of(&value).is_some() {
            let send = |message: Value| {
                let tx = tx.clone();
                async move {
                    let bytes = serde_json::to_vec(&message).unwrap_or_default();
                    tx.send(Ok(message_event(&bytes))).await.is_ok()
                }
            };
            let gone = || tx.is_closed();
            value = match questions.round(&value, send, gone).await {
                Ok(next) => next,
                Err(failed) => failed,
            };
        }
    }
    watch.apply_value(&mut value).await;
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let _ = tx.send(Ok(message_event(&bytes))).await;
}

/// One SSE `message` event carrying `data`.
fn message_event(data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

pub(super) async fn relay_json(incoming: Incoming, mut watch: Watch, tx: Sender) {
    let collected = tokio::select! {
        collected = Limited::new(incoming, REWRITE_LIMIT).collect() => collected,
        () = tx.closed() => {
            watch.abandoned();
            return;
        }
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let _ = tx.send(Err(error)).await;
            return;
        }
    };
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            if watch.apply_value(&mut value).await {
                serde_json::to_vec(&value).map(Bytes::from).unwrap_or(bytes)
            } else {
                bytes
            }
        }
        Err(_) => bytes,
    };
    let _ = tx.send(Ok(out)).await;
}
