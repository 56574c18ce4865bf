//! Accepting connections, for the main and the admin listener alike: HTTP/1.1 and HTTP/2 (prior
//! knowledge), a header read timeout against slow clients, and a graceful shutdown that stops
//! accepting at once and lets in-flight requests finish within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::ProxyBody;
use crate::errors::ProxyError;
use crate::routes;

/// Largest total size of a request's headers (names and values). hyper's read buffer bounds it only
/// roughly (a keep-alive connection's grown buffer let 100 KB through), so it is checked exactly here.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// How every listener of the broker (main and admin) serves a connection: HTTP/1.1 or HTTP/2, a
/// 10 s header read timeout against slow clients, headers bounded.
pub fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(MAX_HEADER_BYTES);
    builder.http2().max_header_list_size(64 * 1024);
    builder
}

/// Serves the main listener until `shutdown` completes, then drains for at most `--drain-timeout`.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let drain = app.settings.drain_timeout;
    accept_until(listener, shutdown, drain, "main", move |request, peer| {
        let app = app.clone();
        async move {
            if header_bytes(request.headers()) > MAX_HEADER_BYTES {
                return ProxyError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
            }
            routes::serve(app, request, Some(peer.ip())).await
        }
    })
    .await;
}

/// The accept loop of every listener: serves each connection with `handle` until `stop` completes,
/// then stops accepting at once (a listening socket left open during the drain would let the kernel
/// queue connections nobody serves) and lets open connections finish for at most `drain`.
pub async fn accept_until<H, R>(
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    drain: Duration,
    name: &'static str,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = connection_builder();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let service = service_fn(move |request| {
            let reply = handle(request, peer);
            async move { Ok::<_, Infallible>(reply.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(listener = name, error = %crate::upstream::error_chain(error.as_ref()), "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        listener = name,
        "shutting down: draining in-flight requests"
    );
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            ?drain,
            "drain timeout: closing the remaining connections"
        );
    }
}
