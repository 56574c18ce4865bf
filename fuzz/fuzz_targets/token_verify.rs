//! `broker::tokens::KeyRing::verify` on arbitrary text, and on valid tokens with bytes overwritten.
//!
//! Checks: no panic on any input (as text, lossily decoded); for both an HS256 and an EdDSA ring, a
//! valid handle token with up to 4 bytes overwritten (3 input bytes each: position as u16 LE, new
//! byte) is refused whenever it differs from the original.

#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::ids::{PrincipalId, WorkSessionId};
use broker::keys::{self, KeyMaterial};
use broker::tokens::{HANDLE_AUDIENCE, HandleClaims, KeyRing, SESSION_AUDIENCE};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// An HS256 ring and an EdDSA ring, each with a handle token valid for a day.
static RINGS: LazyLock<Vec<(KeyRing, String)>> = LazyLock::new(|| {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let hs = KeyRing::hs256("broker", SECRET).expect("hs256 ring");
    let pem = keys::generate_ed25519_pem().expect("ed25519 key");
    let material = KeyMaterial::parse(pem.as_bytes()).expect("pem parses");
    let ed = KeyRing::from_material("broker", &material).expect("ed25519 ring");
    [hs, ed]
        .into_iter()
        .map(|ring| {
            let claims = HandleClaims {
                p: PrincipalId::parse("ab".repeat(16)).expect("principal"),
                ws: WorkSessionId::random(),
            };
            let token = ring
                .sign(HANDLE_AUDIENCE, Duration::from_secs(86_400), now, &claims)
                .expect("sign");
            ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token)
                .expect("a fresh token verifies");
            (ring, token)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (ring, token) in RINGS.iter() {
        let _ = ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &text);
        let _ = ring.verify::<serde_json::Value>(SESSION_AUDIENCE, &text);

        let mut bytes = token.clone().into_bytes();
        for edit in data.chunks_exact(3).take(4) {
            let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % bytes.len();
            bytes[at] = edit[2];
        }
        if let Ok(mutated) = String::from_utf8(bytes)
            && mutated != *token
        {
            assert!(
                ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &mutated)
                    .is_err(),
                "a modified token was accepted: {mutated:?} (original {token:?})"
            );
        }
    }
});
