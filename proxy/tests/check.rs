//! `session-broker check`, the real binary as an operator runs it: against a small MCP server on
//! 127.0.0.1:0 (a stateful one: `initialize` hands out a session id, `DELETE` ends it; no
//! 2026-07-28), with the memory store or a Redis URL on a closed port, with the flags or a config
//! file. Exit status 0 when every line says ok, 1 when one fails, 2 when the configuration does not
//! parse; the signing key never appears in the output. (A real Redis and the example backends:
//! `tests/e2e/test_check.py`.)

#[path = "support/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const SECRET: &str = "check-test-signing-key-0123456789abcdef-never-printed";
const SESSION: &str = "check-test-backend-session-1";

/// An MCP server that answers `initialize` (with [`SESSION`]) and records every request it gets
/// as `METHOD rpc-method session`.
#[derive(Clone, Default)]
struct Backend {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    async fn start(&self) -> SocketAddr {
        let this = self.clone();
        loopback::serve(move |request| {
            let this = this.clone();
            async move { this.answer(request).await }
        })
        .await
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let session = request
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let bytes = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let rpc = message["method"].as_str().unwrap_or("-").to_owned();
        self.seen
            .lock()
            .expect("lock")
            .push(format!("{method} {rpc} {session}"));
        let reply = |status: StatusCode, body: Value| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("mcp-session-id", SESSION)
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("response")
        };
        match (method, rpc.as_str()) {
            (Method::POST, "initialize") => reply(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "protocolVersion": message["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "check-test-backend", "version": "9.9.9"},
                }}),
            ),
            (Method::DELETE, _) => reply(StatusCode::OK, json!({})),
            // A legacy server: no session id, no server/discover.
            _ => reply(
                StatusCode::BAD_REQUEST,
                json!({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32600, "message": "Bad Request: Missing session ID"}}),
            ),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Runs `session-broker check ARGS` with no `BROKER_*` variable of the test's environment.
async fn check(args: &[String]) -> Output {
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_session-broker"));
        command.arg("check").args(&args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BROKER_") {
                command.env_remove(name);
            }
        }
        command.output().expect("session-broker runs")
    })
    .await
    .expect("joined")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The line of the check `what`.
fn line<'a>(output: &'a str, what: &str) -> &'a str {
    output
        .lines()
        .find(|line| {
            line.get(5..)
                .is_some_and(|rest| rest.starts_with(&format!("{what}:")))
        })
        .unwrap_or_else(|| panic!("no `{what}` line in:\n{output}"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ok_says_what_it_found_closes_the_session_and_exits_0() {
    let backend = Backend::default();
    let address = backend.start().await;
    let upstream = format!("http://{address}/mcp");
    let output = check(&strings(&[
        "--upstream",
        &upstream,
        "--signing-key",
        SECRET,
    ]))
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(
        line(&shown, "config").starts_with("ok   config: parsed"),
        "{shown}"
    );
    assert_eq!(
        line(&shown, "signing key"),
        "ok   signing key: HS256 secret from --signing-key / BROKER_SIGNING_KEY"
    );
    assert!(
        line(&shown, "store").starts_with("ok   store: memory"),
        "{shown}"
    );
    assert_eq!(
        line(&shown, "upstream"),
        format!(
            "ok   upstream: {upstream}: \"check-test-backend\" 9.9.9 speaks MCP 2025-11-25 \
             (stateful, its session closed); 2026-07-28: not offered (the broker bridges modern clients)"
        )
    );
    assert!(
        line(&shown, "identity").starts_with("ok   identity: bearer-hmac"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 5, "{shown}");
    assert!(!shown.contains(SECRET), "the key is printed:\n{shown}");
    let seen = backend.seen();
    assert!(seen.contains(&"POST initialize -".to_owned()), "{seen:?}");
    assert!(
        seen.contains(&format!("DELETE - {SESSION}")),
        "the session is not closed: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_is_read_as_the_server_reads_it() {
    let backend = Backend::default();
    let address = backend.start().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("check");
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("signing.key");
    std::fs::write(&key, SECRET).expect("key");
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = \"http://{address}/mcp\"\nsigning-key-file = \"{}\"\n",
            key.display()
        ),
    )
    .expect("config");
    let output = check(&strings(&["--config", &config.display().to_string()])).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert_eq!(
        line(&shown, "signing key"),
        format!("ok   signing key: HS256 secret from {}", key.display())
    );
    assert!(!shown.contains(SECRET), "the key is printed:\n{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_fails_its_line_and_exits_1() {
    let backend = Backend::default();
    let address = backend.start().await;
    let port = closed_port();
    let redis = format!("redis://check-user:check-password@127.0.0.1:{port}/0");
    let output = check(&strings(&[
        "--upstream",
        &format!("http://{address}/mcp"),
        "--redis-url",
        &redis,
        "--signing-key",
        SECRET,
    ]))
    .await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let store = line(&shown, "store");
    assert!(
        store.starts_with(&format!(
            "FAIL store: redis at redis://127.0.0.1:{port}/0: "
        )),
        "{shown}"
    );
    assert!(
        !shown.contains("check-password"),
        "the password is printed:\n{shown}"
    );
    assert!(line(&shown, "upstream").starts_with("ok   "), "{shown}");
    assert!(line(&shown, "signing key").starts_with("ok   "), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_fails_its_line_and_exits_1() {
    let upstream = format!("http://127.0.0.1:{}/mcp", closed_port());
    let output = check(&strings(&["--upstream", &upstream])).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let failed = line(&shown, "upstream");
    assert!(
        failed.starts_with(&format!("FAIL upstream: {upstream}: unreachable: ")),
        "{shown}"
    );
    assert!(failed.contains("refused"), "{shown}");
    assert!(line(&shown, "store").starts_with("ok   "), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_does_not_parse_exits_2() {
    let output = check(&strings(&["--upstream", "ftp://127.0.0.1/mcp"])).await;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(
        shown.starts_with("FAIL config: --upstream must be"),
        "{shown}"
    );

    // Redis without a signing key: refused as the server refuses it.
    let output = check(&strings(&[
        "--upstream",
        "http://127.0.0.1:1/mcp",
        "--redis-url",
        "redis://127.0.0.1:1/0",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));

    let output = check(&strings(&["--no-such-flag"])).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}
