//! Accepting connections, for the main and the admin listener alike: HTTP/1.1 and HTTP/2 (prior
//! knowledge), a header read timeout against slow clients, request bodies under [`crate::edge::limits`],
//! a bound on open connections, and a graceful shutdown that stops accepting at once and lets
//! in-flight requests finish within a bound.
//!
//! Past `max_connections` a new connection is still accepted, and answered 503 with `Retry-After`
//! (one request, then closed, within a few seconds; at most [`REFUSING`] such at once, and past that
//! it is closed unanswered). A failing `accept` (out of file descriptors, say) never spins: the loop
//! backs off, doubling up to a second, and logs once until accepting works again.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use http::{Request, Response};

use crate::backend::body::ProxyBody;
use crate::edge::App;
use crate::edge::limits::{BodyLimits, Inflight, RequestBody};
use crate::edge::routes;
use crate::mcp::errors::ProxyError;

/// Largest total size of a request's headers (names and values). hyper's read buffer bounds it only
/// roughly (a keep-alive connection's grown buffer let 100 KB through), so it is checked exactly here.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Connections past the limit being answered 503 at once; more are closed unanswered.
pub const REFUSING: usize = 64;
/// How long a connection past the limit may take to send its request and read the 503.
const REFUSE_TIME: Duration = Duration::from_secs(5);
/// How long a client has to send its request headers (and, before them, its first bytes).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two failed `accept` calls.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// What one listener lets its clients hold.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub body: BodyLimits,
    pub max_connections: usize,
}

impl ListenerLimits {
    /// The main listener's, from the settings.
    pub fn main(settings: &crate::config::Settings) -> Self {
        Self {
            body: BodyLimits {
                timeout: settings.body_timeout,
                inflight: Some(Arc::new(Inflight::new(settings.max_inflight_body_bytes))),
                per_request: settings.max_body,
            },
            max_connections: settings.max_connections,
        }
    }
}

/// How every listener of the broker (main and admin) serves a connection: HTTP/1.1 or HTTP/2, a
/// 10 s header read timeout against slow clients, headers bounded.
pub fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder.http2().max_header_list_size(64 * 1024);
    builder
}

/// Serves the main listener until `shutdown` completes, then drains for at most `--drain-timeout`.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let drain = app.settings.drain_timeout;
    let limits = ListenerLimits::main(&app.settings);
    accept_until(
        listener,
        shutdown,
        drain,
        "main",
        limits,
        move |request, peer| {
            let app = app.clone();
            async move {
                if header_bytes(request.headers()) > MAX_HEADER_BYTES {
                    return ProxyError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
                }
                routes::serve(app, request, Some(peer.ip())).await
            }
        },
    )
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
    limits: ListenerLimits,
    handle: H,
) where
    H: Fn(Request<RequestBody>, SocketAddr) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = connection_builder();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let mut accepting = Accepting::new(name);
    let mut full = false;
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    accepting.worked();
                    pair
                }
                Err(error) => {
                    let pause = accepting.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut stop => break,
                    }
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if !full {
                full = true;
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    "connection limit reached: new connections get 503 until some close"
                );
            }
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(refuse(stream, slot));
            }
            continue;
        };
        if full && open.available_permits() > limits.max_connections / 10 {
            full = false;
            tracing::info!(listener = name, "below the connection limit again");
        }
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let body_limits = limits.body.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let reply = handle(request.map(|body| body_limits.wrap(body)), peer);
            async move { Ok::<_, Infallible>(reply.await) }
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's header timeout starts once it knows the protocol: until then it would wait
            // for a silent client forever, holding a connection of the limit.
            if !matches!(
                tokio::time::timeout(HEADER_TIMEOUT, request_begins(&stream)).await,
                Ok(true)
            ) {
                return;
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(listener = name, error = %crate::backend::upstream::error_chain(error.as_ref()), "connection ended with an error");
            }
            drop(permit);
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

/// Waits until a client has sent enough to tell HTTP/1 from HTTP/2 (the bytes stay in the socket for
/// hyper); `false` when it closed first.
async fn request_begins(stream: &TcpStream) -> bool {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut start = [0u8; 24];
    loop {
        match stream.peek(&mut start).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if n >= H2_PREFACE.len() || start[..n] != H2_PREFACE[..n] => return true,
            // Part of what may be the HTTP/2 preface: more is on its way (peek would not wait).
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Answers a connection past the limit: 503 with `Retry-After` to its request, then closes it.
async fn refuse(stream: TcpStream, _slot: OwnedSemaphorePermit) {
    let begun = tokio::time::timeout(Duration::from_secs(2), request_begins(&stream)).await;
    if !matches!(begun, Ok(true)) {
        return;
    }
    let mut builder = connection_builder();
    builder
        .http1()
        .keep_alive(false)
        .header_read_timeout(Duration::from_secs(2));
    let service = service_fn(|_request| async {
        Ok::<_, Infallible>(
            ProxyError::Overloaded("too many connections are open; retry shortly").into_response(),
        )
    });
    let _ = tokio::time::timeout(
        REFUSE_TIME,
        builder.serve_connection(TokioIo::new(stream), service),
    )
    .await;
}

/// The state of `accept`: failures back off (10 ms doubling to [`MAX_ACCEPT_BACKOFF`]) and are
/// logged once per outage. At the descriptor limit accepts flap (a connection closes, one accept
/// works, the next fails), so an outage ends only when accepts have kept working for
/// [`RECOVERED_AFTER`]: one WARN when it starts, one INFO when it is over.
struct Accepting {
    listener: &'static str,
    backoff: Option<Duration>,
    /// An outage was logged and is not over.
    in_outage: bool,
    /// When accepts started working again during an outage.
    working_since: Option<std::time::Instant>,
}

/// How long accepts must keep working before an outage counts as over.
const RECOVERED_AFTER: Duration = Duration::from_secs(1);

impl Accepting {
    fn new(listener: &'static str) -> Self {
        Self {
            listener,
            backoff: None,
            in_outage: false,
            working_since: None,
        }
    }

    /// How long to pause after this failure.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.working_since = None;
        if !self.in_outage {
            self.in_outage = true;
            tracing::warn!(listener = self.listener, %error, "accept failed (out of file descriptors?); backing off, logged again when accepting works");
        }
        let pause = match self.backoff {
            None => Duration::from_millis(10),
            Some(previous) => (previous * 2).min(MAX_ACCEPT_BACKOFF),
        };
        self.backoff = Some(pause);
        pause
    }

    fn worked(&mut self) {
        self.backoff = None;
        if !self.in_outage {
            return;
        }
        let since = *self
            .working_since
            .get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= RECOVERED_AFTER {
            self.in_outage = false;
            self.working_since = None;
            tracing::info!(listener = self.listener, "accepting connections again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_and_recover() {
        let mut accepting = Accepting::new("test");
        let error = std::io::Error::other("EMFILE");
        let pauses: Vec<u128> = (0..10)
            .map(|_| accepting.failed(&error).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        accepting.worked();
        assert_eq!(accepting.failed(&error).as_millis(), 10);
        assert!(
            accepting.in_outage,
            "a failure right after one working accept continues the outage (no second WARN)"
        );
        accepting.working_since = Some(std::time::Instant::now() - RECOVERED_AFTER);
        accepting.worked();
        assert!(!accepting.in_outage, "accepts that kept working end it");
    }
}
