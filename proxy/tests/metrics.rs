//! The metrics, without a backend: a real `App` (memory store; the upstream client is never used),
//! `call::plan` refusals, resumes and selections, the metrics methods the forwarding code calls,
//! then the rendered OpenMetrics text parsed back. One test goes through the real server on a
//! loopback socket for `GET /metrics` and the request counter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use broker::jsonrpc::{self, Body, Message};
use broker::resolve::{Path, UnkeyedPolicy};
use broker::store::StoreError;
use http::Request;
use http::request::Parts;
use proxy::mcp::call::{self, Outcome, Plan};
use proxy::mcp::caller::Caller;
use proxy::metrics::{self, Own, Refusal, Reinit, Rpc, StoreOp};
use proxy::{App, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn settings() -> Settings {
    let mut settings = Settings::new("http://127.0.0.1:9/mcp".parse().expect("uri"));
    settings.signing_key = Some(b"metrics-test-signing-key-0123456789abcdef".to_vec());
    settings.unkeyed_policy = UnkeyedPolicy::Guarded;
    settings
}

fn app() -> Arc<App> {
    Arc::new(App::new(settings()).expect("app"))
}

fn parts(credential: &str) -> Parts {
    Request::post("/mcp")
        .header("authorization", format!("Bearer {credential}"))
        .header("x-anthropic-client", "ClaudeAI")
        .body(())
        .expect("request")
        .into_parts()
        .0
}

fn call_message(tool: &str, arguments: Value) -> Message {
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":arguments}});
    match jsonrpc::parse(&serde_json::to_vec(&body).expect("json")).expect("parses") {
        Body::Single(message) => message,
        Body::Batch(_) => panic!("one message"),
    }
}

async fn plan(app: &Arc<App>, tool: &str, arguments: Value) -> Outcome {
    let parts = parts("k");
    let principal = proxy::edge::identify::who(app, &parts.headers, None)
        .await
        .expect("principal");
    let caller = Caller::identify(app, &parts, principal, None).expect("caller");
    let mut message = call_message(tool, arguments);
    call::plan(&app.mcp, &caller, &mut message, None)
        .await
        .expect("plan")
}

fn forward(outcome: Outcome) -> Box<Plan> {
    match outcome {
        Outcome::Forward(plan) => plan,
        Outcome::Reply(reply) => panic!("expected a forward, got {reply}"),
    }
}

fn refused(outcome: Outcome) {
    match outcome {
        Outcome::Reply(reply) => assert_eq!(reply["result"]["isError"], true, "{reply}"),
        Outcome::Forward(_) => panic!("expected a refusal"),
    }
}

/// Plans a select and runs its hook on the backend's success, as the relay does (it binds and
/// counts the selection); returns the handle the model is given and whether the selection was
/// counted as creating a work session.
async fn select(app: &Arc<App>, project: &str) -> (String, bool) {
    let before = created_total(app);
    let plan = forward(plan(app, "select_project_for_session", json!({"name": project})).await);
    let hook = plan.watch.select.expect("the select is watched");
    let mut reply = json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "selected"}]}});
    assert!(
        hook.on_reply(&mut reply).await,
        "the reply gains the handle"
    );
    let text = reply["result"]["content"][1]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a handle item in {reply}"));
    let handle = text.strip_prefix("work_session: ").expect("the handle");
    (handle.to_owned(), created_total(app) > before)
}

/// Selections counted so far as creating a work session.
fn created_total(app: &App) -> f64 {
    let exposition = Exposition::parse(&app.metrics.render());
    exposition
        .samples
        .get(r#"session_broker_selections_total{work_session="created"}"#)
        .copied()
        .unwrap_or(0.0)
}

/// The rendered exposition: `# TYPE` lines (name → type) and samples (`name{labels}` → value).
struct Exposition {
    types: HashMap<String, String>,
    samples: HashMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF: {text}"
        );
        let mut types = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let value = if value == "+Inf" {
                    f64::INFINITY
                } else {
                    value.parse().expect("a number")
                };
                samples.insert(series.to_owned(), value);
            }
        }
        Self { types, samples }
    }

    fn of(app: &App) -> Self {
        Self::parse(&app.metrics.render())
    }

    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} in {:?}", self.samples.keys()))
    }

    fn kind(&self, name: &str) -> &str {
        self.types
            .get(name)
            .unwrap_or_else(|| panic!("no # TYPE for {name} in {:?}", self.types))
    }
}

