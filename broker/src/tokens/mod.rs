//! Signed tokens: the client's MCP session id, the work-session handle, the backend assertion.
//!
//! All three are JWTs with `iss`, `aud`, `iat`, `nbf`, `exp` and a `kid` header, signed with one key and
//! verified against a ring of keys by `kid` (so keys rotate without breaking live tokens). The algorithm
//! is pinned per key: a token whose header names another algorithm is refused before any signature
//! check, which closes `alg: none` and algorithm-confusion attacks.
//!
//! | token | audience | carries | life |
//! |---|---|---|---|
//! | session id | `msb-session` | principal, MCP session, upstream + backend session, `initialize` params | days; ended by the store |
//! | handle | `msb-handle` | principal, work session | days; ruled by the store |
//! | assertion | configurable (`mcp-backend`) | principal, work session, surface, project | seconds |

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::keys::{self, KeyMaterial};

/// Audience of client session ids.
pub const SESSION_AUDIENCE: &str = "msb-session";
/// Audience of work-session handles.
pub const HANDLE_AUDIENCE: &str = "msb-handle";
/// Smallest accepted HMAC secret.
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Why a token was not issued or not accepted. The messages are safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    #[error("the token uses an algorithm this broker does not accept")]
    WrongAlgorithm,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the signing key is too short: at least {MIN_SECRET_BYTES} bytes are required")]
    WeakKey,
    #[error("the token could not be signed")]
    Signing,
}

fn map_error(error: jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
        _ => TokenError::Malformed,
    }
}

struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The broker's keys: one to sign with, any number to verify with, by `kid`.
pub struct KeyRing {
    issuer: String,
    signing_kid: String,
    signing_algorithm: Algorithm,
    signing_key: EncodingKey,
    verifiers: HashMap<String, Verifier>,
    /// Public keys (Ed25519) to publish as a JWKS.
    public: Vec<serde_json::Value>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("issuer", &self.issuer)
            .field("signing_kid", &self.signing_kid)
            .field("verifying_kids", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The `kid` of an HMAC secret: a short hash, so the same secret always gets the same id.
pub fn hmac_kid(secret: &[u8]) -> String {
    format!("hs-{}", hex::encode(&Sha256::digest(secret)[..6]))
}

impl KeyRing {
    /// A ring that signs and verifies with one HS256 secret.
    pub fn hs256(issuer: impl Into<String>, secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::WeakKey);
        }
        let kid = hmac_kid(secret);
        let mut verifiers = HashMap::new();
        verifiers.insert(
            kid.clone(),
            Verifier {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            },
        );
        Ok(Self {
            issuer: issuer.into(),
            signing_kid: kid,
            signing_algorithm: Algorithm::HS256,
            signing_key: EncodingKey::from_secret(secret),
            verifiers,
            public: Vec::new(),
        })
    }

    /// A ring that signs with `material`: HS256 for a secret, EdDSA for an Ed25519 private key.
    pub fn from_material(
        issuer: impl Into<String>,
        material: &KeyMaterial,
    ) -> Result<Self, TokenError> {
        match material {
            KeyMaterial::Secret(secret) => Self::hs256(issuer, secret),
            KeyMaterial::Ed25519(key) => {
                let public = key.verifying_key();
                let pem = keys::ed25519_pem(key)?;
                let signing_key =
                    EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| TokenError::Signing)?;
                let mut ring = Self {
                    issuer: issuer.into(),
                    signing_kid: keys::ed25519_kid(&public),
                    signing_algorithm: Algorithm::EdDSA,
                    signing_key,
                    verifiers: HashMap::new(),
                    public: Vec::new(),
                };
                ring.also_verify(&KeyMaterial::Ed25519Public(public))?;
                Ok(ring)
            }
            KeyMaterial::Ed25519Public(_) => Err(TokenError::Signing),
        }
    }

    /// Also accept tokens signed with this key (rotation): a secret, or an Ed25519 key.
    pub fn also_verify(&mut self, material: &KeyMaterial) -> Result<(), TokenError> {
        let public = match material {
            KeyMaterial::Secret(secret) => return self.also_verify_hs256(secret),
            KeyMaterial::Ed25519(key) => key.verifying_key(),
            KeyMaterial::Ed25519Public(key) => *key,
        };
        let key = DecodingKey::from_ed_components(&keys::ed25519_x(&public))
            .map_err(|_| TokenError::Malformed)?;
        self.verifiers.insert(
            keys::ed25519_kid(&public),
            Verifier {
                algorithm: Algorithm::EdDSA,
                key,
            },
        );
        self.public.push(keys::ed25519_jwk(&public));
        Ok(())
    }

    /// The public verification keys as a JWKS document (empty for HMAC-only rings).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.public })
    }

    /// Also accept tokens signed with an older (or newer) HS256 secret.
    pub fn also_verify_hs256(&mut self, secret: &[u8]) -> Result<(), TokenError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::WeakKey);
        }
        self.verifiers.insert(
            hmac_kid(secret),
            Verifier {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            },
        );
        Ok(())
    }

    /// The `kid` new tokens are signed with.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The issuer named in every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` for `audience`, valid from `now` for `lifetime`.
    pub fn sign<T: Serialize>(
        &self,
        audience: &str,
        lifetime: Duration,
        now_secs: u64,
        claims: &T,
    ) -> Result<String, TokenError> {
        let mut header = Header::new(self.signing_algorithm);
        header.kid = Some(self.signing_kid.clone());
        let envelope = Envelope {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs + lifetime.as_secs().max(1),
            claims,
        };
        jsonwebtoken::encode(&header, &envelope, &self.signing_key).map_err(|_| TokenError::Signing)
    }

    /// Verifies a token for `audience` and returns its claims.
    pub fn verify<T: DeserializeOwned>(
        &self,
        audience: &str,
        token: &str,
    ) -> Result<T, TokenError> {
        self.verify_with_expiry(audience, token)
            .map(|(claims, _)| claims)
    }

    /// Verifies a token for `audience` and returns its claims and its `exp` (Unix seconds).
    pub fn verify_with_expiry<T: DeserializeOwned>(
        &self,
        audience: &str,
        token: &str,
    ) -> Result<(T, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(map_error)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let verifier = self.verifiers.get(&kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != verifier.algorithm {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(verifier.algorithm);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Envelope<T>>(token, &verifier.key, &validation)
            .map_err(map_error)?;
        Ok((data.claims.claims, data.claims.exp))
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(flatten)]
    claims: T,
}

pub mod cache;
mod claims;

pub use claims::{AssertionClaims, HandleClaims, SessionClaims};

#[cfg(test)]
mod tests;
