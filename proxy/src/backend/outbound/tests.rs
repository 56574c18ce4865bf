//! The header rules, as tables: what a client sends, what the backend receives.

use std::time::Duration;

use broker::ids::{PrincipalId, Project, Surface, UpstreamId, WorkSessionId};
use broker::tokens::KeyRing;
use broker::tokens::cache::Signed;
use http::header::HeaderName;

use super::*;
use crate::config::Settings;
use crate::metrics::Metrics;

const UPSTREAM: HeaderValue = HeaderValue::from_static("127.0.0.1:8001");

fn parts(headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::post("/mcp?x=1");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn origin() -> Origin {
    Origin {
        client_ip: Some([10, 0, 0, 1].into()),
        host: Some(HeaderValue::from_static("broker.example:8080")),
    }
}

fn value<'a>(request: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn backend() -> Backend {
    let settings = Settings::new("http://127.0.0.1:8001/mcp".parse().expect("uri"));
    let keys = KeyRing::hs256("test", b"outbound-test-signing-key-0123456789").expect("keys");
    Backend {
        upstream: Upstream::new(&settings),
        upstream_id: UpstreamId::parse("a1").expect("u"),
        metrics: Metrics::new(),
        bridge: Default::default(),
        assertions: Signed::new(
            String::from("backend"),
            Duration::from_secs(120),
            Duration::from_secs(10),
        ),
        keys,
        settings,
    }
}

fn work(project: &str) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: PrincipalId::parse("ab".repeat(16)).expect("p"),
        surface: Surface::parse("claude-ai").expect("s"),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: 0,
        last_active_ms: 0,
        calls: 0,
        backends: Default::default(),
    }
}

#[test]
fn what_a_forwarded_request_keeps_and_loses() {
    // (client header, value, what the backend receives: None = removed)
    let rows: [(&str, &str, Option<&str>); 12] = [
        ("authorization", "Bearer k", Some("Bearer k")),
        (
            "accept",
            "application/json, text/event-stream",
            Some("application/json, text/event-stream"),
        ),
        ("mcp-protocol-version", "2025-06-18", Some("2025-06-18")),
        ("x-mcp-project", "someone-elses", None),
        ("x-mcp-work-session", "forged", None),
        ("mcp-session-id", "the-client-token", None),
        ("mcp-param-work-session", "handle", None),
        ("connection", "keep-alive, x-secret-hop", None),
        ("x-secret-hop", "1", None),
        ("te", "trailers", None),
        ("content-length", "12", None),
        ("host", "broker.example:8080", Some("127.0.0.1:8001")),
    ];
    let sent: Vec<(&str, &str)> = rows.iter().map(|(n, v, _)| (*n, *v)).collect();
    let request = UpstreamRequest::forwarded(&parts(&sent), &origin(), &UPSTREAM, Bytes::new());
    for (name, sent, received) in rows {
        assert_eq!(value(&request, name), received, "{name}: {sent}");
    }
    assert_eq!(value(&request, "x-forwarded-for"), Some("10.0.0.1"));
    assert_eq!(
        value(&request, "x-forwarded-host"),
        Some("broker.example:8080")
    );
    assert_eq!(value(&request, "x-forwarded-proto"), Some("http"));
    assert_eq!(request.path, "/mcp?x=1");
}

#[test]
fn a_forwarded_for_chain_grows() {
    let request = UpstreamRequest::forwarded(
        &parts(&[("x-forwarded-for", "192.0.2.7")]),
        &origin(),
        &UPSTREAM,
        Bytes::new(),
    );
    assert_eq!(
        value(&request, "x-forwarded-for"),
        Some("192.0.2.7, 10.0.0.1")
    );
}

