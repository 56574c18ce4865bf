//! Who is calling and in which conversation (the UI is [`crate::surface`]'s job).
//!
//! - the **principal** is an HMAC-SHA256 of the credential under a server secret, so the same credential
//!   always maps to the same id and the credential itself is never stored;
//! - the **conversation key** is a hash of a client-provided conversation id.
//!
//! Nothing here does I/O; the proxy hands in header values and gets typed ids back.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::ids::{ConversationKey, PrincipalId};

type HmacSha256 = Hmac<Sha256>;

/// Why no principal could be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("a bearer credential is required (Authorization: Bearer <token>)")]
    MissingCredential,
    #[error("the Authorization header is empty or malformed")]
    MalformedCredential,
}

/// Hashes credentials into principal ids with a server secret.
#[derive(Clone)]
pub struct PrincipalHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for PrincipalHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalHasher(..)")
    }
}

impl PrincipalHasher {
    /// A hasher whose key is derived from `secret` (domain-separated, so the same secret used for
    /// token signing yields an unrelated key here).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac_bytes(secret, b"mcp-session-broker/principal/v1"),
        }
    }

    /// The principal for an `Authorization` header value, or the anonymous principal when there is no
    /// header and anonymous callers are allowed.
    pub fn principal(
        &self,
        authorization: Option<&str>,
        allow_anonymous: bool,
    ) -> Result<PrincipalId, IdentityError> {
        match authorization {
            None if allow_anonymous => Ok(self.hash(b"\0anonymous")),
            None => Err(IdentityError::MissingCredential),
            Some(value) => {
                let credential = credential_of(value).ok_or(IdentityError::MalformedCredential)?;
                Ok(self.hash(credential.as_bytes()))
            }
        }
    }

    /// The principal of an identity established elsewhere: a verified token's issuer and subject,
    /// or a trusted proxy's header. `kind` keeps the sources apart (the same text from two sources
    /// is two principals).
    pub fn of_identity(&self, kind: &str, parts: &[&str]) -> PrincipalId {
        let mut message = Vec::new();
        message.extend_from_slice(b"\0identity\0");
        message.extend_from_slice(kind.as_bytes());
        for part in parts {
            message.push(0);
            message.extend_from_slice(&(part.len() as u64).to_be_bytes());
            message.extend_from_slice(part.as_bytes());
        }
        self.hash(&message)
    }

    fn hash(&self, credential: &[u8]) -> PrincipalId {
        let digest = hmac_bytes(&self.key, credential);
        // 128 bits are plenty to tell credentials apart; the id is hex, so it always validates.
        PrincipalId::parse(hex::encode(&digest[..16])).unwrap_or_else(|_| unreachable!())
    }
}

/// The credential inside an `Authorization` value: the token after `Bearer `, or the whole value for
/// any other scheme (so Basic or custom schemes still identify a caller).
fn credential_of(value: &str) -> Option<&str> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credential = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!credential.is_empty()).then_some(credential)
}

fn hmac_bytes(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A conversation key from whatever id the client sent (hashed: bounded length, opaque in the store).
pub fn conversation_key(source: &str, raw: &str) -> Option<ConversationKey> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(raw.as_bytes());
    ConversationKey::parse(hex::encode(&hasher.finalize()[..16])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_credential_same_principal_other_credential_other_principal() {
        let hasher = PrincipalHasher::new(b"secret");
        let a = hasher.principal(Some("Bearer key-1"), false);
        assert_eq!(a, hasher.principal(Some("bearer  key-1 "), false));
        assert_ne!(a, hasher.principal(Some("Bearer key-2"), false));
        assert_ne!(
            a,
            PrincipalHasher::new(b"other").principal(Some("Bearer key-1"), false)
        );
        let id = a.expect("principal");
        assert!(!id.as_str().contains("key-1"));
    }

    #[test]
    fn anonymous_only_when_allowed() {
        let hasher = PrincipalHasher::new(b"secret");
        assert_eq!(
            hasher.principal(None, false),
            Err(IdentityError::MissingCredential)
        );
        assert!(hasher.principal(None, true).is_ok());
        assert_eq!(
            hasher.principal(Some("Bearer   "), true),
            Err(IdentityError::MalformedCredential)
        );
    }

    #[test]
    fn conversation_keys_are_hashed_and_scoped_by_source() {
        let a = conversation_key("openai", "conv-1").expect("key");
        assert_ne!(Some(a.clone()), conversation_key("header", "conv-1"));
        assert_eq!(Some(a), conversation_key("openai", " conv-1 "));
        assert_eq!(conversation_key("openai", "  "), None);
    }
}