#[tokio::test]
async fn refusals_resumes_and_selections_are_counted() {
    let app = app();
    // Nothing selected: a tool that needs a project is refused.
    refused(plan(&app, "get_last_handover", json!({})).await);
    let (first, created) = select(&app, "linkedin").await;
    assert!(created, "the first select creates a work session");
    // The surface resolves it now.
    let resumed = forward(plan(&app, "get_last_handover", json!({})).await);
    assert_eq!(resumed.path(), Some(Path::Surface));
    // Selecting the same project again continues the same work session.
    let (again, created) = select(&app, "linkedin").await;
    assert!(!created, "selecting the live project continues it");
    assert!(!again.is_empty());
    // A second project on the same surface: new work session, and unkeyed calls are ambiguous.
    let (_, created) = select(&app, "innkeeper").await;
    assert!(created);
    refused(plan(&app, "get_last_handover", json!({})).await);
    // The handle wins; a malformed one is refused.
    let by_handle = forward(plan(&app, "get_last_handover", json!({"work_session": first})).await);
    assert_eq!(by_handle.path(), Some(Path::Handle));
    refused(
        plan(
            &app,
            "get_last_handover",
            json!({"work_session": "not-a-handle"}),
        )
        .await,
    );
    // Touches run off the reply path (spawned): let them finish before reading the counters.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }

    let out = Exposition::of(&app);
    assert_eq!(out.kind("session_broker_refusals"), "counter");
    assert_eq!(
        out.value(r#"session_broker_refusals_total{kind="no_project"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_refusals_total{kind="ambiguous"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_refusals_total{kind="handle_refused"}"#),
        1.0
    );
    assert_eq!(out.kind("session_broker_resumes"), "counter");
    assert_eq!(
        out.value(r#"session_broker_resumes_total{path="surface"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_resumes_total{path="handle"}"#),
        1.0
    );
    assert_eq!(out.kind("session_broker_selections"), "counter");
    assert_eq!(
        out.value(r#"session_broker_selections_total{work_session="created"}"#),
        2.0
    );
    assert_eq!(
        out.value(r#"session_broker_selections_total{work_session="continued"}"#),
        1.0
    );
    // Every plan did one lookup; the two resumed calls, of one work session and queued together
    // (nothing ran in between on this runtime), are one touch that records both (proxy::mcp::touches).
    assert_eq!(
        out.kind("session_broker_store_latency_seconds"),
        "histogram"
    );
    assert_eq!(
        out.value(r#"session_broker_store_latency_seconds_count{operation="lookup"}"#),
        8.0
    );
    assert_eq!(
        out.value(r#"session_broker_store_latency_seconds_count{operation="touch"}"#),
        1.0
    );
    let claims: broker::tokens::HandleClaims = app
        .keys
        .verify(broker::tokens::HANDLE_AUDIENCE, &first)
        .expect("the handle verifies");
    let status = app
        .store
        .work_session(&claims.p, &claims.ws)
        .await
        .expect("status")
        .expect("exists");
    assert_eq!(
        status.session.calls, 4,
        "two selects and the two resumed calls"
    );
    assert!(
        !out.samples
            .keys()
            .any(|k| k.starts_with("session_broker_store_errors")),
        "no store errors yet"
    );
}

#[tokio::test]
async fn the_methods_the_forwarding_code_calls() {
    let app = app();
    let m = &app.metrics;
    m.request(Rpc::ToolsCall, 200);
    m.request(Rpc::ToolsCall, 200);
    m.request(Rpc::Notification, 202);
    m.request(Rpc::Get, 405);
    m.refusal(&Refusal::StoreUnavailable);
    m.replay(true);
    m.replay(false);
    m.reinitialization(Reinit::NotFound);
    m.reinitialization(Reinit::OtherInstance);
    m.reinitialization(Reinit::OtherInstance);
    m.work_sessions_finalized(1);
    m.set_work_sessions_live(5);
    m.work_sessions_live().dec();
    let failed: Result<(), StoreError> = m
        .store(StoreOp::Bind, async {
            Err(StoreError::Unavailable("down".into()))
        })
        .await;
    assert!(failed.is_err());

    // Upstream time inside a request scope: histogram by method label, and the request's total.
    let (upstream, method) = metrics::in_request(async {
        metrics::set_method(Rpc::ToolsCall);
        m.upstream(tokio::time::sleep(Duration::from_millis(5)))
            .await;
        m.own_upstream(Own::Replay, async {}).await;
        metrics::upstream_body(tokio::time::sleep(Duration::from_millis(5))).await;
        (metrics::upstream_time(), metrics::current_method())
    })
    .await;
    assert!(upstream >= Duration::from_millis(10), "{upstream:?}");
    assert_eq!(method, Some(Rpc::ToolsCall));
    assert_eq!(metrics::current_method(), None, "nothing outside a scope");
    assert_eq!(metrics::upstream_time(), Duration::ZERO);
    m.broker_overhead(Duration::from_millis(12), Duration::from_millis(10));

    let out = Exposition::of(&app);
    assert_eq!(out.kind("session_broker_requests"), "counter");
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="tools/call",status="200"}"#),
        2.0
    );
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="notification",status="202"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="GET",status="405"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_refusals_total{kind="store_unavailable"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_replays_total{result="ok"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_replays_total{result="failed"}"#),
        1.0
    );
    assert_eq!(
        out.kind("session_broker_backend_reinitializations"),
        "counter"
    );
    assert_eq!(
        out.value(r#"session_broker_backend_reinitializations_total{reason="not_found"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_backend_reinitializations_total{reason="other_instance"}"#),
        2.0
    );
    assert_eq!(out.kind("session_broker_store_errors"), "counter");
    assert_eq!(
        out.value(r#"session_broker_store_errors_total{operation="bind"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_store_latency_seconds_count{operation="bind"}"#),
        1.0
    );
    assert_eq!(
        out.kind("session_broker_upstream_latency_seconds"),
        "histogram"
    );
    assert_eq!(
        out.value(r#"session_broker_upstream_latency_seconds_count{request="tools/call"}"#),
        1.0
    );
    assert_eq!(
        out.value(
            r#"session_broker_upstream_latency_seconds_bucket{le="+Inf",request="tools/call"}"#
        ),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_upstream_latency_seconds_count{request="replay"}"#),
        1.0
    );
    assert_eq!(
        out.kind("session_broker_broker_overhead_seconds"),
        "histogram"
    );
    assert_eq!(
        out.value("session_broker_broker_overhead_seconds_count"),
        1.0
    );
    let overhead = out.value("session_broker_broker_overhead_seconds_sum");
    assert!((overhead - 0.002).abs() < 1e-9, "{overhead}");
    assert_eq!(
        out.kind("session_broker_work_sessions_finalized"),
        "counter"
    );
    assert_eq!(
        out.value("session_broker_work_sessions_finalized_total"),
        1.0
    );
    assert_eq!(out.kind("session_broker_work_sessions_live"), "gauge");
    assert_eq!(out.value("session_broker_work_sessions_live"), 4.0);
}

#[tokio::test]
async fn a_fresh_registry_declares_its_unlabelled_metrics() {
    let out = Exposition::of(&app());
    assert_eq!(
        out.kind("session_broker_broker_overhead_seconds"),
        "histogram"
    );
    assert_eq!(
        out.value("session_broker_broker_overhead_seconds_count"),
        0.0
    );
    assert_eq!(
        out.value("session_broker_work_sessions_finalized_total"),
        0.0
    );
    assert_eq!(out.value("session_broker_work_sessions_live"), 0.0);
    assert!(
        out.types
            .keys()
            .all(|name| name.starts_with("session_broker_")),
        "{:?}",
        out.types
    );
}

/// One HTTP/1.1 request on a fresh connection; returns the raw response.
async fn http(address: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8(response).expect("utf-8")
}

#[tokio::test]
async fn the_server_serves_metrics_and_counts_mcp_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy::run(settings(), listener, async {
        let _ = stopped.await;
    }));

    // No credential: 401 before the body is read, counted under `other`.
    let refused = http(
        address,
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // Not JSON: 400, also `other`.
    let bad = http(
        address,
        "POST /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{x}",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    let scraped = http(
        address,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = scraped.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {}", metrics::CONTENT_TYPE)),
        "{head}"
    );
    let out = Exposition::parse(body);
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="other",status="401"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="other",status="400"}"#),
        1.0
    );
    assert!(
        !out.samples.keys().any(|k| k.contains(r#"method="GET""#)),
        "scrapes are not MCP requests"
    );

    let _ = stop.send(());
    server.await.expect("join").expect("server");
}
