//! Service tests of the admin API, in process: a real `App` on the memory store, the admin listener
//! on 127.0.0.1:0, work sessions bound straight into the store, and every endpoint exercised with a
//! hyper client; token enforcement and the start checks. The upstream is a small MCP server on
//! 127.0.0.1:0 whose select tool a rebind asks first ([`SelectTool`]).

#[path = "../support/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use broker::ids::{McpSessionId, PrincipalId, Project, Surface, WorkSessionId};
use broker::session::{Links, WorkSession};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proxy::ops::admin::{self, AdminError, AdminServer, AdminToken};
use proxy::{App, RunError, Settings};
use serde_json::{Value, json};
use tokio::sync::watch;

mod actions;
mod reads;

const CREDENTIAL: &str = "admin-test-credential-alice";
const OTHER: &str = "admin-test-credential-bob";
const TOKEN: &str = "admin-test-token-0123456789abcdef";

/// The project the backend's select tool refuses.
const REFUSED: &str = "never-approved";

/// An MCP server with a select tool that accepts every project but [`REFUSED`]: initialize (with a
/// session id), notifications, `tools/call`, DELETE. It records each requested project and method.
#[derive(Clone, Default)]
struct SelectTool {
    seen: Arc<Mutex<Vec<String>>>,
}

impl SelectTool {
    async fn start(&self) -> SocketAddr {
        let this = self.clone();
        loopback::serve(move |request| {
            let this = this.clone();
            async move { this.answer(request).await }
        })
        .await
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
        let method = request.method().clone();
        let bytes = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let rpc = message["method"].as_str().unwrap_or_default().to_owned();
        let project = message["params"]["arguments"]["name"]
            .as_str()
            .map(str::to_owned);
        self.seen.lock().expect("lock").push(format!(
            "{method} {rpc} {}",
            project.clone().unwrap_or_default()
        ));
        let reply = |status: u16, body: Value| {
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("mcp-session-id", "backend-session-1")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("response")
        };
        let id = message["id"].clone();
        match (method, rpc.as_str()) {
            (Method::DELETE, _) => reply(200, Value::Null),
            (_, "initialize") => reply(
                200,
                json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18",
                    "capabilities": {}, "serverInfo": {"name": "select-tool", "version": "1"}}}),
            ),
            (_, "tools/call") => {
                let refused = project.as_deref() == Some(REFUSED);
                let text = if refused {
                    "Unknown project"
                } else {
                    "Selected"
                };
                reply(
                    200,
                    json!({"jsonrpc": "2.0", "id": id, "result": {"isError": refused,
                        "content": [{"type": "text", "text": text}]}}),
                )
            }
            _ => reply(202, Value::Null),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

fn settings() -> Settings {
    let mut settings = Settings::new("http://127.0.0.1:9/mcp".parse().expect("uri"));
    settings.signing_key = Some(b"admin-test-signing-key-0123456789abcdef".to_vec());
    settings.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings
}

struct Harness {
    app: Arc<App>,
    server: AdminServer,
    stop: watch::Sender<bool>,
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<&'static str>,
}

async fn start(settings: Settings) -> Harness {
    let token = settings.admin_token.as_ref().map(|_| TOKEN);
    let app = Arc::new(App::new(settings).expect("app"));
    let (stop, stopped) = watch::channel(false);
    let server = admin::start(app.clone(), stopped)
        .await
        .expect("starts")
        .expect("not off");
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    Harness {
        app,
        server,
        stop,
        client,
        token,
    }
}

impl Harness {
    fn principal(&self, credential: &str) -> PrincipalId {
        self.app
            .principals
            .principal(Some(&format!("Bearer {credential}")), false)
            .expect("principal")
    }

    /// Binds a work session of `credential`'s principal on `project`, seen by one MCP session.
    async fn bind(&self, credential: &str, project: &str) -> WorkSessionId {
        let now = proxy::backend::now_ms();
        let session = WorkSession {
            id: WorkSessionId::random(),
            principal: self.principal(credential),
            surface: Surface::parse("claude-ai").expect("surface"),
            conversation: None,
            project: Project::parse(project).expect("project"),
            created_ms: now,
            last_active_ms: now,
            calls: 0,
            backends: Default::default(),
        };
        let links = Links {
            mcp_session: Some(McpSessionId::random()),
            conversation: None,
            count_only: false,
        };
        self.app.store.bind(&session, &links).await.expect("bind");
        session.id
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let uri = format!("http://{}{path}", self.server.address());
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self
            .client
            .request(request.body(Full::new(body)).expect("request"))
            .await
            .expect("admin answers");
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{status}"
        );
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(CREDENTIAL) && !text.contains(TOKEN),
            "a secret was echoed: {text}"
        );
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }

    async fn get(&self, path: &str, credential: &str) -> (StatusCode, Value) {
        self.send(
            Method::GET,
            path,
            &[("x-principal-credential", credential)],
            None,
        )
        .await
    }

    /// A POST as the admin client sends it: JSON.
    async fn post(&self, path: &str, credential: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            path,
            &[
                ("x-principal-credential", credential),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    async fn shutdown(self) {
        let address = self.server.address();
        let _ = self.stop.send(true);
        self.server.stopped().await;
        assert!(
            tokio::net::TcpStream::connect(address).await.is_err(),
            "still listening after stop"
        );
    }
}

fn error_of(answer: &(StatusCode, Value)) -> &str {
    answer.1["error"].as_str().expect("an error text")
}
