//! The `Origin` check of the MCP path (DNS rebinding): a browser page may reach the broker only from
//! an allowed origin or from the loopback host; a request without `Origin` is not from a browser.

use http::header::{self, HeaderMap};

use crate::mcp::errors::ProxyError;

/// Origin present and not allowed: 403. Loopback origins are always allowed (local clients and the
/// Inspector), others only when listed in `allowed`; `*` allows all.
pub fn check(allowed: &[String], headers: &HeaderMap) -> Result<(), ProxyError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| ProxyError::ForbiddenOrigin)?;
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        || is_loopback_origin(origin)
    {
        Ok(())
    } else {
        Err(ProxyError::ForbiddenOrigin)
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    matches!(
        uri.host(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins() {
        assert!(is_loopback_origin("http://localhost:6274"));
        assert!(is_loopback_origin("http://127.0.0.1"));
        assert!(is_loopback_origin("http://[::1]:3000"));
        assert!(!is_loopback_origin("https://evil.example"));
        assert!(!is_loopback_origin("http://localhost.evil.example"));
        assert!(!is_loopback_origin("null"));
    }
}
