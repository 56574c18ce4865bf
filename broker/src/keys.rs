//! Reading key material: an HMAC secret (HS256), or an Ed25519 key in PEM (EdDSA, so backends can
//! verify assertions with the public key the broker serves as a JWKS).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::tokens::{MIN_SECRET_BYTES, TokenError};

/// Key material as read from a file or the environment.
pub enum KeyMaterial {
    /// An HMAC secret.
    Secret(Vec<u8>),
    /// An Ed25519 private key.
    Ed25519(Box<SigningKey>),
    /// An Ed25519 public key (verification only).
    Ed25519Public(VerifyingKey),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Secret(_) => f.write_str("Secret(..)"),
            KeyMaterial::Ed25519(_) => f.write_str("Ed25519(..)"),
            KeyMaterial::Ed25519Public(key) => write!(f, "Ed25519Public({})", ed25519_kid(key)),
        }
    }
}

/// Why key material could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the secret is shorter than {MIN_SECRET_BYTES} bytes")]
    Weak,
    #[error("the PEM is not an Ed25519 key in PKCS#8/SPKI form: {0}")]
    Pem(String),
}

impl KeyMaterial {
    /// Reads a key: a PEM `PRIVATE KEY` or `PUBLIC KEY` (Ed25519), else an HMAC secret (trimmed).
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        let trimmed = bytes.trim_ascii();
        let text = std::str::from_utf8(trimmed).unwrap_or("");
        if text.starts_with("-----BEGIN PRIVATE KEY-----") {
            return SigningKey::from_pkcs8_pem(text)
                .map(|k| KeyMaterial::Ed25519(Box::new(k)))
                .map_err(|e| KeyError::Pem(e.to_string()));
        }
        if text.starts_with("-----BEGIN PUBLIC KEY-----") {
            return VerifyingKey::from_public_key_pem(text)
                .map(KeyMaterial::Ed25519Public)
                .map_err(|e| KeyError::Pem(e.to_string()));
        }
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Weak);
        }
        Ok(KeyMaterial::Secret(trimmed.to_vec()))
    }

    /// Bytes to derive other secrets from (principal hashing). Never a public key.
    pub fn secret_bytes(&self) -> Option<Vec<u8>> {
        match self {
            KeyMaterial::Secret(secret) => Some(secret.clone()),
            KeyMaterial::Ed25519(key) => Some(key.to_bytes().to_vec()),
            KeyMaterial::Ed25519Public(_) => None,
        }
    }
}

/// The `kid` of an Ed25519 public key.
pub fn ed25519_kid(key: &VerifyingKey) -> String {
    format!("ed-{}", hex::encode(&Sha256::digest(key.as_bytes())[..6]))
}

/// The JWK of an Ed25519 public key.
pub fn ed25519_jwk(key: &VerifyingKey) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
        "kid": ed25519_kid(key),
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// The x coordinate (base64url) of a public key, as `DecodingKey::from_ed_components` wants it.
pub fn ed25519_x(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// PKCS#8 PEM of a private key, as `EncodingKey::from_ed_pem` wants it.
pub fn ed25519_pem(key: &SigningKey) -> Result<String, TokenError> {
    key.to_pkcs8_pem(Default::default())
        .map(|pem| pem.to_string())
        .map_err(|_| TokenError::Signing)
}

/// A fresh 48-byte HMAC secret (for `keygen`).
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 48];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    secret
}

/// A fresh Ed25519 private key in PKCS#8 PEM (for `keygen` and tests).
pub fn generate_ed25519_pem() -> Result<String, TokenError> {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    ed25519_pem(&SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind() {
        assert!(matches!(KeyMaterial::parse(b"short"), Err(KeyError::Weak)));
        assert!(matches!(
            KeyMaterial::parse(b"  0123456789abcdef0123456789abcdef\n"),
            Ok(KeyMaterial::Secret(s)) if s.len() == 32
        ));
        let pem = generate_ed25519_pem().expect("pem");
        let Ok(KeyMaterial::Ed25519(key)) = KeyMaterial::parse(pem.as_bytes()) else {
            panic!("expected an Ed25519 key");
        };
        assert_eq!(ed25519_jwk(&key.verifying_key())["crv"], "Ed25519");
        assert!(matches!(
            KeyMaterial::parse(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"),
            Err(KeyError::Pem(_))
        ));
    }
}
