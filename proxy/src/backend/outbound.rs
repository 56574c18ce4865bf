//! The one outbound request builder: every request the broker sends the backend is made by an
//! [`UpstreamRequest`], so what is stripped and what is set is decided here, once.
//!
//! Stripped from a client's request ([`UpstreamRequest::forwarded`]): hop-by-hop headers (and those
//! its `Connection` header names), `Host` and `Content-Length` (set again for the backend), and
//! every header the broker owns (`Mcp-Session-Id`, `X-MCP-Project`, `X-MCP-Work-Session`,
//! `Mcp-Param-Work-Session`), so a client can never choose a backend session or claim a project.
//! An identity header from an untrusted peer (principal source `header`) is stripped at the edge
//! before the request is read (`edge/identify.rs`), as it depends on the peer.
//!
//! Set, by the broker only: `Host` (the upstream's authority) and `X-Forwarded-*` on forwarded
//! requests; the backend session ([`UpstreamRequest::session`]), the protocol version
//! ([`UpstreamRequest::version`]), the project and the signed work-session assertion
//! ([`UpstreamRequest::trusted`]), and for a backend that speaks only 2026-07-28 the modern envelope
//! ([`UpstreamRequest::modernized`]). The broker's own messages ([`UpstreamRequest::own_json`],
//! [`UpstreamRequest::own`], [`session_headers`]) carry only the client's credential, if any, and
//! what these set.

use broker::ids::BackendSessionId;
use broker::modern;
use broker::session::WorkSession;
use broker::tokens::AssertionClaims;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use crate::backend::Backend;
use crate::backend::headers::{
    MCP_METHOD, MCP_NAME, MCP_PARAM_WORK_SESSION, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, Origin,
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_MCP_PROJECT, X_MCP_WORK_SESSION,
    drop_hop_by_hop,
};
use crate::backend::upstream::{Upstream, UpstreamError};

/// One request on its way to the backend.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    method: Method,
    /// Path and query on the upstream.
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl UpstreamRequest {
    /// A client's request, forwarded with its method, path and body; its headers made fit for the
    /// backend (see the module doc). `authority`: the upstream's `Host`.
    pub fn forwarded(parts: &Parts, origin: &Origin, authority: &HeaderValue, body: Bytes) -> Self {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        Self {
            method: parts.method.clone(),
            path,
            headers: toward_upstream(&parts.headers, authority, origin),
            body,
        }
    }

    /// A JSON-RPC message of the broker's own, POSTed to `path`; `base`: the client's headers it
    /// keeps (its credential), if any.
    pub fn own_json(path: &str, base: HeaderMap, message: &Value) -> Result<Self, UpstreamError> {
        let body =
            serde_json::to_vec(message).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let mut request = Self::own(Method::POST, path, base);
        request.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        request.headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        request.body = Bytes::from(body);
        Ok(request)
    }

    /// A bodiless request of the broker's own (a backend session's GET stream, its DELETE).
    /// `base`: headers the broker built ([`session_headers`], or the client's credential alone).
    pub fn own(method: Method, path: &str, mut base: HeaderMap) -> Self {
        if method == Method::GET {
            base.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        Self {
            method,
            path: path.to_owned(),
            headers: base,
            body: Bytes::new(),
        }
    }

    /// On `session` (`None`: on none, the header stays unset).
    pub fn session(mut self, session: Option<&BackendSessionId>) -> Self {
        self.headers.remove(MCP_SESSION_ID);
        if let Some(value) = session.and_then(|s| HeaderValue::from_str(s.as_str()).ok()) {
            self.headers.insert(MCP_SESSION_ID, value);
        }
        self
    }

    /// Speaking `version` (`None`: the request's own, if any, stays).
    pub fn version(mut self, version: Option<&str>) -> Self {
        if let Some(value) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
            self.headers.insert(MCP_PROTOCOL_VERSION, value);
        }
        self
    }

    /// Tells the backend the project of `work` and signs the assertion of it (`via`: why the broker
    /// sends it, when it is the broker's own request). With no work session neither is set.
    pub fn trusted(
        mut self,
        backend: &Backend,
        work: Option<&WorkSession>,
        via: Option<&str>,
    ) -> Self {
        set_trusted(backend, &mut self.headers, work, via);
        self
    }

    /// A legacy client's request on its way to a backend that speaks only 2026-07-28 (the client's
    /// `initialize` params `ini`): the body gains the `_meta` envelope, the headers the version,
    /// method and name, and it goes on no backend session. Unchanged when it is not a message
    /// that has a modern form.
    pub fn modernized(mut self, ini: &Value) -> Self {
        let Ok(mut message) = serde_json::from_slice::<Value>(&self.body) else {
            return self;
        };
        let Some((method, name)) = modern::modernize(&mut message, ini) else {
            return self;
        };
        let Ok(body) = serde_json::to_vec(&message) else {
            return self;
        };
        self.headers
            .insert(MCP_PROTOCOL_VERSION, HeaderValue::from_static("2026-07-28"));
        if let Ok(value) = HeaderValue::from_str(&method) {
            self.headers.insert(MCP_METHOD, value);
        }
        if let Some(value) = name.and_then(|n| HeaderValue::from_str(&n).ok()) {
            self.headers.insert(MCP_NAME, value);
        }
        self.headers.remove(MCP_SESSION_ID);
        self.body = Bytes::from(body);
        self
    }

    /// The body as it will be sent.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The headers as they will be sent (before `Host`).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The HTTP request for `upstream` (its URI and `Host`). With traces on, it carries its client
    /// span ([`crate::backend::upstream::ClientSpan`], ended by [`Upstream::send`]) and that
    /// span's trace context, in the headers and in `params._meta`.
    pub fn build(mut self, upstream: &Upstream) -> Result<Request<Full<Bytes>>, UpstreamError> {
        self.headers
            .insert(header::HOST, upstream.authority().clone());
        let span = crate::telemetry::propagation::outbound(&mut self.body, &mut self.headers);
        let mut request = Request::builder()
            .method(self.method)
            .uri(upstream.uri(&self.path)?)
            .body(Full::new(self.body))
            .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        *request.headers_mut() = self.headers;
        if let Some(span) = span {
            request
                .extensions_mut()
                .insert(crate::backend::upstream::ClientSpan(span));
        }
        Ok(request)
    }

    /// Builds and sends it ([`Upstream::send`]).
    pub async fn send(self, upstream: &Upstream) -> Result<Response<Incoming>, UpstreamError> {
        upstream.send(self.build(upstream)?).await
    }
}