#[test]
fn only_the_broker_sets_session_version_and_project() {
    let spoofed = parts(&[
        ("mcp-session-id", "client-chosen"),
        ("x-mcp-project", "someone-elses"),
        ("x-mcp-work-session", "forged"),
    ]);
    let backend = backend();
    let atlas = work("atlas");
    let session = BackendSessionId::parse("s-1").expect("b");
    // (session, version, work session) -> (session header, version, project)
    type Row<'a> = (
        Option<&'a BackendSessionId>,
        Option<&'a str>,
        Option<&'a WorkSession>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let rows: Vec<Row<'_>> = vec![
        (None, None, None, None, None, None),
        (Some(&session), None, None, Some("s-1"), None, None),
        (
            Some(&session),
            Some("2025-06-18"),
            Some(&atlas),
            Some("s-1"),
            Some("2025-06-18"),
            Some("atlas"),
        ),
        (
            None,
            Some("2025-03-26"),
            Some(&atlas),
            None,
            Some("2025-03-26"),
            Some("atlas"),
        ),
    ];
    for (s, v, w, want_session, want_version, want_project) in rows {
        let request = UpstreamRequest::forwarded(&spoofed, &origin(), &UPSTREAM, Bytes::new())
            .session(s)
            .version(v)
            .trusted(&backend, w, None);
        assert_eq!(value(&request, "mcp-session-id"), want_session);
        assert_eq!(value(&request, "mcp-protocol-version"), want_version);
        assert_eq!(value(&request, "x-mcp-project"), want_project);
        let assertion = value(&request, "x-mcp-work-session");
        assert_eq!(
            assertion.is_some(),
            w.is_some(),
            "an assertion exactly when bound"
        );
        assert_ne!(assertion, Some("forged"));
    }
}

#[test]
fn a_project_a_header_cannot_hold_is_percent_encoded() {
    assert_eq!(percent_encode("projet été"), "projet%20%C3%A9t%C3%A9");
    let request = UpstreamRequest::own(Method::POST, "/mcp", HeaderMap::new()).trusted(
        &backend(),
        Some(&work("atlas")),
        Some("replay"),
    );
    assert_eq!(value(&request, "x-mcp-project"), Some("atlas"));
}

#[test]
fn the_brokers_own_requests_carry_the_credential_and_what_it_sets() {
    let mut base = HeaderMap::new();
    base.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
    let message = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let post = UpstreamRequest::own_json("/mcp", base.clone(), &message).expect("json");
    assert_eq!(value(&post, "authorization"), Some("Bearer k"));
    assert_eq!(value(&post, "content-type"), Some("application/json"));
    assert_eq!(
        value(&post, "accept"),
        Some("application/json, text/event-stream")
    );
    assert_eq!(
        post.body().as_ref(),
        serde_json::to_vec(&message).expect("json").as_slice()
    );
    let session = BackendSessionId::parse("s-2").expect("b");
    let stream = UpstreamRequest::own(Method::GET, "/mcp", base.clone()).session(Some(&session));
    assert_eq!(value(&stream, "accept"), Some("text/event-stream"));
    assert_eq!(value(&stream, "mcp-session-id"), Some("s-2"));
    let kept = session_headers(base, Some(&session), Some("2025-06-18"));
    assert_eq!(
        kept.get("mcp-session-id").map(|v| v.as_bytes()),
        Some(&b"s-2"[..])
    );
    assert_eq!(
        kept.get("mcp-protocol-version").map(|v| v.as_bytes()),
        Some(&b"2025-06-18"[..])
    );
    let built = post.build(&backend().upstream).expect("request");
    assert_eq!(built.headers().get(header::HOST), Some(&UPSTREAM));
    assert_eq!(built.uri().to_string(), "http://127.0.0.1:8001/mcp");
}

#[test]
fn a_request_for_a_modern_only_backend_gains_the_envelope() {
    let ini = serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}});
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "lock", "arguments": {}}});
    let session = BackendSessionId::parse("s-3").expect("b");
    let request = UpstreamRequest::own_json("/mcp", HeaderMap::new(), &call)
        .expect("json")
        .session(Some(&session))
        .modernized(&ini);
    assert_eq!(value(&request, "mcp-protocol-version"), Some("2026-07-28"));
    assert_eq!(value(&request, "mcp-method"), Some("tools/call"));
    assert_eq!(value(&request, "mcp-name"), Some("lock"));
    assert_eq!(value(&request, "mcp-session-id"), None, "sessionless");
    let body: Value = serde_json::from_slice(request.body()).expect("json");
    assert!(body["params"]["_meta"].is_object(), "{body}");
    // Not a message with a modern form: unchanged.
    let garbage = UpstreamRequest::own(Method::POST, "/mcp", HeaderMap::new()).modernized(&ini);
    assert!(
        garbage
            .headers()
            .get(HeaderName::from_static("mcp-method"))
            .is_none()
    );
}
