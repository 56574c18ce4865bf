//! `token inspect` (verify a token with the broker's keys and print its claims) and `keygen`.

use std::io::Read;

use broker::keys::KeyMaterial;
use broker::tokens::{
    AssertionClaims, HANDLE_AUDIENCE, HandleClaims, KeyRing, SESSION_AUDIENCE, SessionClaims,
    TokenError,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Exit, InspectArgs, print_json, read_file, usage};
use crate::backend::ISSUER;
use crate::ops::admin::codec;

// --- token inspect -----------------------------------------------------------------------------

pub(super) fn inspect(args: &InspectArgs) -> Result<(), Exit> {
    let token = if args.token == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read the token from stdin: {e}")))?;
        text
    } else {
        args.token.clone()
    };
    let token = token.trim();
    let ring = key_ring(args)?;
    let attempts = [
        (
            "session",
            verify::<SessionClaims>(&ring, SESSION_AUDIENCE, token),
        ),
        (
            "handle",
            verify::<HandleClaims>(&ring, HANDLE_AUDIENCE, token),
        ),
        (
            "assertion",
            verify::<AssertionClaims>(&ring, &args.assertion_audience, token),
        ),
    ];
    let mut reason = TokenError::WrongAudience;
    for (kind, result) in attempts {
        match result {
            Ok(typed) => {
                // Verified: show the whole payload, registered claims (iss, aud, iat, exp) included.
                let claims = codec::jwt_payload(token).unwrap_or(typed);
                print_json(&json!({ "kind": kind, "claims": claims }));
                return Ok(());
            }
            Err(TokenError::WrongAudience) => {}
            Err(error) => reason = error,
        }
    }
    println!("invalid: {reason}");
    Err(Exit(1, String::new()))
}

/// Verifies `token` for `audience` as claims `T`; returns them as JSON.
fn verify<T: DeserializeOwned + serde::Serialize>(
    ring: &KeyRing,
    audience: &str,
    token: &str,
) -> Result<Value, TokenError> {
    let claims: T = ring.verify(audience, token)?;
    serde_json::to_value(claims).map_err(|_| TokenError::Malformed)
}

/// A ring that verifies with every given key and signs with none of them (a throwaway secret).
fn key_ring(args: &InspectArgs) -> Result<KeyRing, Exit> {
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    match (&args.signing_key_file, &args.signing_key) {
        (Some(path), _) => keys.push((path.display().to_string(), read_file(path)?)),
        (None, Some(key)) => keys.push(("BROKER_SIGNING_KEY".into(), key.as_bytes().to_vec())),
        (None, None) => {}
    }
    for path in &args.verify_key_file {
        keys.push((path.display().to_string(), read_file(path)?));
    }
    if keys.is_empty() {
        return Err(usage(
            "a key is needed to verify tokens: --signing-key-file PATH, BROKER_SIGNING_KEY or \
             --verify-key-file PATH",
        ));
    }
    let throwaway = broker::ids::random_hex128().repeat(2);
    let mut ring = KeyRing::hs256(ISSUER, throwaway.as_bytes())
        .map_err(|e| Exit(1, format!("key ring: {e}")))?;
    for (name, bytes) in keys {
        let material = KeyMaterial::parse(&bytes).map_err(|e| usage(format!("{name}: {e}")))?;
        ring.also_verify(&material)
            .map_err(|e| usage(format!("{name}: {e}")))?;
    }
    Ok(ring)
}

// --- keygen ------------------------------------------------------------------------------------

pub(super) fn keygen(ed25519: bool) -> Result<(), Exit> {
    if ed25519 {
        let pem = broker::keys::generate_ed25519_pem()
            .map_err(|e| Exit(1, format!("cannot generate a key: {e}")))?;
        println!("{}", pem.trim_end());
        return Ok(());
    }
    let secret = broker::keys::generate_secret();
    println!("{}", codec::base64(&secret));
    Ok(())
}
