//! The multi round-trip form for modern clients in front of a legacy backend
//! ([`broker::rounds`] decides the messages; this file moves them):
//! - [`Park`]: what a relay needs to park a call when the backend asks its client something, and
//!   [`Park::message`] and [`Park::ended`], which turn the rest of the backend's stream into rounds
//!   left in the store;
//! - [`resume`]: a client's retry, on any replica: its answers go to the backend session that
//!   asked, and the next round is taken from the store.
//!
//! Shared state: one store entry per parked call (`park:<key>`, random key, 10 min), written only by
//! the relay reading that call's stream, taken (`GETDEL`) by the retry that waits for it; a round
//! is written only after the previous retry delivered its answers, so no round overwrites another
//! that nobody took.

use std::sync::Arc;
use std::time::Duration;

use broker::ids::PrincipalId;
use broker::jsonrpc::{Message, RequestId};
use broker::rounds::{self, Parked, Pending, QUESTION_PREFIX, Round, STATE_PREFIX};
use broker::rpc_ids;
use broker::store::Store;
use http::header::HeaderMap;
use http::{Response, StatusCode};
use serde_json::{Map, Value};

use super::{AnswerError, SealFor};
use crate::backend::body::ProxyBody;
use crate::backend::outbound::{post_json, session_headers};
use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::errors::{ProxyError, json_response};

/// How long a parked call's rounds wait in the store for the client's retry.
pub const PARKED_TTL: Duration = Duration::from_secs(600);
/// How long a retry waits for the next round before it tells the client to retry again.
pub const ROUND_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting retry looks for the next round.
const POLL: Duration = Duration::from_millis(50);

/// A bridged call that may be parked: where its rounds go, and what its client is told.
pub struct Park {
    pub store: Arc<dyn Store>,
    pub principal: PrincipalId,
    /// The call's id on the backend session.
    pub call: RequestId,
    /// The client's id for the call.
    pub client_id: RequestId,
    pub key: String,
    /// The sealed `requestState`.
    pub state: String,
}

impl Park {
    /// A park for `call` (its upstream id) on the sealed backend session of `seal`.
    pub fn new(app: &Mcp, seal: &SealFor, call: RequestId, client_id: RequestId) -> Self {
        let key = broker::ids::random_hex128();
        let parked = Parked {
            principal: seal.principal.clone(),
            upstream: seal.upstream.clone(),
            backend: seal.backend.clone(),
            call: call.clone(),
            key: key.clone(),
        };
        Self {
            store: app.store.clone(),
            principal: seal.principal.clone(),
            call,
            client_id,
            state: app.sealer.seal_with(STATE_PREFIX, &parked),
            key,
        }
    }

    /// The client's reply for the first server request (already sealed): `input_required`.
    pub fn first_reply(&self, sealed_request: &Value) -> Value {
        rounds::input_required(&self.client_id, asks(sealed_request), &self.state)
    }

    /// One message of the backend's stream after the call was parked: a round to leave for the
    /// retry, if it is one (the call's response, or another server request, already sealed).
    /// Returns whether the call is done.
    pub async fn message(&self, message: &Value) -> bool {
        let (round, done) = if rpc_ids::response_id(message).as_ref() == Some(&self.call) {
            let mut done = Map::new();
            for key in ["result", "error"] {
                if let Some(value) = message.get(key) {
                    done.insert(key.to_owned(), value.clone());
                }
            }
            (Round::Done(done), true)
        } else if rpc_ids::request_id(message).is_some() {
            (Round::Ask(asks(message)), false)
        } else {
            return false; // notifications about the call: nobody listens while it is parked
        };
        self.leave(&round).await;
        done
    }

    /// The backend's stream ended before the call's response.
    pub async fn ended(&self) {
        let mut done = Map::new();
        done.insert(
            "error".into(),
            serde_json::json!({"code": broker::jsonrpc::codes::INTERNAL_ERROR,
                "message": "session-broker: the server closed the call before answering it"}),
        );
        self.leave(&Round::Done(done)).await;
    }

