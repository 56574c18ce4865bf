//! Message routing on shared backend sessions: the broker owns the JSON-RPC ids there
//! ([`broker::rpc_ids`] decides them; this module applies them to bodies and streams).
//!
//! - **Client requests** get an upstream id before they reach a backend session ([`own_ids`]);
//!   the relay gives every reply, error and progress about them the client's id back ([`IdMap`]).
//! - **Server requests** on a reply stream or a GET stream get a sealed id naming the backend
//!   session that asked ([`SealFor`]); the client's answer goes there, from any replica
//!   ([`answer_target`]).
//! - **Cancellations** name the upstream id of the request on the backend session that runs it
//!   ([`InFlight`] on this replica; the same deterministic id elsewhere), and a client that closes a
//!   request's reply stream cancels what it left unanswered ([`crate::mcp::relay::session::cancel_hook`]).
//!
//! Shared state: [`InFlight`], the requests of legacy clients in flight on this replica, by
//! (principal, MCP session, client id). Who writes it: the request that registers an entry removes
//! it when its relay ends (the [`IdMap`]'s drop); a second request with the same key while the
//! first is in flight (a client reusing an id) is not registered and gets an id of its own, so no
//! entry is ever overwritten and a cancellation names the first. Bounded at [`MAX_IN_FLIGHT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use broker::ids::{BackendSessionId, McpSessionId, PrincipalId, UpstreamId};
use broker::jsonrpc::RequestId;
use broker::jsonrpc::envelope::Envelope;
use broker::rpc_ids::{self, Asked, Scope, Sealer, Unsealed};
use bytes::Bytes;
use serde_json::Value;

use crate::mcp::Mcp;
use crate::mcp::caller::Caller;
use crate::mcp::errors::AnswerError;

pub mod courier;
pub mod rounds;

pub use courier::Courier;

/// Most requests registered in flight on one replica (beyond, a request is still mapped, but a
/// cancellation of it reaching this replica is routed like one reaching another replica).
pub const MAX_IN_FLIGHT: usize = 65_536;

type Key = (PrincipalId, McpSessionId, RequestId);

/// Where a request in flight runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub backend: BackendSessionId,
    pub upstream_id: RequestId,
}

/// Legacy clients' requests in flight on this replica (see the module doc for who writes it).
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<Key, Running>>);

impl InFlight {
    /// Registers a request; `false` when its key is in flight already or the map is full.
    fn register(&self, key: Key, running: Running) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        if map.len() >= MAX_IN_FLIGHT || map.contains_key(&key) {
            return false;
        }
        map.insert(key, running);
        true
    }

    fn remove(&self, key: &Key) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// Where a client's request runs, when it runs through this replica.
    pub fn find(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
        id: &RequestId,
    ) -> Option<Running> {
        let map = self.0.lock().ok()?;
        map.get(&(principal.clone(), session.clone(), id.clone()))
            .cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// One client request's ids: the upstream id it carries on the backend session, its own id.
#[derive(Debug)]
struct Pair {
    upstream: RequestId,
    client: RequestId,
    answered: bool,
}

/// The ids a forwarded body's requests carry upstream, for the relay to give their replies the
/// client's ids back. Dropping it (the relay ended) removes the requests from [`InFlight`].
#[derive(Default)]
pub struct IdMap {
    pairs: Vec<Pair>,
    registered: Vec<Key>,
    in_flight: Option<Arc<InFlight>>,
}

impl Drop for IdMap {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.in_flight {
            for key in &self.registered {
                in_flight.remove(key);
            }
        }
    }
}

impl IdMap {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Gives a backend response the client's id back, and a server request a sealed id when `seal`
    /// is given ([`IdMap::id_to_client`], on a parsed message). Returns whether it changed.
    pub fn to_client(&mut self, seal: Option<&SealFor>, message: &mut Value) -> bool {
        let response = rpc_ids::response_id(message);
        let request = rpc_ids::request_id(message);
        let Some(id) = self.id_to_client(seal, response, request) else {
            return false;
        };
        rpc_ids::set_id(message, &id);
        true
    }

