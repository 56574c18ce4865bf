//! OAuth access tokens as identity: a bearer JWT verified against an identity provider's key set
//! (JWKS), whose issuer and subject name the principal. A refreshed token has the same `iss` and
//! `sub`, so the work session survives the refresh (a hash of the token itself would not).
//!
//! Pure: the proxy fetches the key set and asks again with a fresh one when a token names a key
//! the cached set lacks ([`OAuthError::UnknownKey`]).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Why a bearer token is not a valid access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("the bearer token is not a JWT")]
    Malformed,
    #[error("the token's algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    #[error("the token names a signing key the identity provider does not publish")]
    UnknownKey,
    #[error("the token was refused: {0}")]
    Invalid(String),
}

/// What a valid access token must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (none: not checked).
    pub audience: Option<String>,
    /// The only algorithms accepted (asymmetric ones: an identity provider publishes public keys).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// The identity an access token proves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subject {
    pub iss: String,
    pub sub: String,
}

/// Parses a comma-separated algorithm list, refusing symmetric ones (a shared secret is not an
/// identity provider's key set, and accepting HS* next to public keys invites key confusion).
pub fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
    let mut algorithms = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let algorithm: Algorithm = name
            .parse()
            .map_err(|_| format!("unknown JWT algorithm {name:?}"))?;
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(format!(
                "{name} is symmetric: an identity provider's tokens are verified with public keys"
            ));
        }
        algorithms.push(algorithm);
    }
    if algorithms.is_empty() {
        return Err("no JWT algorithm given".into());
    }
    Ok(algorithms)
}

/// Verifies `token` against `keys`: a listed algorithm, a key of the set (by `kid`, or the set's
/// only key when the token names none), the signature, `exp` (required), `nbf`, `iss`, `aud`, and a
/// non-empty `sub`.
pub fn verify(token: &str, keys: &JwkSet, rules: &Rules) -> Result<Subject, OAuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| OAuthError::Malformed)?;
    if !rules.algorithms.contains(&header.alg) {
        return Err(OAuthError::Algorithm(header.alg));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(OAuthError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| OAuthError::Invalid(e.to_string()))?;
    // Only the token's own algorithm, already checked against the list (the library refuses a list
    // mixing families with one key).
    let mut validation = Validation::new(header.alg);
    validation.leeway = rules.leeway_secs;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.set_issuer(&[rules.issuer.as_str()]);
    match &rules.audience {
        Some(audience) => validation.set_audience(&[audience.as_str()]),
        None => validation.validate_aud = false,
    }
    let data = jsonwebtoken::decode::<Subject>(token, &key, &validation)
        .map_err(|e| OAuthError::Invalid(e.to_string()))?;
    if data.claims.sub.is_empty() {
        return Err(OAuthError::Invalid("the token has an empty sub".into()));
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests;
