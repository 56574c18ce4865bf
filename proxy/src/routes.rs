//! The front door: health and readiness, the JWKS of the assertion keys, the MCP path, and plain pass-through for every other path
//! (OAuth metadata and the like reach the backend untouched). One log line per request.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::{ProxyBody, full};
use crate::errors::{ProxyError, json_response};
use crate::headers::{self, Origin};
use crate::mcp_path;
use crate::relay::{self, Watch};

/// Where the public keys that verify assertions (EdDSA) are published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Serves one request.
pub async fn serve(
    app: Arc<App>,
    request: Request<Incoming>,
    client_ip: Option<std::net::IpAddr>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => Ok(ready(&app).await),
        (&Method::GET, JWKS_PATH) => Ok(json_response(StatusCode::OK, &app.keys.jwks())),
        (_, p) if p == app.settings.mcp_path() => mcp_path::handle(&app, request, client_ip).await,
        _ => pass(&app, request, client_ip).await,
    };
    let response = result.unwrap_or_else(|error| {
        tracing::info!(%error, "refused");
        error.into_response()
    });
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

async fn ready(app: &App) -> Response<ProxyBody> {
    match app.store.ping().await {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"ready": false, "reason": "the session store is unreachable"}),
            )
        }
    }
}

/// Any other path: a plain reverse proxy.
async fn pass(
    app: &App,
    request: Request<Incoming>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, app.settings.max_body)
        .collect()
        .await
        .map_err(|_| ProxyError::BodyTooLarge(app.settings.max_body))?
        .to_bytes();
    let origin = Origin {
        client_ip,
        host: parts.headers.get(http::header::HOST).cloned(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = Request::builder()
        .method(parts.method.clone())
        .uri(app.upstream.uri(path)?)
        .body(Full::new(bytes))
        .map_err(|_| ProxyError::BodyUnreadable)?;
    *upstream.headers_mut() =
        headers::toward_upstream(&parts.headers, app.upstream.authority(), &origin);
    let response = app.upstream.send(upstream).await?;
    let mut relayed = relay::relay(response, Watch::default());
    crate::forward::client_session_header(&mut relayed, &parts.headers);
    Ok(relayed)
}
