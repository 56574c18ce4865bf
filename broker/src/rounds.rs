//! The multi round-trip form of 2026-07-28 (`resultType: "input_required"`), for a modern client in
//! front of a legacy backend whose tool asks the client something (`elicitation/create`,
//! `sampling/createMessage`, `roots/list`) on the call's reply stream.
//!
//! 1. The replica relaying the call meets the server request: it answers the client with
//!    [`input_required`] (the request under its sealed id as the key, and a sealed `requestState`
//!    naming the call, [`Parked`]), and goes on reading the backend's stream for the call: each
//!    later message that matters becomes a [`Round`] left in the store under the parked key.
//! 2. The client retries (on any replica) with `inputResponses` and the `requestState`
//!    ([`retry_of`]): each response goes to the backend session its key names, then the next
//!    [`Round`] is taken from the store and answered ([`round_reply`]): the result, the next
//!    question, or (not there yet) a state-only `input_required` that makes the client retry.
//!
//! The other way round, a legacy client in front of a backend that speaks only 2026-07-28: the
//! replica holding the call turns each of an `input_required`'s requests into a real server request
//! on the client's reply stream, under a sealed id naming a [`Pending`] answer; the client's answer
//! (to any replica) is left in the store, and once every answer is there the replica retries the
//! call for the client ([`with_responses`]) until the result comes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ids::{BackendSessionId, PrincipalId, UpstreamId};
use crate::jsonrpc::RequestId;

/// Prefix of the `requestState` the broker gives a parked call.
pub const STATE_PREFIX: &str = "msb-r.";

/// A call parked between two rounds: what its sealed `requestState` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    #[serde(rename = "p")]
    pub principal: PrincipalId,
    #[serde(rename = "u")]
    pub upstream: UpstreamId,
    /// The backend session running the call.
    #[serde(rename = "b")]
    pub backend: BackendSessionId,
    /// The call's id on that backend session.
    #[serde(rename = "c", with = "crate::rpc_ids::id_value")]
    pub call: RequestId,
    /// Where its rounds are left in the store.
    #[serde(rename = "k")]
    pub key: String,
}

/// Prefix of the id of a server request the broker makes from a modern backend's `inputRequests`.
pub const QUESTION_PREFIX: &str = "msb-q.";

/// What a sealed question id names: where the client's answer is left in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    #[serde(rename = "p")]
    pub principal: PrincipalId,
    /// The call's parked key.
    #[serde(rename = "k")]
    pub key: String,
    /// The key of the request in the backend's `inputRequests`.
    #[serde(rename = "i")]
    pub input: String,
}

impl Pending {
    /// The store key the answer is left under.
    pub fn slot(&self) -> String {
        answer_slot(&self.key, &self.input)
    }
}

/// The store key of the answer to `input` of the call parked under `key`.
pub fn answer_slot(key: &str, input: &str) -> String {
    format!("{key}/{input}")
}

/// A backend's `input_required` result: its requests by key, and its state.
pub fn input_required_of(reply: &Value) -> Option<(Map<String, Value>, Option<String>)> {
    let result = reply.get("result")?;
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let requests = result
        .get("inputRequests")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let state = result
        .get("requestState")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((requests, state))
}

/// The server request a legacy client gets for one of a modern backend's `inputRequests`.
pub fn question(id: &str, input_request: &Value) -> Value {
    let mut message = Map::new();
    message.insert("jsonrpc".into(), json!("2.0"));
    message.insert("id".into(), json!(id));
    for key in ["method", "params"] {
        if let Some(value) = input_request.get(key) {
            message.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(message)
}

/// The request again, with the client's answers and the backend's state (a retry round).
pub fn with_responses(
    request: &Value,
    responses: Map<String, Value>,
    state: Option<&str>,
) -> Value {
    let mut retry = request.clone();
    if let Some(params) = retry.get_mut("params").and_then(Value::as_object_mut) {
        params.insert("inputResponses".into(), Value::Object(responses));
        match state {
            Some(state) => params.insert("requestState".into(), json!(state)),
            None => params.remove("requestState"),
        };
    }
    retry
}

/// What the replica reading the backend leaves for the next round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Round {
    /// The call's response (its `result` or `error` member, as the backend sent it).
    Done(Map<String, Value>),
    /// The backend asks again: input requests by key (each key a sealed server-request id).
    Ask(Map<String, Value>),
}

/// A client's retry of a call: its answers by key, and the `requestState` it echoes.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub responses: Map<String, Value>,
    pub state: String,
}

