//! Who owns the JSON-RPC ids on a backend session that many client MCP sessions share.
//!
//! A work session's backend session carries the calls of every client MCP session of that work
//! session (a connector opens one per call, and each starts its ids at 0 or 1), so client ids
//! collide there. The broker therefore owns the id space of every backend session:
//!
//! | message | on its way | id |
//! |---|---|---|
//! | a client request | to the backend | [`upstream_id`]: `msb-c-<hash of principal, MCP session, client id>` (or of a nonce) |
//! | the backend's reply, error or progress about it | to the client | the client's own id again (the relay keeps the pair) |
//! | a client's `notifications/cancelled` | to the backend | `requestId` becomes the same [`upstream_id`] |
//! | a server request (elicitation, sampling, roots, ping) | to the client | [`Sealer::seal`]: `msb-s.<payload>.<mac>`, naming the backend session that asked |
//! | the client's response to it | to the backend | [`Sealer::open`]: the backend's own id, on the backend session that asked |
//!
//! The broker's own requests (`session-broker-...` ids) cannot collide with any of them, since no
//! client id reaches a backend unmapped. A sealed id is an HMAC under a key derived from the signing
//! key: a client cannot forge one, and one issued to another principal is refused, so no client can
//! aim a response at a backend session it was not asked from. Every replica derives the same key, so
//! the answer may reach any of them, with no shared lookup.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ids::{BackendSessionId, McpSessionId, PrincipalId, UpstreamId};
use crate::jsonrpc::RequestId;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of the ids the broker gives client requests on a backend session.
pub const CLIENT_PREFIX: &str = "msb-c-";
/// Prefix of the ids the broker gives server requests on their way to a client.
pub const SERVER_PREFIX: &str = "msb-s.";
/// Longest sealed id the broker opens (a backend session id is at most 512 characters).
const MAX_SEALED: usize = 2048;

/// What a client id is unique in.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A legacy client's MCP session: the same client id always maps to the same upstream id, so a
    /// cancellation sent later (to any replica) names the same request.
    Session {
        principal: &'a PrincipalId,
        session: &'a McpSessionId,
    },
    /// One request alone (a sessionless client, or a client reusing an id still in flight): a
    /// random nonce the broker drew for it.
    Request { nonce: &'a str },
}

/// The id a client request carries on the backend session.
pub fn upstream_id(scope: Scope<'_>, client: &RequestId) -> RequestId {
    let mut hash = Sha256::new();
    match scope {
        Scope::Session { principal, session } => {
            hash.update(b"session\0");
            hash.update(principal.as_str());
            hash.update(b"\0");
            hash.update(session.as_str());
        }
        Scope::Request { nonce } => {
            hash.update(b"request\0");
            hash.update(nonce);
        }
    }
    hash.update(b"\0");
    match client {
        RequestId::Number(n) => hash.update(format!("n:{n}")),
        RequestId::Text(s) => hash.update(format!("s:{s}")),
    }
    let digest = hash.finalize();
    RequestId::Text(format!("{CLIENT_PREFIX}{}", hex::encode(&digest[..12])))
}

/// Whether an id is one the broker gave a client request (it never reaches a client).
pub fn is_upstream_id(id: &RequestId) -> bool {
    matches!(id, RequestId::Text(s) if s.starts_with(CLIENT_PREFIX))
}

/// A server-to-client request: which backend session asked, and with which id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// The principal whose client was asked: only it may answer.
    #[serde(rename = "p")]
    pub principal: PrincipalId,
    /// The upstream instance the backend session lives on.
    #[serde(rename = "u")]
    pub upstream: UpstreamId,
    /// The backend session that asked.
    #[serde(rename = "b")]
    pub backend: BackendSessionId,
    /// The backend's own id for its request.
    #[serde(rename = "i", with = "id_value")]
    pub id: RequestId,
}

/// Why a client's response could not be routed by its id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    /// Not an id the broker issued: the response goes where it would have gone before.
    #[error("not an id the broker issued")]
    NotSealed,
    /// It looks like one, but its MAC does not verify, or it does not parse.
    #[error("the id of this response was not issued by the broker, or was altered")]
    Forged,
    /// It verifies, but was issued to another principal's client.
    #[error("the id of this response was issued to another client")]
    Foreign,
}

