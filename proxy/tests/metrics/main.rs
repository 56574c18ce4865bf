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
use proxy::mcp::call::{Outcome, Plan};
use proxy::metrics::{self, Own, Refusal, Reinit, Rpc, StoreOp};
use proxy::{App, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../support/mod.rs"]
mod support;

mod planning;
mod served;

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
    support::plan(app, &parts("k"), call_message(tool, arguments)).await
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
    let handle = support::settle(plan).await;
    (handle, created_total(app) > before)
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
