//! What the service tests share: planning a call as the edge and the MCP layer do (the principal
//! from the credential, the caller, `call::plan`), and settling a planned select as the relay does
//! (its hook run on the backend's success).

use std::sync::Arc;

use broker::jsonrpc::Message;
use http::request::Parts;
use proxy::App;
use proxy::mcp::call::{self, Outcome, Plan};
use proxy::mcp::caller::Caller;

/// Plans `message` from a request with `parts`, as a POST on the MCP path would.
pub async fn plan(app: &Arc<App>, parts: &Parts, mut message: Message) -> Outcome {
    let principal = proxy::edge::identify::who(app, &parts.headers, None)
        .await
        .expect("principal");
    let caller = Caller::identify(app, parts, principal, None).expect("caller");
    call::plan(&app.mcp, &caller, &mut message, None)
        .await
        .expect("plan")
}

/// Runs a planned select's hook on a successful reply, as the relay does (it binds and counts the
/// selection); returns the handle appended to the reply.
pub async fn settle(plan: Box<Plan>) -> String {
    let hook = plan.watch.select.expect("the select is watched");
    let mut reply = serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "selected"}]}});
    assert!(
        hook.on_reply(&mut reply).await,
        "the reply gains the handle"
    );
    let text = reply["result"]["content"][1]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a handle item in {reply}"));
    text.strip_prefix("work_session: ")
        .expect("the handle")
        .to_owned()
}
