//! The fake MCP upstream's behaviour, without sockets: one POST in, one [`Reply`] out.
//!
//! It behaves like the example backend (`examples/backend/server.py`, stateful FastMCP) as far as
//! the broker can tell, and as cheaply as possible so that a proxy's own cost shows:
//! - `initialize` opens a session (`Mcp-Session-Id` in the reply); requests naming an unknown
//!   session get 404, requests without one 400, as the SDK does;
//! - notifications get 202 and no body;
//! - `tools/list` lists the example backend's tools;
//! - `tools/call select_project_for_session {"name": P}` remembers P for the session;
//! - any other `tools/call` answers `project=<selected|none> header=<X-MCP-Project|none>`, so a load
//!   generator can check every reply went to the right project;
//! - replies to requests are JSON or one SSE event, by [`Fake::new`]'s `sse`.
//!
//! Sessions are kept in a bounded first-in-first-out table: the oldest is forgotten (and then
//! answered 404, which a proxy must handle) once [`Fake::new`]'s `capacity` is reached.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tool that selects a project (the broker's default `--select-tool`, argument `name`).
pub const SELECT_TOOL: &str = "select_project_for_session";

const TOOLS: &str = r#"{"tools":[{"name":"list_projects","description":"List the known projects.","inputSchema":{"type":"object","properties":{}}},{"name":"select_project_for_session","description":"Select the project this MCP session works on.","inputSchema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}},{"name":"get_last_handover","description":"Return the last handover of the session's project.","inputSchema":{"type":"object","properties":{}}},{"name":"explore_context_tree","description":"List the topics of the session's project.","inputSchema":{"type":"object","properties":{}}}]}"#;

/// One HTTP request, as far as the fake looks at it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// `Mcp-Session-Id`.
    pub session: Option<&'a str>,
    /// `X-MCP-Project` (set by the broker).
    pub project_header: Option<&'a str>,
    pub body: &'a [u8],
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// A new session's id, for the `Mcp-Session-Id` header.
    pub session: Option<String>,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Reply {
    fn empty(status: u16) -> Self {
        Self {
            status,
            session: None,
            content_type: None,
            body: Vec::new(),
        }
    }

    fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            session: None,
            content_type: Some("text/plain"),
            body: text.as_bytes().to_vec(),
        }
    }
}

/// Requests served, by kind (`GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Every request to the MCP path.
    pub requests: u64,
    pub initialize: u64,
    pub notifications: u64,
    pub tools_list: u64,
    pub select: u64,
    pub tools_call: u64,
    pub delete: u64,
    pub other: u64,
    /// Requests answered 400 or 404 (unknown or missing session, unreadable body).
    pub refused: u64,
    /// Sessions currently remembered.
    pub sessions: u64,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
}

/// The fake server's state.
#[derive(Debug)]
pub struct Fake {
    sse: bool,
    capacity: usize,
    /// Session id → the project selected on it.
    sessions: HashMap<String, Option<String>>,
    order: VecDeque<String>,
    next: u64,
    counts: Counts,
}

impl Fake {
    /// `sse`: answer requests with one SSE event instead of a JSON body. `capacity`: most sessions
    /// remembered (at least 1).
    pub fn new(sse: bool, capacity: usize) -> Self {
        Self {
            sse,
            capacity: capacity.max(1),
            sessions: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            counts: Counts::default(),
        }
    }

    /// What has been served so far.
    pub fn counts(&self) -> Counts {
        Counts {
            sessions: self.sessions.len() as u64,
            ..self.counts.clone()
        }
    }

    /// Answers one request to the MCP path.
    pub fn handle(&mut self, request: Request<'_>) -> Reply {
        self.counts.requests += 1;
        match request.method {
            "POST" => self.post(request),
            "DELETE" => {
                self.counts.delete += 1;
                match request.session.and_then(|s| self.sessions.remove(s)) {
                    Some(_) => Reply::empty(200),
                    None => self.refuse(404, "Session not found"),
                }
            }
            _ => {
                self.counts.other += 1;
                Reply::empty(405)
            }
        }
    }