/// Seals and opens the ids of server requests.
#[derive(Clone)]
pub struct Sealer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer whose key is derived from `secret` (domain-separated from every other use of it).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: mac(secret, b"mcp-session-broker/server-request-id/v1").to_vec(),
        }
    }

    /// The id a server request carries on its way to the client.
    pub fn seal(&self, asked: &Asked) -> RequestId {
        RequestId::Text(self.seal_with(SERVER_PREFIX, asked))
    }

    /// Where a client's response to a server request goes: the backend session that asked, when
    /// `id` is one this broker sealed for `caller`.
    pub fn open(&self, id: &RequestId, caller: &PrincipalId) -> Result<Asked, Unsealed> {
        let RequestId::Text(text) = id else {
            return Err(Unsealed::NotSealed);
        };
        let asked: Asked = self.open_with(SERVER_PREFIX, text)?;
        if &asked.principal != caller {
            return Err(Unsealed::Foreign);
        }
        Ok(asked)
    }

    /// `prefix`, the payload as base64url JSON, `.`, and its MAC (16 bytes, base64url).
    pub fn seal_with<T: Serialize>(&self, prefix: &str, payload: &T) -> String {
        let payload = serde_json::to_vec(payload).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let tag = URL_SAFE_NO_PAD.encode(&mac(&self.key, payload.as_bytes())[..16]);
        format!("{prefix}{payload}.{tag}")
    }

    /// The payload of a text [`Sealer::seal_with`] made with `prefix`; the caller checks whose it is.
    pub fn open_with<T: DeserializeOwned>(&self, prefix: &str, text: &str) -> Result<T, Unsealed> {
        let Some(rest) = text.strip_prefix(prefix) else {
            return Err(Unsealed::NotSealed);
        };
        if text.len() > MAX_SEALED {
            return Err(Unsealed::Forged);
        }
        let (payload, tag) = rest.split_once('.').ok_or(Unsealed::Forged)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Unsealed::Forged)?;
        if tag.len() != 16 {
            return Err(Unsealed::Forged); // checked first: an empty tag would verify trivially
        }
        let mut check =
            <HmacSha256 as Mac>::new_from_slice(&self.key).map_err(|_| Unsealed::Forged)?;
        check.update(payload.as_bytes());
        check
            .verify_truncated_left(&tag)
            .map_err(|_| Unsealed::Forged)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Unsealed::Forged)?;
        serde_json::from_slice(&bytes).map_err(|_| Unsealed::Forged)
    }
}

fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `id` of a JSON-RPC request (`method` and `id`), the client's or the server's.
pub fn request_id(message: &Value) -> Option<RequestId> {
    message.get("method")?;
    message.get("id").and_then(RequestId::from_value)
}

/// The `id` of a JSON-RPC response (no `method`, a `result` or an `error`).
pub fn response_id(message: &Value) -> Option<RequestId> {
    if message.get("method").is_some()
        || (message.get("result").is_none() && message.get("error").is_none())
    {
        return None;
    }
    message.get("id").and_then(RequestId::from_value)
}

/// `params.requestId` of a `notifications/cancelled`.
pub fn cancelled_request_id(message: &Value) -> Option<RequestId> {
    if message.get("method").and_then(Value::as_str) != Some("notifications/cancelled") {
        return None;
    }
    message
        .pointer("/params/requestId")
        .and_then(RequestId::from_value)
}

/// Sets `params.requestId` of a `notifications/cancelled`.
pub fn set_cancelled_request_id(message: &mut Value, id: &RequestId) {
    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
        params.insert("requestId".to_owned(), id.to_value());
    }
}

/// Sets a message's `id`.
pub fn set_id(message: &mut Value, id: &RequestId) {
    if let Some(map) = message.as_object_mut() {
        map.insert("id".to_owned(), id.to_value());
    }
}

pub(crate) mod id_value {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::jsonrpc::RequestId;

    pub fn serialize<S: Serializer>(id: &RequestId, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&id.to_value(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RequestId, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        RequestId::from_value(&value)
            .ok_or_else(|| serde::de::Error::custom("an id must be a string or an integer"))
    }
}

#[cfg(test)]
mod tests;