/// POSTs one JSON-RPC message of the broker's own to `path` with `headers` (the client's
/// credential alone, or [`session_headers`]).
pub async fn post_json(
    upstream: &Upstream,
    path: &str,
    headers: HeaderMap,
    message: &Value,
) -> Result<Response<Incoming>, UpstreamError> {
    UpstreamRequest::own_json(path, headers, message)?
        .send(upstream)
        .await
}

/// The headers of the broker's own requests on `session` speaking `version`, kept by whoever sends
/// several (a courier, a cancellation hook, an operator session): `base` (the client's credential)
/// plus the session and the version, set as [`UpstreamRequest::session`] and
/// [`UpstreamRequest::version`] set them.
pub fn session_headers(
    base: HeaderMap,
    session: Option<&BackendSessionId>,
    version: Option<&str>,
) -> HeaderMap {
    UpstreamRequest::own(Method::POST, "/", base)
        .session(session)
        .version(version)
        .headers
}

/// Headers only the broker sets: a copy from anyone else is removed before it sets its own.
const BROKER_OWNED: [header::HeaderName; 4] = [
    MCP_SESSION_ID,
    X_MCP_PROJECT,
    X_MCP_WORK_SESSION,
    MCP_PARAM_WORK_SESSION,
];

/// The client's headers, made fit for the backend (see the module doc).
fn toward_upstream(
    client: &HeaderMap,
    upstream_authority: &HeaderValue,
    origin: &Origin,
) -> HeaderMap {
    let mut headers = client.clone();
    drop_hop_by_hop(&mut headers);
    for name in [header::HOST, header::CONTENT_LENGTH]
        .into_iter()
        .chain(BROKER_OWNED)
    {
        headers.remove(name);
    }
    headers.insert(header::HOST, upstream_authority.clone());
    if let Some(ip) = origin.client_ip {
        let chain = match client.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = &origin.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    headers
}

/// Sets `X-MCP-Project` and the signed `X-MCP-Work-Session` assertion for a bound work session,
/// after removing any copy; with no work session neither is set.
fn set_trusted(
    backend: &Backend,
    headers: &mut HeaderMap,
    work: Option<&WorkSession>,
    via: Option<&str>,
) {
    headers.remove(X_MCP_PROJECT);
    headers.remove(X_MCP_WORK_SESSION);
    let Some(work) = work else { return };
    let claims = AssertionClaims {
        sub: work.principal.clone(),
        ws: work.id.clone(),
        surface: work.surface.clone(),
        project: work.project.clone(),
        via: via.map(str::to_owned),
    };
    match backend
        .assertions
        .sign(&backend.keys, &claims, backend.now_secs())
    {
        Ok(token) => {
            headers.insert(X_MCP_WORK_SESSION, header_value(&token));
        }
        Err(error) => tracing::error!(%error, "could not sign the backend assertion"),
    }
    // A project name may hold characters a header cannot: then it is percent-encoded.
    let value = HeaderValue::from_str(work.project.as_str())
        .unwrap_or_else(|_| header_value(&percent_encode(work.project.as_str())));
    headers.insert(X_MCP_PROJECT, value);
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
