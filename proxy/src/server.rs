//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on one listener, a header read
//! timeout against slow clients, and a graceful shutdown that lets in-flight requests finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
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

/// Serves until `shutdown` completes, then drains for at most the configured drain timeout.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = connection_builder();
    let drain = app.settings.drain_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move {
                if header_bytes(request.headers()) > MAX_HEADER_BYTES {
                    return Ok(ProxyError::HeadersTooLarge(MAX_HEADER_BYTES).into_response());
                }
                Ok::<_, std::convert::Infallible>(
                    routes::serve(app, request, Some(peer.ip())).await,
                )
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %crate::upstream::error_chain(error.as_ref()), "connection ended with an error");
            }
        });
    }
    // Stop accepting at once: a listening socket left open during the drain would let the kernel
    // queue connections nobody serves.
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain timeout: closing the remaining connections");
    }
}
