//! What keeps a web page the operator happens to visit from driving the admin API: a browser can
//! reach `127.0.0.1:9091` too, and a page can send it a cross-site POST or, by DNS rebinding, read
//! its answers. Checked before the token and the endpoints, from the request head alone:
//! - without an admin token, the `Host` must be a loopback name (`localhost`, `127.x.x.x`,
//!   `[::1]`, any port): a rebound name (`attacker.example`) is refused;
//! - an `Origin`, when sent, must be the admin API's own (`http://<its Host>`): a browser sends one
//!   on every cross-site POST, and on every request a page's script makes;
//! - every POST declares `Content-Type: application/json`, which a page cannot send cross-site
//!   without a CORS preflight, which the admin API never answers.

use std::net::IpAddr;

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

/// Why the request was refused: its status and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub message: &'static str,
}

fn refuse(status: StatusCode, message: &'static str) -> Result<(), Refusal> {
    Err(Refusal { status, message })
}

/// Checks a request head; `token` says whether an admin token is configured.
pub(super) fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    token: bool,
) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(value), None) => value.to_str().ok(),
        (None, _) => uri.authority().map(|a| a.as_str()),
        (Some(_), Some(_)) => None,
    };
    let host = host.map(str::trim).filter(|h| !h.is_empty());
    if !token && !host.is_some_and(is_loopback_host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "without an admin token the admin API answers only Host: 127.0.0.1, localhost or \
             [::1]; connect to it by a loopback name",
        );
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let own = origins.next().is_none()
            && origin
                .to_str()
                .ok()
                .zip(host)
                .is_some_and(|(origin, host)| is_own_origin(origin, host));
        if !own {
            return refuse(
                StatusCode::FORBIDDEN,
                "the admin API answers no other site's pages: send no Origin, or its own",
            );
        }
    }
    if method == Method::POST && !is_json(headers) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "admin POSTs must carry Content-Type: application/json",
        );
    }
    Ok(())
}

/// `localhost`, an IPv4 address in 127.0.0.0/8 or `[::1]`, each with an optional port. Not
/// `*.localhost`: whether that resolves to loopback is up to the resolver.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || is_port(port) => inside,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    text.strip_prefix(':')
        .unwrap_or(text)
        .parse::<u16>()
        .is_ok()
}

/// Whether `origin` is `http://<host>` or `https://<host>` (the scheme and name compared without
/// case, as browsers send them lowercased).
fn is_own_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && authority.eq_ignore_ascii_case(host)
}

fn is_json(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:9091",
            "127.8.9.1:1",
            "localhost",
            "LOCALHOST:9091",
            "[::1]",
            "[::1]:9091",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:9091",
            "localhost.attacker.example",
            "app.localhost",
            "10.0.0.1:9091",
            "0.0.0.0:9091",
            "[::2]:9091",
            "[::1]x",
            "127.0.0.1:port",
            "127.0.0.1:99999",
            "::1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    /// (method, headers, token configured, outcome)
    type Case<'a> = (
        &'a Method,
        Vec<(&'static str, &'static str)>,
        bool,
        Result<(), StatusCode>,
    );

    #[test]
    fn every_decision() {
        let get = Method::GET;
        let post = Method::POST;
        let uri: Uri = "/sessions".parse().expect("uri");
        let json = ("content-type", "application/json");
        let local = ("host", "127.0.0.1:9091");
        let ok = Ok(());
        let forbidden = Err(StatusCode::FORBIDDEN);
        let media = Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let cases: Vec<Case> = vec![
            (&get, vec![local], false, ok),
            (&get, vec![("host", "localhost:9091")], false, ok),
            (
                &get,
                vec![("host", "rebound.attacker.example:9091")],
                false,
                forbidden,
            ),
            (
                &get,
                vec![("host", "rebound.attacker.example:9091")],
                true,
                ok,
            ),
            (&get, vec![], false, forbidden),
            (&get, vec![local, local], false, forbidden),
            (
                &get,
                vec![local, ("origin", "http://127.0.0.1:9091")],
                false,
                ok,
            ),
            (
                &get,
                vec![local, ("origin", "https://127.0.0.1:9091")],
                false,
                ok,
            ),
            (
                &get,
                vec![local, ("origin", "http://evil.example")],
                false,
                forbidden,
            ),
            (
                &get,
                vec![local, ("origin", "http://127.0.0.1:8080")],
                false,
                forbidden,
            ),
            (&get, vec![local, ("origin", "null")], false, forbidden),
            (
                &get,
                vec![
                    ("host", "broker.internal:9091"),
                    ("origin", "http://evil.example"),
                ],
                true,
                forbidden,
            ),
            (
                &get,
                vec![
                    ("host", "broker.internal:9091"),
                    ("origin", "http://broker.internal:9091"),
                ],
                true,
                ok,
            ),
            (&post, vec![local, json], false, ok),
            (
                &post,
                vec![local, ("content-type", "application/json; charset=utf-8")],
                false,
                ok,
            ),
            (
                &post,
                vec![local, ("content-type", "Application/JSON")],
                false,
                ok,
            ),
            (
                &post,
                vec![local, ("content-type", "text/plain")],
                false,
                media,
            ),
            (
                &post,
                vec![local, ("content-type", "application/x-www-form-urlencoded")],
                false,
                media,
            ),
            (
                &post,
                vec![local, ("content-type", "application/jsonx")],
                false,
                media,
            ),
            (&post, vec![local, json, json], false, media),
            (&post, vec![local], false, media),
            (
                &post,
                vec![local, ("origin", "http://evil.example"), json],
                false,
                forbidden,
            ),
            (
                &post,
                vec![("host", "evil.example"), json],
                false,
                forbidden,
            ),
        ];
        for (i, (method, pairs, token, outcome)) in cases.into_iter().enumerate() {
            let got = check(method, &uri, &head(&pairs), token).map_err(|r| r.status);
            assert_eq!(got, outcome, "case {i}: {method} {pairs:?} token={token}");
        }
    }

    #[test]
    fn an_http2_request_names_its_host_in_the_uri() {
        let uri: Uri = "http://[::1]:9091/sessions".parse().expect("uri");
        assert!(check(&Method::GET, &uri, &HeaderMap::new(), false).is_ok());
        let uri: Uri = "http://evil.example/sessions".parse().expect("uri");
        assert!(check(&Method::GET, &uri, &HeaderMap::new(), false).is_err());
    }
}
