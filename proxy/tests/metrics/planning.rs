//! What planning calls and the forwarding code count.

use super::*;

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