    /// The id a backend's message takes to the client, from its ids as `rpc_ids` reads them (a
    /// message has at most one: a request has a `method`, a response none): a reply the id of the
    /// client's request again (marked answered), a server request a sealed one (when `seal` is
    /// given); `None` leaves the id as it is (a reply to an id the broker did not give, a
    /// notification). The relay's fast path asks it with the ids the envelope read.
    pub fn id_to_client(
        &mut self,
        seal: Option<&SealFor>,
        response: Option<RequestId>,
        request: Option<RequestId>,
    ) -> Option<RequestId> {
        if let Some(upstream) = response {
            let pair = self.pairs.iter_mut().find(|p| p.upstream == upstream)?;
            pair.answered = true;
            return Some(pair.client.clone());
        }
        Some(seal?.sealed(request?))
    }

    /// The upstream id of the client's request `client`.
    pub fn upstream_of(&self, client: &RequestId) -> Option<RequestId> {
        self.pairs
            .iter()
            .find(|p| &p.client == client)
            .map(|p| p.upstream.clone())
    }

    /// The upstream ids of requests not answered yet.
    pub fn unanswered(&self) -> Vec<RequestId> {
        self.pairs
            .iter()
            .filter(|p| !p.answered)
            .map(|p| p.upstream.clone())
            .collect()
    }
}