    fn refuse(&mut self, status: u16, text: &str) -> Reply {
        self.counts.refused += 1;
        Reply::text(status, text)
    }

    fn post(&mut self, request: Request<'_>) -> Reply {
        let Ok(message) = serde_json::from_slice::<Message<'_>>(request.body) else {
            return self.refuse(400, "Parse error");
        };
        let method = message.method.as_deref().unwrap_or("");
        if method == "initialize" {
            self.counts.initialize += 1;
            let version = message
                .params
                .as_ref()
                .and_then(|p| p.protocol_version.as_deref())
                .unwrap_or("2025-06-18");
            let result = format!(
                r#"{{"protocolVersion":{},"capabilities":{{"tools":{{"listChanged":false}}}},"serverInfo":{{"name":"fake-upstream","version":"1"}}}}"#,
                Value::from(version)
            );
            let session = self.open();
            let mut reply = self.result(message.id.as_ref(), &result);
            reply.session = Some(session);
            return reply;
        }
        let Some(session) = request.session else {
            return self.refuse(400, "Bad Request: Missing session ID");
        };
        let Some(selected) = self.sessions.get_mut(session) else {
            return self.refuse(404, "Session not found");
        };
        if message.id.is_none() {
            self.counts.notifications += 1;
            return Reply::empty(202);
        }
        let params = message.params.as_ref();
        let result = match method {
            "tools/list" => {
                self.counts.tools_list += 1;
                TOOLS.to_owned()
            }
            "tools/call" if params.and_then(|p| p.name.as_deref()) == Some(SELECT_TOOL) => {
                self.counts.select += 1;
                let project = params
                    .and_then(|p| p.arguments.as_ref())
                    .and_then(|a| a.get("name"))
                    .and_then(Value::as_str);
                match project {
                    Some(project) => {
                        *selected = Some(project.to_owned());
                        tool_result(&format!("Selected project {project}"), false)
                    }
                    None => tool_result("the name argument is missing", true),
                }
            }
            "tools/call" => {
                self.counts.tools_call += 1;
                let text = format!(
                    "project={} header={}",
                    selected.as_deref().unwrap_or("none"),
                    request.project_header.unwrap_or("none")
                );
                tool_result(&text, false)
            }
            _ => {
                self.counts.other += 1;
                "{}".to_owned()
            }
        };
        self.result(message.id.as_ref(), &result)
    }

    /// A new session, forgetting the oldest when full.
    fn open(&mut self) -> String {
        self.next += 1;
        // Unique within this process and not guessable from a neighbour's: a counter mixed.
        let id = format!(
            "{:016x}{:016x}",
            self.next,
            self.next.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        );
        while self.sessions.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.sessions.remove(&old);
                }
                None => break,
            }
        }
        self.sessions.insert(id.clone(), None);
        self.order.push_back(id.clone());
        id
    }

    /// A JSON-RPC result reply, as JSON or one SSE event.
    fn result(&self, id: Option<&Value>, result: &str) -> Reply {
        let id = id.map_or_else(|| "null".to_owned(), Value::to_string);
        let json = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#);
        let (content_type, body) = if self.sse {
            (
                "text/event-stream",
                format!("event: message\r\ndata: {json}\r\n\r\n").into_bytes(),
            )
        } else {
            ("application/json", json.into_bytes())
        };
        Reply {
            status: 200,
            session: None,
            content_type: Some(content_type),
            body,
        }
    }
}

fn tool_result(text: &str, is_error: bool) -> String {
    format!(
        r#"{{"content":[{{"type":"text","text":{}}}],"isError":{is_error}}}"#,
        Value::from(text)
    )
}

#[cfg(test)]
mod tests;
