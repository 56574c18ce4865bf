//! Header names, and the rules for what crosses the proxy toward the client. (Toward the backend,
//! every rule is the outbound builder's: [`crate::backend::outbound`].)
//!
//! Toward the client: hop-by-hop headers dropped, and a `Location` (or `Content-Location`) naming
//! the upstream's own address made relative, so a redirect never reveals where the backend lives.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const X_MCP_PROJECT: HeaderName = HeaderName::from_static("x-mcp-project");
pub const X_MCP_WORK_SESSION: HeaderName = HeaderName::from_static("x-mcp-work-session");
pub const X_ANTHROPIC_CLIENT: HeaderName = HeaderName::from_static("x-anthropic-client");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Protocol 2026-07-28 routing headers.
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// The `work_session` argument mirrored into a header by modern clients (its `x-mcp-header`).
pub const MCP_PARAM_WORK_SESSION: HeaderName = HeaderName::from_static("mcp-param-work-session");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including the ones the `Connection` header lists.
pub fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(listed.iter()) {
        headers.remove(name);
    }
    headers.remove(HeaderName::from_static("proxy-connection"));
}

/// Where a request came from, for `X-Forwarded-*`.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_ip: Option<std::net::IpAddr>,
    pub host: Option<HeaderValue>,
}

/// The backend's response headers, made fit for the client.
pub fn toward_client(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = upstream.clone();
    drop_hop_by_hop(&mut headers);
    headers
}

/// Rewrites `Location` and `Content-Location` values that point at the upstream (`http://<upstream
/// authority>/path?query`) to the relative `/path?query`, which the client resolves against the
/// broker's own address. Other values are left alone.
pub fn hide_upstream_address(headers: &mut HeaderMap, upstream_authority: &HeaderValue) {
    let Ok(upstream) = upstream_authority.to_str() else {
        return;
    };
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let Some(relative) = relative_to(value, upstream) else {
            continue;
        };
        headers.insert(name, relative);
    }
}

/// The relative form of an absolute URI on `upstream` (compared without case, default port folded).
fn relative_to(value: &HeaderValue, upstream: &str) -> Option<HeaderValue> {
    let uri: http::Uri = value.to_str().ok()?.trim().parse().ok()?;
    let authority = uri.authority()?;
    let port = authority
        .port_u16()
        .or_else(|| (uri.scheme_str() == Some("http")).then_some(80))
        .or_else(|| (uri.scheme_str() == Some("https")).then_some(443));
    let upstream: http::uri::Authority = upstream.parse().ok()?;
    let same = authority.host().eq_ignore_ascii_case(upstream.host())
        && port == Some(upstream.port_u16().unwrap_or(80));
    if !same {
        return None;
    }
    let relative = uri.path_and_query().map_or("/", |p| p.as_str());
    let relative = if relative.is_empty() { "/" } else { relative };
    HeaderValue::from_str(relative).ok()
}

/// A header as text, when it is valid visible ASCII.
pub fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_to_the_upstream_become_relative() {
        let upstream = HeaderValue::from_static("127.0.0.1:8001");
        let rewrite = |location: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(location).expect("value"),
            );
            hide_upstream_address(&mut headers, &upstream);
            headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let table = [
            ("http://127.0.0.1:8001/mcp", "/mcp"),
            ("http://127.0.0.1:8001/mcp?x=1", "/mcp?x=1"),
            ("HTTP://127.0.0.1:8001", "/"),
            ("http://127.0.0.1:8001/", "/"),
            ("http://127.0.0.1:8002/mcp", "http://127.0.0.1:8002/mcp"),
            (
                "https://auth.example/authorize",
                "https://auth.example/authorize",
            ),
            ("/mcp", "/mcp"),
            ("mcp", "mcp"),
        ];
        for (location, expected) in table {
            assert_eq!(rewrite(location).as_deref(), Some(expected), "{location}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://backend/doc"),
        );
        hide_upstream_address(&mut headers, &HeaderValue::from_static("backend:80"));
        assert_eq!(
            headers.get(header::CONTENT_LOCATION).map(|v| v.as_bytes()),
            Some(&b"/doc"[..])
        );
    }
}