/// Gives every request in `body` an upstream id for `backend` and maps its cancellations. `None`
/// when the body holds no request id to change (notifications alone, or not JSON).
pub fn own_ids(
    app: &Mcp,
    caller: &Caller,
    body: &Bytes,
    backend: &BackendSessionId,
) -> Option<(Bytes, IdMap)> {
    if body.is_empty() {
        return None;
    }
    let mut ids = IdMap {
        pairs: Vec::new(),
        registered: Vec::new(),
        in_flight: Some(app.in_flight.clone()),
    };
    // A single request (nearly every body): its id spliced in, nothing else parsed or written.
    if let Some(envelope) = std::str::from_utf8(body).ok().and_then(Envelope::read)
        && let Some(client) = envelope.request_id()
    {
        let upstream = own_request(app, caller, client, backend, &mut ids);
        return Some((Bytes::from(envelope.with_id(&upstream)?), ids));
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    match &mut value {
        Value::Array(items) => {
            for item in items {
                changed |= own_message(app, caller, item, backend, &mut ids);
            }
        }
        message => changed |= own_message(app, caller, message, backend, &mut ids),
    }
    if !changed {
        return None;
    }
    let bytes = serde_json::to_vec(&value).ok()?;
    Some((Bytes::from(bytes), ids))
}

fn own_message(
    app: &Mcp,
    caller: &Caller,
    message: &mut Value,
    backend: &BackendSessionId,
    ids: &mut IdMap,
) -> bool {
    if let Some(client) = rpc_ids::request_id(message) {
        // A client request (`method` and `id`).
        let upstream = own_request(app, caller, client, backend, ids);
        rpc_ids::set_id(message, &upstream);
        return true;
    }
    if let Some(client) = rpc_ids::cancelled_request_id(message) {
        let upstream = cancelled_upstream_id(app, caller, &client);
        rpc_ids::set_cancelled_request_id(message, &upstream);
        return true;
    }
    if let Some(id) = rpc_ids::response_id(message)
        && let Ok(asked) = app.sealer.open(&id, &caller.principal)
    {
        // An answer to a server request, batched: the backend's own id again.
        rpc_ids::set_id(message, &asked.id);
        return true;
    }
    false
}

/// The upstream id the client's request `client` takes to `backend`, its pair kept in `ids` for
/// the reply.
fn own_request(
    app: &Mcp,
    caller: &Caller,
    client: RequestId,
    backend: &BackendSessionId,
    ids: &mut IdMap,
) -> RequestId {
    let upstream = upstream_id_for(app, caller, &client, backend, ids);
    ids.pairs.push(Pair {
        upstream: upstream.clone(),
        client,
        answered: false,
    });
    upstream
}

/// The upstream id of a legacy client's request: the deterministic one for its MCP session (so a
/// cancellation anywhere names it), unless that is in flight already; a sessionless request's is
/// drawn from a nonce.
fn upstream_id_for(
    app: &Mcp,
    caller: &Caller,
    client: &RequestId,
    backend: &BackendSessionId,
    ids: &mut IdMap,
) -> RequestId {
    if let Some(claims) = &caller.session {
        let scope = Scope::Session {
            principal: &caller.principal,
            session: &claims.sid,
        };
        let upstream = rpc_ids::upstream_id(scope, client);
        let key = (caller.principal.clone(), claims.sid.clone(), client.clone());
        let running = Running {
            backend: backend.clone(),
            upstream_id: upstream.clone(),
        };
        if app.in_flight.register(key.clone(), running) {
            ids.registered.push(key);
            return upstream;
        }
    }
    let nonce = broker::ids::random_hex128();
    rpc_ids::upstream_id(Scope::Request { nonce: &nonce }, client)
}

/// The upstream id a client's cancellation names: the one its request got on this replica, else the
/// deterministic one of its MCP session.
pub fn cancelled_upstream_id(app: &Mcp, caller: &Caller, client: &RequestId) -> RequestId {
    let Some(claims) = &caller.session else {
        return client.clone();
    };
    if let Some(running) = app.in_flight.find(&caller.principal, &claims.sid, client) {
        return running.upstream_id;
    }
    let scope = Scope::Session {
        principal: &caller.principal,
        session: &claims.sid,
    };
    rpc_ids::upstream_id(scope, client)
}

/// What a relay seals server requests with: the backend session they come from.
#[derive(Clone)]
pub struct SealFor {
    pub sealer: Sealer,
    pub principal: PrincipalId,
    pub upstream: UpstreamId,
    pub backend: BackendSessionId,
    /// With replicas (a shared store): watches for answers replicas of other upstreams receive.
    pub courier: Option<Courier>,
}

impl SealFor {
    /// Gives a server request a sealed id. Returns whether it changed.
    pub fn seal(&self, message: &mut Value) -> bool {
        let Some(id) = rpc_ids::request_id(message) else {
            return false;
        };
        rpc_ids::set_id(message, &self.sealed(id));
        true
    }

    /// The sealed id of the backend's request `id` (watched for when a courier is set).
    pub fn sealed(&self, id: RequestId) -> RequestId {
        let asked = Asked {
            principal: self.principal.clone(),
            upstream: self.upstream.clone(),
            backend: self.backend.clone(),
            id,
        };
        let sealed = self.sealer.seal(&asked);
        if let Some(courier) = &self.courier {
            courier.watch(&self.principal, &sealed);
        }
        sealed
    }
}

/// Where a client's answer to a server request goes.
pub enum Target {
    /// To this backend session, on this replica's upstream, with this body.
    Backend(BackendSessionId, Bytes),
    /// Asked on another replica's upstream: left in the store for the replica relaying the stream
    /// it was asked on ([`courier`]).
    Relay(RequestId, Bytes),
}

/// Where a client's single response goes: `Ok(None)` for an id the broker did not seal (it goes
/// where it went before), else the [`Target`], with the body holding the backend's own id.
pub fn answer_target(
    app: &Mcp,
    caller: &Caller,
    message: &Value,
) -> Result<Option<Target>, AnswerError> {
    let Some(id) = rpc_ids::response_id(message) else {
        return Ok(None);
    };
    let asked = match app.sealer.open(&id, &caller.principal) {
        Ok(asked) => asked,
        Err(Unsealed::NotSealed) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut answer = message.clone();
    rpc_ids::set_id(&mut answer, &asked.id);
    let body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
    if asked.upstream != app.upstream_id {
        return Ok(Some(Target::Relay(id, body)));
    }
    Ok(Some(Target::Backend(asked.backend, body)))
}

#[cfg(test)]
mod tests;