/// The `inputRequests` entry for a server request (`method` and `params`, no id).
pub fn input_request(server_request: &Value) -> Value {
    let mut request = Map::new();
    for key in ["method", "params"] {
        if let Some(value) = server_request.get(key) {
            request.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(request)
}

/// The reply that parks a call: `input_required` with `requests` (none: the client retries after
/// a short backoff with the state alone) and the sealed `state`.
pub fn input_required(id: &RequestId, requests: Map<String, Value>, state: &str) -> Value {
    let mut result = json!({"resultType": "input_required", "requestState": state});
    if !requests.is_empty() {
        result["inputRequests"] = Value::Object(requests);
    }
    json!({"jsonrpc": "2.0", "id": id.to_value(), "result": result})
}

/// A retry, when `params.requestState` is a string the broker sealed (`STATE_PREFIX`).
pub fn retry_of(message: &Map<String, Value>) -> Option<Retry> {
    let params = message.get("params")?.as_object()?;
    let state = params.get("requestState")?.as_str()?;
    if !state.starts_with(STATE_PREFIX) {
        return None;
    }
    let responses = params
        .get("inputResponses")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Some(Retry {
        responses,
        state: state.to_owned(),
    })
}

/// The client's reply for a round: the call's result (complete) or error, or the next question.
pub fn round_reply(id: &RequestId, round: Round, state: &str) -> Value {
    match round {
        Round::Done(mut done) => {
            if let Some(result) = done.get_mut("result").and_then(Value::as_object_mut) {
                result
                    .entry("resultType")
                    .or_insert_with(|| json!("complete"));
            }
            done.insert("jsonrpc".into(), json!("2.0"));
            done.insert("id".into(), id.to_value());
            Value::Object(done)
        }
        Round::Ask(requests) => input_required(id, requests, state),
    }
}

/// The JSON-RPC response (to the backend) that answers one of its requests with a client's result.
pub fn answer_for_backend(id: &RequestId, result: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.to_value(), "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_request_becomes_an_input_request_and_a_parked_reply() {
        let asked =
            json!({"jsonrpc":"2.0","id":0,"method":"elicitation/create","params":{"message":"m"}});
        let mut requests = Map::new();
        requests.insert("msb-s.x.y".into(), input_request(&asked));
        let reply = input_required(&RequestId::Number(7), requests, "msb-r.s.t");
        assert_eq!(
            reply,
            json!({"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","requestState":"msb-r.s.t",
                "inputRequests":{"msb-s.x.y":{"method":"elicitation/create","params":{"message":"m"}}}}})
        );
        let state_only = input_required(&RequestId::Number(8), Map::new(), "msb-r.s.t");
        assert!(state_only["result"].get("inputRequests").is_none());
    }

    #[test]
    fn retries_are_recognized_by_a_sealed_state_only() {
        let retry = |params: Value| {
            let message = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params});
            retry_of(message.as_object().unwrap_or(&Map::new()))
        };
        let answered = retry(
            json!({"name":"t","inputResponses":{"k":{"action":"accept"}},"requestState":"msb-r.a.b"}),
        );
        assert_eq!(
            answered.map(|r| (r.responses.len(), r.state)),
            Some((1, "msb-r.a.b".into()))
        );
        let state_only = retry(json!({"name":"t","requestState":"msb-r.a.b"}));
        assert_eq!(state_only.map(|r| r.responses.len()), Some(0));
        assert_eq!(
            retry(json!({"name":"t","requestState":"a backend's own"})),
            None
        );
        assert_eq!(retry(json!({"name":"t"})), None);
    }

    #[test]
    fn a_modern_backends_questions_become_server_requests_and_a_retry() {
        let reply = json!({"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required",
            "inputRequests":{"q1":{"method":"elicitation/create","params":{"message":"m"}}},"requestState":"s1"}});
        let (requests, state) = input_required_of(&reply).unwrap_or_default();
        assert_eq!(state.as_deref(), Some("s1"));
        let asked = question("msb-q.x.y", &requests["q1"]);
        assert_eq!(
            asked,
            json!({"jsonrpc":"2.0","id":"msb-q.x.y","method":"elicitation/create","params":{"message":"m"}})
        );
        assert_eq!(
            input_required_of(&json!({"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}})),
            None
        );
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}});
        let mut responses = Map::new();
        responses.insert("q1".into(), json!({"action":"accept"}));
        let retry = with_responses(&call, responses, Some("s1"));
        assert_eq!(
            retry["params"]["inputResponses"]["q1"]["action"],
            json!("accept")
        );
        assert_eq!(retry["params"]["requestState"], json!("s1"));
        assert_eq!(answer_slot("k", "q1"), "k/q1");
    }

    #[test]
    fn rounds_answer_the_retry_with_its_own_id() {
        let mut done = Map::new();
        done.insert("result".into(), json!({"content":[]}));
        let reply = round_reply(&RequestId::Number(3), Round::Done(done), "s");
        assert_eq!(
            reply,
            json!({"jsonrpc":"2.0","id":3,"result":{"content":[],"resultType":"complete"}})
        );
        let mut error = Map::new();
        error.insert("error".into(), json!({"code":-1,"message":"m"}));
        let reply = round_reply(&RequestId::Number(4), Round::Done(error), "s");
        assert_eq!(reply["error"]["message"], json!("m"));
        let round: Round = serde_json::from_value(json!({"ask":{"k":{"method":"ping"}}}))
            .unwrap_or(Round::Ask(Map::new()));
        assert!(matches!(round, Round::Ask(ref r) if r.contains_key("k")));
    }
}
