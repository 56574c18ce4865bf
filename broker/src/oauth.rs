//! OAuth access tokens as identity: a bearer JWT verified against an identity provider's key set
//! (JWKS), whose issuer and subject name the principal. A refreshed token has the same `iss` and
//! `sub`, so the work session survives the refresh (a hash of the token itself would not).
//!
//! Pure: the proxy fetches the key set and asks again with a fresh one when a token names a key
//! the cached set lacks ([`OAuthError::UnknownKey`]).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
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

/// Verifies `token` against `keys`: a listed algorithm, no `crit` header parameter (the broker
/// understands no JWS extension, and RFC 7515 §4.1.11 says to refuse what it does not understand), a
/// key of the set that fits the algorithm ([`signing_key`]), the signature, `exp` (required),
/// `nbf`, `iss`, `aud` (required when an audience is configured: a token without one, or with
/// `"aud": null`, was not issued for this resource), and a non-empty `sub`.
pub fn verify(token: &str, keys: &JwkSet, rules: &Rules) -> Result<Subject, OAuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| OAuthError::Malformed)?;
    if !rules.algorithms.contains(&header.alg) {
        return Err(OAuthError::Algorithm(header.alg));
    }
    if header.crit.is_some() {
        return Err(OAuthError::Invalid(
            "the token's header lists critical extensions (crit) the broker does not understand"
                .into(),
        ));
    }
    let jwk = signing_key(keys, header.kid.as_deref(), header.alg).ok_or(OAuthError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| OAuthError::Invalid(e.to_string()))?;
    // Only the token's own algorithm, already checked against the list (the library refuses a list
    // mixing families with one key).
    let mut validation = Validation::new(header.alg);
    validation.leeway = rules.leeway_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[rules.issuer.as_str()]);
    match &rules.audience {
        Some(audience) => {
            validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            validation.set_audience(&[audience.as_str()]);
        }
        None => {
            validation.set_required_spec_claims(&["exp", "iss", "sub"]);
            validation.validate_aud = false;
        }
    }
    let data = jsonwebtoken::decode::<Subject>(token, &key, &validation)
        .map_err(|e| OAuthError::Invalid(e.to_string()))?;
    if data.claims.sub.is_empty() {
        return Err(OAuthError::Invalid("the token has an empty sub".into()));
    }
    Ok(data.claims)
}

/// The key of `keys` that verifies a token signed with `alg` and naming `kid`: among the keys with
/// that `kid` (or all keys when the token names none), the one whose type, curve and declared `alg`
/// fit the token's algorithm and that is not declared for encryption. A set may publish an RSA and
/// an EC key under one `kid`; the algorithm picks between them. Without a `kid`, a set with two
/// fitting keys names none (which one is ambiguous).
pub fn signing_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    let mut fitting = keys
        .keys
        .iter()
        .filter(|jwk| kid.is_none_or(|kid| jwk.common.key_id.as_deref() == Some(kid)))
        .filter(|jwk| fits(jwk, alg));
    let first = fitting.next()?;
    match kid {
        Some(_) => Some(first),
        None => fitting.next().is_none().then_some(first),
    }
}

/// Whether `jwk` can verify a signature made with `alg`.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    if let Some(declared) = &jwk.common.key_algorithm
        && declared.to_string() != format!("{alg:?}")
    {
        return false;
    }
    match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa) => true,
        (AlgorithmParameters::EllipticCurve(ec), AlgorithmFamily::Ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        (AlgorithmParameters::OctetKeyPair(okp), AlgorithmFamily::Ed) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
