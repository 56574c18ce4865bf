//! Service tests of the decision path, without sockets: a real `App` (memory store; the upstream client
//! is never used), real headers, real JSON-RPC bodies, through `identify::who`, `Caller::identify` and `call::plan`.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use broker::jsonrpc::{self, Body, Message};
use broker::resolve::{Path, UnkeyedPolicy};
use http::Request;
use http::request::Parts;
use proxy::mcp::call::{Outcome, Plan};
use proxy::{App, Settings};
use serde_json::Value;

fn app(policy: UnkeyedPolicy) -> Arc<App> {
    app_with(policy, 50)
}

fn app_with(policy: UnkeyedPolicy, max_work_sessions: u64) -> Arc<App> {
    let mut settings = Settings::new("http://127.0.0.1:9/mcp".parse().expect("uri"));
    settings.signing_key = Some(b"service-test-signing-key-0123456789abcdef".to_vec());
    settings.unkeyed_policy = policy;
    settings.max_work_sessions = max_work_sessions;
    Arc::new(App::new(settings).expect("app"))
}

fn parts(credential: &str, client: &str) -> Parts {
    Request::post("/mcp")
        .header("authorization", format!("Bearer {credential}"))
        .header("x-anthropic-client", client)
        .body(())
        .expect("request")
        .into_parts()
        .0
}

fn call_message(tool: &str, arguments: Value) -> Message {
    let body = serde_json::json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":arguments}});
    match jsonrpc::parse(&serde_json::to_vec(&body).expect("json")).expect("parses") {
        Body::Single(message) => message,
        Body::Batch(_) => panic!("one message"),
    }
}

async fn run_plan(
    app: &Arc<App>,
    credential: &str,
    client: &str,
    tool: &str,
    arguments: Value,
) -> Outcome {
    support::plan(
        app,
        &parts(credential, client),
        call_message(tool, arguments),
    )
    .await
}

fn refusal(outcome: Outcome) -> String {
    match outcome {
        Outcome::Reply(reply) => {
            assert_eq!(reply["result"]["isError"], true, "{reply}");
            reply["result"]["content"][0]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        }
        Outcome::Forward(plan) => panic!(
            "expected a refusal, got a forward bound to {:?}",
            plan.bound().map(|b| b.project.clone())
        ),
    }
}

fn forward(outcome: Outcome) -> Box<Plan> {
    match outcome {
        Outcome::Forward(plan) => plan,
        Outcome::Reply(reply) => panic!("expected a forward, got {reply}"),
    }
}

/// Plans a select and hands its hook the backend's success, as the relay would (it binds); returns
/// the handle the model is given.
async fn select(app: &Arc<App>, credential: &str, client: &str, project: &str) -> String {
    let plan = forward(
        run_plan(
            app,
            credential,
            client,
            "select_project_for_session",
            serde_json::json!({"name": project}),
        )
        .await,
    );
    support::settle(plan).await
}

#[tokio::test]
async fn nothing_selected_is_refused_with_guidance_and_exempt_tools_pass() {
    let app = app(UnkeyedPolicy::Guarded);
    let text = refusal(
        run_plan(
            &app,
            "k",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({}),
        )
        .await,
    );
    assert!(
        text.starts_with("session-broker: no project is selected"),
        "{text}"
    );
    let plan = forward(
        run_plan(
            &app,
            "k",
            "ClaudeAI",
            "list_projects",
            serde_json::json!({}),
        )
        .await,
    );
    assert!(plan.bound().is_none());
}

#[tokio::test]
async fn a_selection_carries_over_reconnects_on_its_surface_only() {
    let app = app(UnkeyedPolicy::Guarded);
    select(&app, "k", "ClaudeAI", "linkedin").await;
    let plan = forward(
        run_plan(
            &app,
            "k",
            "ClaudeAI",
            "lock_context",
            serde_json::json!({"topic":"t"}),
        )
        .await,
    );
    assert_eq!(plan.bound().map(|b| b.project.as_str()), Some("linkedin"));
    assert_eq!(plan.forward.route, broker::decide::Route::None);
    assert_eq!(plan.path(), Some(Path::Surface));
    // Same credential, another UI: nothing inherited.
    let text = refusal(run_plan(&app, "k", "Cowork", "lock_context", serde_json::json!({})).await);
    assert!(
        text.starts_with("session-broker: no project is selected"),
        "{text}"
    );
    // Another credential, same UI: nothing inherited.
    let text = refusal(
        run_plan(
            &app,
            "other",
            "ClaudeAI",
            "lock_context",
            serde_json::json!({}),
        )
        .await,
    );
    assert!(
        text.starts_with("session-broker: no project is selected"),
        "{text}"
    );
}

