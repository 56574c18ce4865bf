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

/// A token signed by `pem` with a header and claims of the test's choosing.
fn raw(pem: &str, header: &jsonwebtoken::Header, claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("key");
    jsonwebtoken::encode(header, claims, &key).expect("token")
}

/// An identity provider whose private key the test holds, with its key set.
fn provider_with_pem() -> (String, KeyRing, JwkSet) {
    let pem = generate_ed25519_pem().expect("key");
    let material = KeyMaterial::parse(pem.as_bytes()).expect("material");
    let ring = KeyRing::from_material(ISSUER, &material).expect("ring");
    let keys = key_set(&ring);
    (pem, ring, keys)
}

fn ed_header(ring: &KeyRing) -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.kid = Some(ring.signing_kid().to_owned());
    header
}

#[test]
fn with_an_audience_configured_a_token_without_one_is_refused() {
    let (pem, ring, keys) = provider_with_pem();
    let header = ed_header(&ring);
    let claims = |aud: Option<serde_json::Value>| {
        let mut claims = json!({"iss": ISSUER, "sub": "u", "exp": now() + 600});
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        claims
    };
    let no_audience = {
        let mut rules = rules();
        rules.audience = None;
        rules
    };
    // (aud claim, accepted with the audience configured, accepted without one)
    let cases = [
        (None, false, true),
        (Some(json!(null)), false, true),
        (Some(json!("https://mcp.example.test")), true, true),
        (Some(json!(["x", "https://mcp.example.test"])), true, true),
        (Some(json!("https://other.example.test")), false, true),
        (Some(json!([])), false, true),
    ];
    for (aud, with, without) in cases {
        let token = raw(&pem, &header, &claims(aud.clone()));
        assert_eq!(
            verify(&token, &keys, &rules()).is_ok(),
            with,
            "aud {aud:?} with an audience configured"
        );
        assert_eq!(
            verify(&token, &keys, &no_audience).is_ok(),
            without,
            "aud {aud:?} without one"
        );
    }
}

#[test]
fn a_critical_header_extension_is_refused() {
    let (pem, ring, keys) = provider_with_pem();
    let claims =
        json!({"iss": ISSUER, "sub": "u", "exp": now() + 600, "aud": "https://mcp.example.test"});
    let plain = ed_header(&ring);
    assert!(verify(&raw(&pem, &plain, &claims), &keys, &rules()).is_ok());
    for crit in [vec!["exp".to_owned()], vec!["b64".to_owned()], vec![]] {
        let mut header = ed_header(&ring);
        header.crit = Some(crit.clone());
        assert!(
            matches!(
                verify(&raw(&pem, &header, &claims), &keys, &rules()),
                Err(OAuthError::Invalid(_))
            ),
            "crit {crit:?}"
        );
    }
}

/// An RSA and an EC public key (values never used to verify: only their types matter here).
fn foreign_jwk(kty: &str, kid: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut jwk = match kty {
        "RSA" => json!({"kty": "RSA", "n": "sXch", "e": "AQAB"}),
        _ => json!({"kty": "EC", "crv": "P-256", "x": "f83O", "y": "x_FE"}),
    };
    jwk["kid"] = json!(kid);
    if let (Some(jwk), Some(extra)) = (jwk.as_object_mut(), extra.as_object()) {
        jwk.extend(extra.clone());
    }
    jwk
}

#[test]
fn two_keys_under_one_kid_are_told_apart_by_type_and_algorithm() {
    let (pem, ring, own) = provider_with_pem();
    let kid = ring.signing_kid().to_owned();
    let ed = serde_json::to_value(&own.keys[0]).expect("jwk");
    let set = |keys: Vec<serde_json::Value>| -> JwkSet {
        serde_json::from_value(json!({ "keys": keys })).expect("a JWKS")
    };
    let claims =
        json!({"iss": ISSUER, "sub": "u", "exp": now() + 600, "aud": "https://mcp.example.test"});
    let token = raw(&pem, &ed_header(&ring), &claims);
    let none = json!({});
    // (the key set, the token verifies)
    let cases = [
        (
            set(vec![foreign_jwk("RSA", &kid, none.clone()), ed.clone()]),
            true,
        ),
        (
            set(vec![ed.clone(), foreign_jwk("EC", &kid, none.clone())]),
            true,
        ),
        (
            set(vec![
                foreign_jwk("EC", &kid, none.clone()),
                foreign_jwk("RSA", &kid, none.clone()),
                ed.clone(),
            ]),
            true,
        ),
        (set(vec![foreign_jwk("RSA", &kid, none.clone())]), false),
        (
            set(vec![foreign_jwk("RSA", "other", none.clone()), ed.clone()]),
            true,
        ),
    ];
    for (i, (keys, verifies)) in cases.into_iter().enumerate() {
        assert_eq!(
            verify(&token, &keys, &rules()).is_ok(),
            verifies,
            "case {i}"
        );
    }
}

#[test]
fn the_signing_key_fits_the_algorithm() {
    let rsa = |extra| foreign_jwk("RSA", "k", extra);
    let ec = |extra| foreign_jwk("EC", "k", extra);
    let one = |jwk: serde_json::Value| -> JwkSet {
        serde_json::from_value(json!({ "keys": [jwk] })).expect("a JWKS")
    };
    // (key, token's kid, token's algorithm, chosen)
    let cases = [
        (rsa(json!({})), Some("k"), Algorithm::RS256, true),
        (rsa(json!({})), Some("k"), Algorithm::PS256, true),
        (
            rsa(json!({"alg": "RS256"})),
            Some("k"),
            Algorithm::RS384,
            false,
        ),
        (
            rsa(json!({"alg": "RS384"})),
            Some("k"),
            Algorithm::RS384,
            true,
        ),
        (
            rsa(json!({"use": "enc"})),
            Some("k"),
            Algorithm::RS256,
            false,
        ),
        (
            rsa(json!({"use": "sig"})),
            Some("k"),
            Algorithm::RS256,
            true,
        ),
        (rsa(json!({})), Some("j"), Algorithm::RS256, false),
        (rsa(json!({})), None, Algorithm::RS256, true),
        (rsa(json!({})), Some("k"), Algorithm::ES256, false),
        (ec(json!({})), Some("k"), Algorithm::ES256, true),
        (ec(json!({})), Some("k"), Algorithm::ES384, false),
        (ec(json!({})), Some("k"), Algorithm::EdDSA, false),
    ];
    for (i, (jwk, kid, alg, chosen)) in cases.into_iter().enumerate() {
        assert_eq!(
            signing_key(&one(jwk), kid, alg).is_some(),
            chosen,
            "case {i}"
        );
    }
    // Without a kid, two fitting keys are ambiguous; one fitting key among others is not.
    let two: JwkSet =
        serde_json::from_value(json!({ "keys": [rsa(json!({})), rsa(json!({}))] })).expect("set");
    assert!(signing_key(&two, None, Algorithm::RS256).is_none());
    let mixed: JwkSet =
        serde_json::from_value(json!({ "keys": [rsa(json!({})), ec(json!({}))] })).expect("set");
    assert!(signing_key(&mixed, None, Algorithm::ES256).is_some());
}
