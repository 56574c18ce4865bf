//! Access tokens signed by a real Ed25519 key set (the broker's own key ring plays the identity
//! provider: it signs with `kid` and publishes a JWKS, as one does).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::keys::{KeyMaterial, generate_ed25519_pem};
use crate::tokens::KeyRing;

const ISSUER: &str = "https://idp.example.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn provider(issuer: &str) -> KeyRing {
    let pem = generate_ed25519_pem().expect("key");
    let material = KeyMaterial::parse(pem.as_bytes()).expect("material");
    KeyRing::from_material(issuer, &material).expect("ring")
}

fn key_set(ring: &KeyRing) -> JwkSet {
    serde_json::from_value(ring.jwks()).expect("a JWKS")
}

fn rules() -> Rules {
    Rules {
        issuer: ISSUER.into(),
        audience: Some("https://mcp.example.test".into()),
        algorithms: parse_algorithms("RS256,ES256,EdDSA").expect("algorithms"),
        leeway_secs: 30,
    }
}

fn token(ring: &KeyRing, sub: &str, lifetime: u64, at: u64) -> String {
    ring.sign(
        "https://mcp.example.test",
        Duration::from_secs(lifetime),
        at,
        &json!({"sub": sub}),
    )
    .expect("token")
}

#[test]
fn a_refreshed_token_proves_the_same_subject() {
    let idp = provider(ISSUER);
    let keys = key_set(&idp);
    let first = verify(&token(&idp, "user-1", 3600, now()), &keys, &rules()).expect("valid");
    let refreshed =
        verify(&token(&idp, "user-1", 3600, now() + 1), &keys, &rules()).expect("valid");
    assert_eq!(first, refreshed);
    assert_eq!(first.sub, "user-1");
    assert_eq!(first.iss, ISSUER);
}

#[test]
fn every_refusal() {
    let idp = provider(ISSUER);
    let keys = key_set(&idp);
    let verify_ = |t: &str| verify(t, &keys, &rules());
    assert_eq!(verify_("not-a-jwt"), Err(OAuthError::Malformed));
    let expired = token(&idp, "u", 1, now() - 3600);
    assert!(matches!(verify_(&expired), Err(OAuthError::Invalid(_))));
    let future = token(&idp, "u", 3600, now() + 3600);
    assert!(
        matches!(verify_(&future), Err(OAuthError::Invalid(_))),
        "nbf in the future"
    );
    let other_issuer = provider("https://evil.example.test");
    // Another issuer's key is not in the set at all.
    assert_eq!(
        verify_(&token(&other_issuer, "u", 3600, now())),
        Err(OAuthError::UnknownKey)
    );
    // The right key set but another issuer's claim: refused.
    let lying = KeyRing::from_material("https://evil.example.test", &{
        let pem = generate_ed25519_pem().expect("key");
        KeyMaterial::parse(pem.as_bytes()).expect("material")
    })
    .expect("ring");
    let lying_keys = key_set(&lying);
    assert!(matches!(
        verify(&token(&lying, "u", 3600, now()), &lying_keys, &rules()),
        Err(OAuthError::Invalid(_))
    ));
    // Wrong audience.
    let mut other_audience = rules();
    other_audience.audience = Some("https://other.example.test".into());
    assert!(matches!(
        verify(&token(&idp, "u", 3600, now()), &keys, &other_audience),
        Err(OAuthError::Invalid(_))
    ));
    // An algorithm that is not listed.
    let mut rsa_only = rules();
    rsa_only.algorithms = vec![Algorithm::RS256];
    assert_eq!(
        verify(&token(&idp, "u", 3600, now()), &keys, &rsa_only),
        Err(OAuthError::Algorithm(Algorithm::EdDSA))
    );
    // An HS256 token "signed" with a public key: the algorithm is never accepted.
    let hs = KeyRing::hs256(ISSUER, b"0123456789abcdef0123456789abcdef").expect("ring");
    assert!(matches!(
        verify_(&token(&hs, "u", 3600, now())),
        Err(OAuthError::Algorithm(Algorithm::HS256))
    ));
    // A forged signature: the payload of one token with the signature of another.
    let a = token(&idp, "alice", 3600, now());
    let b = token(&idp, "bob", 3600, now());
    let forged = format!(
        "{}.{}",
        a.rsplit_once('.').expect("dots").0,
        b.rsplit_once('.').expect("dots").1
    );
    assert!(matches!(verify_(&forged), Err(OAuthError::Invalid(_))));
}

#[test]
fn symmetric_algorithms_are_refused_in_the_configuration() {
    assert!(parse_algorithms("RS256, EdDSA").is_ok());
    assert!(parse_algorithms("HS256").is_err());
    assert!(parse_algorithms("RS256,nope").is_err());
    assert!(parse_algorithms(" ").is_err());
}
