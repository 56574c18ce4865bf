//! Service tests of the admin API, in process: a real `App` on the memory store, the admin listener
//! on 127.0.0.1:0, work sessions bound straight into the store, and every endpoint exercised with a
//! hyper client; token enforcement and the start checks. The upstream is a small MCP server on
//! 127.0.0.1:0 whose select tool a rebind asks first ([`SelectTool`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use broker::ids::{McpSessionId, PrincipalId, Project, Surface, WorkSessionId};
use broker::session::{Links, WorkSession};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::ops::admin::{self, AdminError, AdminServer, AdminToken};
use proxy::{App, RunError, Settings};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
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

#[tokio::test]
async fn list_and_show_by_hash_or_by_credential() {
    let h = start(settings()).await;
    assert_eq!(
        h.send(Method::GET, "/healthz", &[], None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let first = h.bind(CREDENTIAL, "linkedin").await;
    let second = h.bind(CREDENTIAL, "innkeeper").await;
    h.bind(OTHER, "atlas").await;

    let (status, by_credential) = h.get("/sessions", CREDENTIAL).await;
    assert_eq!(status, StatusCode::OK);
    let hash = h.principal(CREDENTIAL).to_string();
    assert_eq!(by_credential["principal"], hash.as_str());
    let sessions = by_credential["work_sessions"].as_array().expect("list");
    let mut projects: Vec<&str> = sessions
        .iter()
        .map(|s| s["project"].as_str().expect("project"))
        .collect();
    projects.sort_unstable();
    assert_eq!(projects, ["innkeeper", "linkedin"]);
    let by_hash = h
        .send(
            Method::GET,
            &format!("/sessions?principal={hash}"),
            &[],
            None,
        )
        .await;
    assert_eq!(by_hash, (StatusCode::OK, by_credential.clone()));

    let (status, shown) = h.get(&format!("/sessions/{first}"), CREDENTIAL).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["id"], first.as_str());
    assert_eq!(shown["project"], "linkedin");
    assert_eq!(shown["surface"], "claude-ai");
    assert_eq!(shown["conversation"], Value::Null);
    assert_eq!(shown["live"], true);
    assert_eq!(shown["finalized"], false);
    assert_eq!(shown["mcp_sessions"], 1);
    assert_eq!(shown["calls"], 1);
    assert!(shown["created_ms"].as_u64().is_some() && shown["last_active_ms"].as_u64().is_some());

    // Scoped to the principal: another's work session is unknown, so is a random id.
    let foreign = h.get(&format!("/sessions/{second}"), OTHER).await;
    assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{}", foreign.1);
    let unknown = h
        .get(
            &format!("/sessions/{}", WorkSessionId::random()),
            CREDENTIAL,
        )
        .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("/sessions/not-an-id", CREDENTIAL).await.0,
        StatusCode::BAD_REQUEST
    );

    // The principal must be named exactly once, and well.
    let none = h.send(Method::GET, "/sessions", &[], None).await;
    assert_eq!(none.0, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&none).contains("X-Principal-Credential"),
        "{}",
        none.1
    );
    let both = h
        .send(
            Method::GET,
            &format!("/sessions?principal={hash}"),
            &[("x-principal-credential", CREDENTIAL)],
            None,
        )
        .await;
    assert_eq!(both.0, StatusCode::BAD_REQUEST);
    let bad = h
        .send(Method::GET, "/sessions?principal=NOT-HEX", &[], None)
        .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    let other = h.principal(OTHER);
    for query in [
        format!("principal={hash}&principal={other}"),
        format!("principal={hash}&principal={hash}"),
        format!("principal={other}&%70rincipal={hash}"),
    ] {
        let twice = h
            .send(Method::GET, &format!("/sessions?{query}"), &[], None)
            .await;
        assert_eq!(twice.0, StatusCode::BAD_REQUEST, "{query}: {}", twice.1);
        assert!(error_of(&twice).contains("more than once"), "{}", twice.1);
    }
    let twice = h
        .send(
            Method::GET,
            &format!("/sessions/{second}?x=1&x=2"),
            &[("x-principal-credential", CREDENTIAL)],
            None,
        )
        .await;
    assert_eq!(
        twice.0,
        StatusCode::BAD_REQUEST,
        "any parameter, on any endpoint"
    );

    let doubled = h
        .send(
            Method::GET,
            "/sessions",
            &[
                ("x-principal-credential", CREDENTIAL),
                ("x-principal-credential", OTHER),
            ],
            None,
        )
        .await;
    assert_eq!(doubled.0, StatusCode::BAD_REQUEST, "{}", doubled.1);
    assert!(
        error_of(&doubled).contains("more than once"),
        "{}",
        doubled.1
    );

    // A rebind the backend cannot be asked about (nothing listens upstream) binds nothing.
    let unchecked = h
        .post(
            &format!("/sessions/{first}/rebind"),
            CREDENTIAL,
            Some(json!({"project": "atlas"})),
        )
        .await;
    assert_eq!(unchecked.0, StatusCode::BAD_GATEWAY, "{}", unchecked.1);
    let (_, shown) = h.get(&format!("/sessions/{first}"), CREDENTIAL).await;
    assert_eq!(shown["project"], "linkedin");

    // A browser's request: a rebound Host, a foreign Origin, a text/plain POST.
    let rebound = h
        .send(
            Method::GET,
            "/sessions",
            &[
                ("x-principal-credential", CREDENTIAL),
                ("host", "rebound.attacker.example"),
            ],
            None,
        )
        .await;
    assert_eq!(rebound.0, StatusCode::FORBIDDEN, "{}", rebound.1);
    let foreign = h
        .send(
            Method::GET,
            "/sessions",
            &[
                ("x-principal-credential", CREDENTIAL),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(foreign.0, StatusCode::FORBIDDEN, "{}", foreign.1);
    let plain = h
        .send(
            Method::POST,
            &format!("/sessions/{first}/end"),
            &[
                ("x-principal-credential", CREDENTIAL),
                ("content-type", "text/plain"),
            ],
            None,
        )
        .await;
    assert_eq!(plain.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", plain.1);
    assert_eq!(
        h.get(&format!("/sessions/{first}"), CREDENTIAL).await.1["live"],
        true
    );

    // Unknown paths and methods.
    assert_eq!(h.get("/nope", CREDENTIAL).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.post("/sessions", CREDENTIAL, None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    h.shutdown().await;
}

#[tokio::test]
async fn rebind_and_end_act_on_live_work_sessions_only() {
    let backend = SelectTool::default();
    let mut settings = settings();
    settings.upstream = format!("http://{}/mcp", backend.start().await)
        .parse()
        .expect("uri");
    let h = start(settings).await;
    let ws = h.bind(CREDENTIAL, "linkedin").await;

    // A project the backend's select tool refuses is not bound; the check's session is closed.
    let refused = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            CREDENTIAL,
            Some(json!({"project": REFUSED})),
        )
        .await;
    assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.1);
    assert!(error_of(&refused).contains(REFUSED), "{}", refused.1);
    let (_, shown) = h.get(&format!("/sessions/{ws}"), CREDENTIAL).await;
    assert_eq!(shown["project"], "linkedin");
    let seen = backend.seen();
    assert!(
        seen.iter()
            .any(|s| s == &format!("POST tools/call {REFUSED}"))
            && seen.last().is_some_and(|s| s.starts_with("DELETE")),
        "{seen:?}"
    );

    let (status, rebound) = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            CREDENTIAL,
            Some(json!({"project": "dementia"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rebound}");
    assert_eq!(rebound["project"], "dementia");
    assert_eq!(rebound["live"], true);
    let (_, shown) = h.get(&format!("/sessions/{ws}"), CREDENTIAL).await;
    assert_eq!(shown["project"], "dementia");

    for bad in [json!({"project": "a\nb"}), json!({"name": "x"}), json!("x")] {
        let answer = h
            .post(&format!("/sessions/{ws}/rebind"), CREDENTIAL, Some(bad))
            .await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    }
    let foreign = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            OTHER,
            Some(json!({"project": "x"})),
        )
        .await;
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);

    let (status, ended) = h
        .post(&format!("/sessions/{ws}/end"), CREDENTIAL, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ended}");
    assert_eq!(ended["live"], false);
    assert_eq!(ended["finalized"], false);

    // Not live any more: both actions conflict.
    let again = h
        .post(&format!("/sessions/{ws}/end"), CREDENTIAL, None)
        .await;
    assert_eq!(again.0, StatusCode::CONFLICT);
    assert!(error_of(&again).contains("not live"));
    let late = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            CREDENTIAL,
            Some(json!({"project": "atlas"})),
        )
        .await;
    assert_eq!(late.0, StatusCode::CONFLICT);

    // The next sweep finalizes it.
    assert_eq!(
        h.app
            .store
            .claim_expired(10)
            .await
            .expect("sweep")
            .finalized,
        1
    );
    let (_, shown) = h.get(&format!("/sessions/{ws}"), CREDENTIAL).await;
    assert_eq!(shown["finalized"], true);
    assert_eq!(shown["project"], "dementia");
    h.shutdown().await;
}

#[tokio::test]
async fn with_a_token_every_request_needs_it() {
    let mut settings = settings();
    settings.admin_token = AdminToken::new(TOKEN.as_bytes());
    let mut h = start(settings).await;
    h.bind(CREDENTIAL, "linkedin").await;
    assert_eq!(h.get("/sessions", CREDENTIAL).await.0, StatusCode::OK);
    assert_eq!(
        h.send(Method::GET, "/healthz", &[], None).await.0,
        StatusCode::OK
    );

    h.token = None;
    let missing = h.get("/sessions", CREDENTIAL).await;
    assert_eq!(missing.0, StatusCode::UNAUTHORIZED);
    assert!(error_of(&missing).contains("Bearer"));
    assert_eq!(
        h.send(Method::GET, "/healthz", &[], None).await.0,
        StatusCode::UNAUTHORIZED
    );
    for wrong in [
        "Bearer admin-test-token-0123456789abcdeF",
        "Bearer",
        TOKEN,
        "Basic YWRtaW46YWRtaW4=",
    ] {
        let answer = h
            .send(Method::GET, "/healthz", &[("authorization", wrong)], None)
            .await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let lower = h
        .send(
            Method::GET,
            "/healthz",
            &[("authorization", &format!("bearer {TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(lower.0, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn refuses_to_start_off_loopback_without_a_token_or_on_a_taken_port() {
    let mut open = settings();
    open.admin_listen = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
    let app = Arc::new(App::new(open.clone()).expect("app"));
    let (_stop, stopped) = watch::channel(false);
    let error = admin::start(app, stopped.clone())
        .await
        .expect_err("must refuse");
    assert!(matches!(error, AdminError::NeedsToken(_)));
    assert!(error.to_string().contains("--admin-token-file"), "{error}");

    // The whole broker refuses too, before serving anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = proxy::run(open.clone(), listener, std::future::pending()).await;
    assert!(matches!(
        result,
        Err(RunError::Admin(AdminError::NeedsToken(_)))
    ));

    // With a token it starts.
    open.admin_token = AdminToken::new(TOKEN.as_bytes());
    let app = Arc::new(App::new(open).expect("app"));
    let server = admin::start(app, stopped.clone())
        .await
        .expect("starts with a token")
        .expect("not off");
    assert!(server.address().ip().is_unspecified());

    // A taken port names the flag.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut clash = settings();
    clash.admin_listen = Some(taken.local_addr().expect("addr"));
    let app = Arc::new(App::new(clash).expect("app"));
    let error = admin::start(app, stopped.clone())
        .await
        .expect_err("port taken");
    assert!(matches!(error, AdminError::Bind { .. }));
    assert!(
        error.to_string().starts_with("--admin-listen 127.0.0.1:"),
        "{error}"
    );

    // Off is off.
    let mut off = settings();
    off.admin_listen = None;
    let app = Arc::new(App::new(off).expect("app"));
    assert!(admin::start(app, stopped).await.expect("ok").is_none());
}