    async fn leave(&self, round: &Round) {
        let text = serde_json::to_string(round).unwrap_or_default();
        let put = self
            .store
            .put_parked(&self.principal, &self.key, &text, PARKED_TTL);
        if let Err(error) = put.await {
            tracing::warn!(%error, "could not leave a parked call's round in the store");
        }
    }
}

/// A server request (sealed id) as the `inputRequests` map of one entry, keyed by its id.
fn asks(sealed_request: &Value) -> Map<String, Value> {
    let mut requests = Map::new();
    if let Some(RequestId::Text(key)) = rpc_ids::request_id(sealed_request) {
        requests.insert(key, rounds::input_request(sealed_request));
    }
    requests
}

/// A modern client's retry of a parked call, when its `requestState` is one the broker sealed for
/// this caller (`None`: not a retry of the broker's; it goes on as any request).
pub async fn resume(
    app: &Arc<Mcp>,
    caller: &Caller,
    legacy_version: &str,
    message: &Message,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    let retry = rounds::retry_of(&message.value)?;
    let id = message.id.clone().unwrap_or(RequestId::Number(0));
    Some(resume_retry(app, caller, legacy_version, &id, retry).await)
}

async fn resume_retry(
    app: &Arc<Mcp>,
    caller: &Caller,
    legacy_version: &str,
    id: &RequestId,
    retry: rounds::Retry,
) -> Result<Response<ProxyBody>, ProxyError> {
    let parked: Parked = app
        .sealer
        .open_with(STATE_PREFIX, &retry.state)
        .map_err(AnswerError::from)?;
    if parked.principal != caller.principal {
        return Err(AnswerError::Unsealed(rpc_ids::Unsealed::Foreign).into());
    }
    for (key, response) in &retry.responses {
        let sealed = RequestId::Text(key.clone());
        let asked = app
            .sealer
            .open(&sealed, &caller.principal)
            .map_err(AnswerError::from)?;
        let answer = rounds::answer_for_backend(&asked.id, response);
        if asked.upstream != app.upstream_id {
            // Asked through another replica's upstream: the relay parked there delivers it.
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            super::courier::leave(app, &caller.principal, &sealed, &body).await?;
            continue;
        }
        let headers = session_headers(
            caller.own_request_headers(),
            Some(&asked.backend),
            Some(legacy_version),
        );
        deliver(
            app,
            headers,
            &rounds::answer_for_backend(&asked.id, response),
        )
        .await?;
    }
    let waited = tokio::time::Instant::now();
    loop {
        let taken = app
            .store
            .take_parked(&caller.principal, &parked.key)
            .await?;
        if let Some(text) = taken {
            let round: Round = serde_json::from_str(&text).unwrap_or(Round::Ask(Map::new()));
            let reply = rounds::round_reply(id, round, &retry.state);
            return Ok(json_response(StatusCode::OK, &reply));
        }
        if waited.elapsed() >= ROUND_WAIT {
            // Not there yet: the client retries with the state alone after a short backoff.
            let reply = rounds::input_required(id, Map::new(), &retry.state);
            return Ok(json_response(StatusCode::OK, &reply));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn deliver(app: &Mcp, headers: HeaderMap, answer: &Value) -> Result<(), ProxyError> {
    let sent = post_json(&app.upstream, app.settings.mcp_path(), headers, answer).await?;
    if !sent.status().is_success() {
        tracing::warn!(status = %sent.status(), "the backend session that asked did not take the answer");
    }
    Ok(())
}

/// A legacy client's call to a backend that speaks only 2026-07-28: an `input_required` reply is
/// turned into server requests on the client's reply stream, and the call retried with the answers.
pub struct Questions {
    pub app: Arc<Mcp>,
    pub principal: PrincipalId,
    /// The (modernized) request as sent upstream, and its headers, for the retries.
    pub request: Value,
    pub headers: HeaderMap,
}

impl Questions {
    /// Asks the client every request of an `input_required` reply (sealed ids, sent with `send`),
    /// waits for its answers (left in the store by whichever replica receives them), and retries
    /// the call. Returns the backend's next reply, or an error reply for the client.
    pub async fn round<F, Fut>(
        &mut self,
        reply: &Value,
        send: F,
        gone: impl Fn() -> bool,
    ) -> Result<Value, Value>
    where
        F: Fn(Value) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let client_id = reply
            .get("id")
            .and_then(RequestId::from_value)
            .unwrap_or(RequestId::Number(0));
        let fail = |text: &str| {
            broker::jsonrpc::error_reply(
                Some(&client_id),
                broker::jsonrpc::codes::INTERNAL_ERROR,
                &format!("session-broker: {text}"),
            )
        };
        let Some((requests, state)) = rounds::input_required_of(reply) else {
            return Ok(reply.clone());
        };
        let key = broker::ids::random_hex128();
        for input in requests.keys() {
            let pending = Pending {
                principal: self.principal.clone(),
                key: key.clone(),
                input: input.clone(),
            };
            let id = self.app.sealer.seal_with(QUESTION_PREFIX, &pending);
            if !send(rounds::question(&id, &requests[input])).await {
                return Err(fail("the client went away"));
            }
        }
        let mut responses = Map::new();
        let waited = tokio::time::Instant::now();
        while responses.len() < requests.len() {
            let missing: Vec<String> = requests
                .keys()
                .filter(|k| !responses.contains_key(*k))
                .cloned()
                .collect();
            for input in &missing {
                let slot = rounds::answer_slot(&key, input);
                let taken = self.app.store.take_parked(&self.principal, &slot).await;
                match taken {
                    Ok(Some(text)) => {
                        let answer = serde_json::from_str(&text).unwrap_or(Value::Null);
                        responses.insert(input.clone(), answer);
                    }
                    Ok(None) => {}
                    Err(error) => return Err(fail(&format!("the session store failed: {error}"))),
                }
            }
            if responses.len() == requests.len() {
                break;
            }
            if waited.elapsed() >= PARKED_TTL {
                return Err(fail(
                    "the client did not answer the server's questions in time",
                ));
            }
            if gone() {
                return Err(fail("the client went away")); // nobody reads it: the caller drops it
            }
            tokio::time::sleep(POLL).await;
        }
        self.request = rounds::with_responses(&self.request, responses, state.as_deref());
        let path = self.app.settings.mcp_path();
        let sent = post_json(
            &self.app.upstream,
            path,
            self.headers.clone(),
            &self.request,
        )
        .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Err(fail(&error.to_string())),
        };
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            crate::mcp::REWRITE_LIMIT,
        ))
        .await;
        match body {
            Ok(body) => serde_json::from_slice(&body.to_bytes())
                .map_err(|_| fail("the server's retry reply is not JSON")),
            Err(_) => Err(fail("the server's retry reply could not be read")),
        }
    }
}

/// A legacy client's answer to a question the broker asked for a modern backend: left where the
/// replica holding the call looks for it. `None`: not such an id.
pub async fn leave_answer(
    app: &Mcp,
    caller: &Caller,
    id: &RequestId,
    message: &Value,
) -> Option<Result<(), ProxyError>> {
    let RequestId::Text(text) = id else {
        return None;
    };
    let pending: Pending = match app.sealer.open_with(QUESTION_PREFIX, text) {
        Ok(pending) => pending,
        Err(rpc_ids::Unsealed::NotSealed) => return None,
        Err(error) => return Some(Err(AnswerError::from(error).into())),
    };
    if pending.principal != caller.principal {
        return Some(Err(AnswerError::Unsealed(rpc_ids::Unsealed::Foreign).into()));
    }
    let answer = message
        .get("result")
        .or_else(|| message.get("error"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = serde_json::to_string(&answer).unwrap_or_default();
    let slot = pending.slot();
    let put = app
        .store
        .put_parked(&caller.principal, &slot, &text, PARKED_TTL);
    Some(put.await.map_err(ProxyError::from))
}
