//! Response bodies: the backend's body passed through as is, a body the broker wrote, or a channel
//! fed by a task that rewrites a stream event by event.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// Wraps any body (the backend's `Incoming`) without touching its bytes.
pub fn pass<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Why a request body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    TooLarge,
    Unreadable,
}

/// How much of an oversized body is read and thrown away before answering 413, and for how long:
/// a client still sending when the connection closes sees a reset instead of the 413.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a request body of at most `limit` bytes. A larger one is drained (bounded in bytes and time)
/// so the client can read the 413 that follows.
pub async fn read_capped<B>(mut body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
{
    // A declared length (already charged to the in-flight budget) sizes the buffer once: growing it
    // by doubling would hold up to twice the body, and leave the allocator fragments.
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut collected = bytes::BytesMut::with_capacity(declared.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > limit {
            let mut drained = collected.len() + data.len();
            let drain = async {
                while drained < DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(ReadError::TooLarge);
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// A body fed through a channel; the sender side belongs to a relay task.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

/// A channel body and its sender.
pub fn channel(capacity: usize) -> (mpsc::Sender<Result<Bytes, BoxError>>, ProxyBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed_unsync())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A response with no body.
pub fn empty_response(status: http::StatusCode) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}
