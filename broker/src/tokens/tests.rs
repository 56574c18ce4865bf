//! Token tests: round trips, every refusal, `alg: none`, algorithm confusion, rotation.

use super::*;
use crate::ids::{PrincipalId, WorkSessionId};

pub(super) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
pub(super) const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
const NOW: u64 = 1_800_000_000;

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(NOW)
}

pub(super) fn handle() -> HandleClaims {
    HandleClaims {
        p: PrincipalId::parse("ab".repeat(16)).expect("id"),
        ws: WorkSessionId::random(),
    }
}

#[test]
fn round_trip() {
    let ring = KeyRing::hs256("broker", SECRET).expect("ring");
    let claims = handle();
    let token = ring
        .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now(), &claims)
        .expect("sign");
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token),
        Ok(claims)
    );
}

#[test]
fn refusals() {
    let ring = KeyRing::hs256("broker", SECRET).expect("ring");
    let token = ring
        .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now(), &handle())
        .expect("sign");
    assert_eq!(
        ring.verify::<HandleClaims>(SESSION_AUDIENCE, &token),
        Err(TokenError::WrongAudience)
    );
    let expired = ring
        .sign(
            HANDLE_AUDIENCE,
            Duration::from_secs(1),
            now() - 3600,
            &handle(),
        )
        .expect("sign");
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &expired),
        Err(TokenError::Expired)
    );
    let future = ring
        .sign(
            HANDLE_AUDIENCE,
            Duration::from_secs(7200),
            now() + 3600,
            &handle(),
        )
        .expect("sign");
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &future),
        Err(TokenError::NotYetValid)
    );

    let other = KeyRing::hs256("broker", OTHER).expect("ring");
    let foreign = other
        .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now(), &handle())
        .expect("sign");
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &foreign),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, "garbage"),
        Err(TokenError::Malformed)
    );

    // Same kid, other secret: a forged signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = foreign.split('.').nth(2).unwrap_or_default().to_owned();
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &parts.join(".")),
        Err(TokenError::BadSignature)
    );

    let wrong_issuer = KeyRing::hs256("someone-else", SECRET)
        .expect("ring")
        .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now(), &handle())
        .expect("sign");
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &wrong_issuer),
        Err(TokenError::WrongIssuer)
    );
}

#[test]
fn alg_none_is_refused() {
    use base64_like::encode;
    let ring = KeyRing::hs256("broker", SECRET).expect("ring");
    let header = encode(&format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        ring.signing_kid()
    ));
    let body = encode(&format!(
        r#"{{"iss":"broker","aud":"msb-handle","iat":{n},"nbf":{n},"exp":{e},"p":"{p}","ws":"{p}"}}"#,
        n = now(),
        e = now() + 60,
        p = "ab".repeat(16)
    ));
    let token = format!("{header}.{body}.");
    assert!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token)
            .is_err()
    );
}

#[test]
fn rotation_keeps_old_tokens_until_the_old_key_is_dropped() {
    let old = KeyRing::hs256("broker", SECRET).expect("ring");
    let token = old
        .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now(), &handle())
        .expect("sign");
    let mut rotated = KeyRing::hs256("broker", OTHER).expect("ring");
    assert_eq!(
        rotated.verify::<HandleClaims>(HANDLE_AUDIENCE, &token),
        Err(TokenError::UnknownKey)
    );
    rotated.also_verify_hs256(SECRET).expect("add");
    assert!(
        rotated
            .verify::<HandleClaims>(HANDLE_AUDIENCE, &token)
            .is_ok()
    );
}

#[test]
fn eddsa_signs_publishes_a_jwks_and_refuses_algorithm_confusion() {
    let pem = crate::keys::generate_ed25519_pem().expect("pem");
    let material = KeyMaterial::parse(pem.as_bytes()).expect("key");
    let ring = KeyRing::from_material("broker", &material).expect("ring");
    let token = ring
        .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now(), &handle())
        .expect("sign");
    assert!(ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token).is_ok());
    let jwks = ring.jwks();
    assert_eq!(jwks["keys"][0]["kid"], ring.signing_kid());
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");

    // An HS256 token that claims the EdDSA key's kid (keyed with the public key, the classic
    // confusion) is refused before any signature check.
    let x = jwks["keys"][0]["x"]
        .as_str()
        .expect("x")
        .as_bytes()
        .to_vec();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(ring.signing_kid().to_owned());
    let envelope = Envelope {
        iss: "broker".into(),
        aud: HANDLE_AUDIENCE.into(),
        iat: now(),
        nbf: now(),
        exp: now() + 60,
        claims: &handle(),
    };
    let forged =
        jsonwebtoken::encode(&header, &envelope, &EncodingKey::from_secret(&x)).expect("encode");
    assert_eq!(
        ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &forged),
        Err(TokenError::WrongAlgorithm)
    );

    // A verifier that only has the public key accepts the broker's tokens.
    let mut verifier = KeyRing::hs256("broker", SECRET).expect("ring");
    let KeyMaterial::Ed25519(key) = material else {
        panic!("ed25519")
    };
    verifier
        .also_verify(&KeyMaterial::Ed25519Public(key.verifying_key()))
        .expect("add");
    assert!(
        verifier
            .verify::<HandleClaims>(HANDLE_AUDIENCE, &token)
            .is_ok()
    );
}

#[test]
fn weak_keys_are_refused() {
    assert_eq!(
        KeyRing::hs256("b", b"short").err(),
        Some(TokenError::WeakKey)
    );
}

/// Minimal base64url without padding, for hand-made hostile tokens.
mod base64_like {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    pub fn encode(input: &str) -> String {
        let bytes = input.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
