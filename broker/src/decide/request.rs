//! What a POST on the MCP path is, before anything is read from the store: the order the proxy
//! serves its kinds in, and the rule that keeps project tools out of batches. Pure, table-tested.
//!
//! In order (the first that applies):
//! 1. an `initialize`: a broker session id is minted (or, for a backend that speaks only 2026-07-28,
//!    answered from its `server/discover`);
//! 2. the era ([`crate::modern::era`]): a modern (sessionless) POST takes the modern path, a
//!    refused one is answered with the spec's error, a legacy one goes on;
//! 3. a single response with a session id: an answer to a server request, delivered to the backend
//!    session that asked when the broker sealed its id (else it passes through);
//! 4. a single request resolved to a work session first ([`is_resolved`]), with a session id;
//! 5. everything else passes through on the right backend session, unless it is a batch holding a
//!    call that needs a project ([`batch_refused`]).

use crate::jsonrpc::{Body, Kind, Message};
use crate::modern::{Era, Rejection};

/// What a legacy-or-modern POST is.
#[derive(Debug, Clone, PartialEq)]
pub enum Post {
    Initialize,
    Modern,
    /// Refused before routing: the modern ladder's error.
    Refused(Rejection),
    /// A client's single response: maybe an answer to a server request.
    Answer,
    /// A single request resolved to a work session before it is forwarded.
    Resolved,
    PassThrough,
}

/// Classifies a POST whose `MCP-Protocol-Version` header says `version`; `has_session`: it carries
/// a broker session id.
pub fn classify(body: &Body, version: Option<&str>, has_session: bool) -> Post {
    if body.is_initialize() {
        return Post::Initialize;
    }
    match crate::modern::era(version, body, has_session) {
        Era::Modern => return Post::Modern,
        Era::Refused(rejection) => return Post::Refused(rejection),
        Era::Legacy => {}
    }
    match body {
        Body::Single(message) if has_session && message.kind == Kind::Response => Post::Answer,
        Body::Single(message) if has_session && is_resolved(message) => Post::Resolved,
        _ => Post::PassThrough,
    }
}

/// Whether a single request is resolved to a work session before it is forwarded: a `tools/call`,
/// or a request that may depend on the project ([`super::is_project_scoped`]).
pub fn is_resolved(message: &Message) -> bool {
    match &message.kind {
        Kind::ToolsCall(_) | Kind::ToolsList => true,
        Kind::OtherRequest(method) => super::is_project_scoped(method),
        _ => false,
    }
}

/// A body that passes through (a batch, or a single message that is not resolved) is refused when
/// it calls the select tool or a tool that needs a project: such a call is not resolved or guarded,
/// so it would run on whatever project the backend session has.
pub fn batch_refused(body: &Body, select_tool: &str, needs_project: impl Fn(&str) -> bool) -> bool {
    body.messages().iter().any(|m| match &m.kind {
        Kind::ToolsCall(call) => call.name == select_tool || needs_project(&call.name),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jsonrpc;

    fn body(value: serde_json::Value) -> Body {
        jsonrpc::parse(&serde_json::to_vec(&value).expect("json")).expect("parses")
    }

    fn call(id: u64, tool: &str) -> serde_json::Value {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
    }

    #[test]
    fn what_a_post_is() {
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}});
        let answer = json!({"jsonrpc":"2.0","id":"msb-s.x","result":{}});
        let read =
            json!({"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"notes://a"}});
        let ping = json!({"jsonrpc":"2.0","id":4,"method":"ping"});
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let batch = json!([call(5, "a"), call(6, "b")]);
        let modern_call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
        // (body, header version, has a session id, what it is)
        let rows: Vec<(serde_json::Value, Option<&str>, bool, Post)> = vec![
            (init.clone(), None, false, Post::Initialize),
            (init, None, true, Post::Initialize),
            (call(2, "a"), None, true, Post::Resolved),
            // Without a session id a legacy call is not resolved (nothing to resume it by).
            (call(2, "a"), None, false, Post::PassThrough),
            (read.clone(), None, true, Post::Resolved),
            (read, None, false, Post::PassThrough),
            (ping, None, true, Post::PassThrough),
            (note, None, true, Post::PassThrough),
            (answer.clone(), None, true, Post::Answer),
            (answer, None, false, Post::PassThrough),
            (batch, None, true, Post::PassThrough),
            (modern_call.clone(), None, false, Post::Modern),
            (modern_call, Some("2026-07-28"), false, Post::Modern),
        ];
        for (value, version, session, expected) in rows {
            let got = classify(&body(value.clone()), version, session);
            assert_eq!(
                got, expected,
                "{value} version={version:?} session={session}"
            );
        }
    }

    #[test]
    fn a_modern_batch_is_refused_before_routing() {
        let mut first = call(1, "a");
        first["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion":"2026-07-28"});
        let batch = json!([first, call(2, "b")]);
        assert!(matches!(
            classify(&body(batch), None, true),
            Post::Refused(_)
        ));
    }

    #[test]
    fn project_tools_never_ride_in_a_batch() {
        let needs = |name: &str| name == "lock";
        let rows = [
            (json!([call(1, "whoami"), call(2, "help")]), false),
            (json!([call(1, "whoami"), call(2, "lock")]), true),
            (json!([call(1, "select_project_for_session")]), true),
            (call(1, "lock"), true),
            (json!({"jsonrpc":"2.0","id":1,"method":"ping"}), false),
        ];
        for (value, refused) in rows {
            let got = batch_refused(&body(value.clone()), "select_project_for_session", needs);
            assert_eq!(got, refused, "{value}");
        }
    }
}