#[tokio::test]
async fn two_live_projects_need_a_handle_and_the_handle_wins() {
    let app = app(UnkeyedPolicy::Guarded);
    let linkedin = select(&app, "k", "ClaudeAI", "linkedin").await;
    let innkeeper = select(&app, "k", "ClaudeAI", "innkeeper").await;
    let text = refusal(
        run_plan(
            &app,
            "k",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({}),
        )
        .await,
    );
    assert!(text.contains("(innkeeper, linkedin)"), "{text}");
    for (handle, project) in [(&linkedin, "linkedin"), (&innkeeper, "innkeeper")] {
        let plan = forward(
            run_plan(
                &app,
                "k",
                "ClaudeAI",
                "get_last_handover",
                serde_json::json!({"work_session": handle}),
            )
            .await,
        );
        assert_eq!(plan.bound().map(|b| b.project.as_str()), Some(project));
        assert_eq!(plan.path(), Some(Path::Handle));
        assert!(
            plan.body_changed,
            "the handle is stripped before forwarding"
        );
    }
}

#[tokio::test]
async fn foreign_forged_and_malformed_handles_are_refused() {
    let app = app(UnkeyedPolicy::Guarded);
    let handle = select(&app, "alice", "ClaudeAI", "linkedin").await;
    let text = refusal(
        run_plan(
            &app,
            "bob",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({"work_session": handle}),
        )
        .await,
    );
    assert!(
        text.contains("refused: it belongs to another credential"),
        "{text}"
    );
    // Flip one signature character well inside it (the last one may only hold padding bits).
    let mut forged: Vec<char> = handle.chars().collect();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let text = refusal(
        run_plan(
            &app,
            "alice",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({"work_session": forged}),
        )
        .await,
    );
    assert!(
        text.starts_with("session-broker: the work_session handle was refused"),
        "{text}"
    );
    let text = refusal(
        run_plan(
            &app,
            "alice",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({"work_session": 42}),
        )
        .await,
    );
    assert!(text.contains("it must be a string"), "{text}");
}

#[tokio::test]
async fn strict_policy_never_uses_the_surface_and_surface_policy_takes_the_newest() {
    let strict = app(UnkeyedPolicy::Strict);
    select(&strict, "k", "ClaudeAI", "linkedin").await;
    let text = refusal(
        run_plan(
            &strict,
            "k",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({}),
        )
        .await,
    );
    assert!(text.contains("Recent projects: linkedin."), "{text}");

    let surface = app(UnkeyedPolicy::Surface);
    select(&surface, "k", "ClaudeAI", "linkedin").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    select(&surface, "k", "ClaudeAI", "innkeeper").await;
    let plan = forward(
        run_plan(
            &surface,
            "k",
            "ClaudeAI",
            "get_last_handover",
            serde_json::json!({}),
        )
        .await,
    );
    assert_eq!(plan.bound().map(|b| b.project.as_str()), Some("innkeeper"));
}

#[tokio::test]
async fn a_credential_cannot_start_more_work_sessions_than_the_cap() {
    let app = app_with(UnkeyedPolicy::Guarded, 2);
    let linkedin = select(&app, "k", "ClaudeAI", "linkedin").await;
    select(&app, "k", "Cowork", "innkeeper").await;
    let text = refusal(
        run_plan(
            &app,
            "k",
            "ClaudeAI",
            "select_project_for_session",
            serde_json::json!({"name": "atlas"}),
        )
        .await,
    );
    assert!(text.contains("already has 2 live work sessions"), "{text}");
    // Continuing one of them is not a new work session; another credential has its own budget.
    let plan = forward(
        run_plan(
            &app,
            "k",
            "ClaudeAI",
            "select_project_for_session",
            serde_json::json!({"name": "linkedin", "work_session": linkedin}),
        )
        .await,
    );
    // It binds (the cap counts live work sessions, and this one is live) as a continued one.
    support::settle(plan).await;
    let metrics = app.metrics.render();
    assert!(
        metrics.contains(r#"session_broker_selections_total{work_session="continued"} 1"#),
        "{metrics}"
    );
    select(&app, "other", "ClaudeAI", "atlas").await;
}
