//! The front door: health and readiness, the JWKS of the assertion keys, Prometheus metrics, the
//! MCP path, and plain pass-through for every other path (OAuth metadata and the like reach the
//! backend untouched). A path that is another spelling of one of these is refused first
//! ([`crate::edge::path`]), and no response tells the client the upstream's address (`Location`).
//!
//! Every request runs in one `request` span whose fields the handlers fill in as they learn them
//! (tool, surface, work session, project, resolution path, principal hash, upstream status), and
//! ends with one `request` event carrying the status and timings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::backend::body::{ProxyBody, full};
use crate::backend::headers::{self, Origin};
use crate::backend::outbound::UpstreamRequest;
use crate::edge::App;
use crate::edge::identify;
use crate::edge::limits::RequestBody;
use crate::edge::path::Decision;
use crate::mcp::dispatch;
use crate::mcp::errors::{ProxyError, json_response};
use crate::mcp::relay::{self, Watch};
use crate::metrics::{self, Rpc, StoreOp};

/// Where the public keys that verify assertions (EdDSA) are published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// Serves one request.
pub async fn serve(
    app: Arc<App>,
    request: Request<RequestBody>,
    client_ip: Option<std::net::IpAddr>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "request",
        %method,
        path,
        rpc = Empty,
        tool = Empty,
        surface = Empty,
        work_session = Empty,
        project = Empty,
        resolution = Empty,
        principal = Empty,
        upstream_status = Empty,
        latency_ms = Empty,
        traceparent = Empty,
        // The server span of traces (crate::telemetry), named and filled per the MCP conventions
        // once the message is read (mcp::dispatch).
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
        mcp.method.name = Empty,
        mcp.session.id = Empty,
        mcp.protocol.version = Empty,
        mcp.resource.uri = Empty,
        jsonrpc.request.id = Empty,
        gen_ai.tool.name = Empty,
        gen_ai.operation.name = Empty,
        http.response.status_code = Empty,
    );
    if let Some(traceparent) = traceparent(request.headers()) {
        span.record("traceparent", traceparent);
    }
    // Only with traces on: the logs keep their fields.
    if crate::telemetry::on() {
        span.record("otel.name", format!("{method} {path}"));
        span.record("otel.kind", "server");
        if let Some(parent) = crate::telemetry::propagation::from_headers(request.headers()) {
            crate::telemetry::propagation::continue_trace(&span, parent);
        }
    }
    // Before anything reads or copies the headers: an identity header a peer may not set is gone
    // from every path and request kind (the MCP path, its initialize, pass-through). The broker's
    // own headers are replaced in `outbound::UpstreamRequest::forwarded`, on every path too.
    let mut request = request;
    app.identities
        .strip_untrusted(request.headers_mut(), client_ip);
    let guard = request.body().guard();
    let handling = async move {
        let owned = ["/healthz", "/readyz", JWKS_PATH, METRICS_PATH];
        let result = match crate::edge::path::decide(&path, &owned, app.settings.mcp_path()) {
            Decision::Serve => route(&app, &method, &path, request, client_ip).await,
            Decision::Redirect(to) => {
                metrics::set_method(Rpc::Passthrough);
                Ok(redirect(&to, request.uri().query()))
            }
            Decision::Refuse(to) => {
                metrics::set_method(Rpc::Passthrough);
                Err(ProxyError::AmbiguousPath(to))
            }
        };
        // A body cut by its deadline or the in-flight budget: the handler only saw a read error.
        let result = match guard.verdict() {
            Some(cut) => Err(cut),
            None => result,
        };
        let mut response = result.unwrap_or_else(|error| {
            tracing::info!(%error, "refused");
            error.into_response()
        });
        headers::hide_upstream_address(response.headers_mut(), app.upstream.authority());
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        let upstream = metrics::upstream_time();
        if crate::telemetry::on() {
            let span = Span::current();
            span.record("http.response.status_code", i64::from(status));
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
        if let Some(method) = metrics::current_mcp_method() {
            app.metrics.operation(method, elapsed);
        }
        if let Some(rpc) = metrics::current_method() {
            app.metrics.request(rpc, status);
            if rpc == Rpc::ToolsCall {
                app.metrics.broker_overhead(elapsed, upstream);
            }
        }
        Span::current().record("latency_ms", millis(elapsed));
        tracing::info!(status, upstream_ms = millis(upstream), "request");
        response
    };
    metrics::in_request(handling.instrument(span)).await
}

/// Routes a request whose path is served as written.
async fn route(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    request: Request<RequestBody>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match (method, path) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => Ok(ready(app).await),
        (&Method::GET, JWKS_PATH) => Ok(json_response(StatusCode::OK, &app.keys.jwks())),
        (&Method::GET, METRICS_PATH) => Ok(metrics_response(app)),
        (_, p) if p == app.settings.mcp_path() => {
            metrics::set_method(match *method {
                Method::GET => Rpc::Get,
                Method::DELETE => Rpc::Delete,
                _ => Rpc::Other,
            });
            let principal = match identify::who(app, request.headers(), client_ip).await {
                Ok(principal) => principal,
                Err(error @ ProxyError::Refused(_)) => {
                    return Ok(identify::unauthorized(app, error).await);
                }
                Err(error) => return Err(error),
            };
            dispatch::handle(&app.mcp, request, principal, client_ip).await
        }
        _ => {
            metrics::set_method(Rpc::Passthrough);
            pass(app, request, client_ip).await
        }
    }
}

/// The broker's own redirect to the canonical spelling of the MCP path (nothing was forwarded).
fn redirect(to: &str, query: Option<&str>) -> Response<ProxyBody> {
    let target = match query {
        Some(query) => format!("{to}?{query}"),
        None => to.to_owned(),
    };
    let mut response = Response::new(crate::backend::body::empty());
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(value) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Milliseconds, to the microsecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The W3C `traceparent` header, when it looks like one (hex digits and dashes, bounded): logged as
/// is, and forwarded to the backend with the other end-to-end headers.
fn traceparent(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let plausible = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    plausible.then_some(value)
}

fn metrics_response(app: &App) -> Response<ProxyBody> {
    let mut response = Response::new(full(app.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// The health endpoints' answers: plain text, said so (the admin API's `/healthz` answers JSON, like
/// the rest of that API).
fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn ready(app: &App) -> Response<ProxyBody> {
    match app.metrics.store(StoreOp::Ping, app.store.ping()).await {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the session store is unreachable\n",
            )
        }
    }
}

/// Any other path: a plain reverse proxy.
async fn pass(
    app: &App,
    request: Request<RequestBody>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, body) = request.into_parts();
    let bytes = crate::backend::body::read_capped(body, app.settings.max_body)
        .await
        .map_err(|e| match e {
            crate::backend::body::ReadError::TooLarge => {
                ProxyError::BodyTooLarge(app.settings.max_body)
            }
            crate::backend::body::ReadError::Unreadable => ProxyError::BodyUnreadable,
        })?;
    let origin = Origin {
        client_ip,
        host: parts.headers.get(http::header::HOST).cloned(),
    };
    let upstream = UpstreamRequest::forwarded(&parts, &origin, app.upstream.authority(), bytes)
        .build(&app.upstream)?;
    let response = app.metrics.upstream(app.upstream.send(upstream)).await?;
    Span::current().record("upstream_status", response.status().as_u16());
    let mut relayed = relay::relay(response, Watch::default());
    crate::mcp::forward::client_session_header(&mut relayed, &parts.headers);
    Ok(relayed)
}
