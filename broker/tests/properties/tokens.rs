//! Token verification: never a panic on strings shaped like JWTs (or not), and any change of one
//! character of a valid HS256 or EdDSA token refused, the padding bits of a part's last character
//! included.

use std::sync::LazyLock;
use std::time::Duration;

use broker::ids::{PrincipalId, WorkSessionId};
use broker::keys::{self, KeyMaterial};
use broker::tokens::{HANDLE_AUDIENCE, HandleClaims, KeyRing, SESSION_AUDIENCE};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::{any_json, bytes, config};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .expect("the clock is after 1970")
}

fn claims() -> HandleClaims {
    HandleClaims {
        p: PrincipalId::parse("ab".repeat(16)).expect("principal"),
        ws: WorkSessionId::random(),
    }
}

/// An HS256 ring and an EdDSA ring, each with a valid handle token.
static RINGS: LazyLock<Vec<(KeyRing, String)>> = LazyLock::new(|| {
    let hs = KeyRing::hs256("broker", SECRET).expect("hs256 ring");
    let pem = keys::generate_ed25519_pem().expect("ed25519 key");
    let material = KeyMaterial::parse(pem.as_bytes()).expect("pem parses");
    let ed = KeyRing::from_material("broker", &material).expect("ed25519 ring");
    [hs, ed]
        .into_iter()
        .map(|ring| {
            let token = ring
                .sign(HANDLE_AUDIENCE, Duration::from_secs(3600), now(), &claims())
                .expect("sign");
            ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token)
                .expect("a fresh token verifies");
            (ring, token)
        })
        .collect()
});

/// Strings shaped like JWTs: dot-separated base64url-ish parts, some with a real header.
fn jwt_shaped() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        "[A-Za-z0-9_-]{0,40}",
        any_json().prop_map(|v| b64(&bytes(&v))),
        (
            prop::sample::select(&["HS256", "EdDSA", "none", "RS256", "hs256", ""][..]),
            ".{0,12}"
        )
            .prop_map(|(alg, kid)| b64(&bytes(&json!({"alg": alg, "kid": kid, "typ": "JWT"})))),
        Just(()).prop_map(|()| b64(&bytes(
            &json!({"alg": "none", "kid": RINGS[0].0.signing_kid()})
        ))),
    ];
    let payload = prop_oneof![
        "[A-Za-z0-9_-]{0,60}",
        any_json().prop_map(|v| b64(&bytes(&v))),
    ];
    let sig = "[A-Za-z0-9_=+/-]{0,90}";
    prop_oneof![
        (header, payload, sig).prop_map(|(h, p, s)| format!("{h}.{p}.{s}")),
        prop::collection::vec("[A-Za-z0-9_.-]{0,20}", 0..6).prop_map(|parts| parts.join(".")),
    ]
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn verify_never_panics(token in prop_oneof![".{0,120}", jwt_shaped()]) {
        for (ring, _) in RINGS.iter() {
            let _ = ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &token);
            let _ = ring.verify::<Value>(SESSION_AUDIENCE, &token);
        }
    }

    /// Any single-character change to a valid HS256 token's header, payload or signature is
    /// refused.
    #[test]
    fn mutated_hs256_tokens_are_refused(mutation in mutation()) {
        check_mutation(&RINGS[0], mutation)?;
    }
}

proptest! {
    // An EdDSA verification costs milliseconds in an unoptimized build: fewer cases, aimed at the
    // signature (header and payload changes are covered above: they change the signed input).
    #![proptest_config(ProptestConfig { cases: 32, ..config() })]

    #[test]
    fn mutated_eddsa_tokens_are_refused(mutation in mutation()) {
        check_mutation(&RINGS[1], Mutation { part: 2, ..mutation })?;
    }
}

/// A one-character change: which part, where (`None`: its last character), to what.
#[derive(Debug, Clone, Copy)]
struct Mutation {
    part: usize,
    at: Option<Index>,
    to: char,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let base64url: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .chars()
        .collect();
    (
        0usize..3,
        prop_oneof![1 => Just(None), 3 => any::<Index>().prop_map(Some)],
        prop_oneof![
            6 => prop::sample::select(base64url),
            1 => prop::sample::select(vec!['=', '+', '/', '.', ' ', 'é', '\0']),
        ],
    )
        .prop_map(|(part, at, to)| Mutation { part, at, to })
}

fn check_mutation((ring, token): &(KeyRing, String), m: Mutation) -> Result<(), TestCaseError> {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    prop_assert_eq!(parts.len(), 3);
    let mut chars: Vec<char> = parts[m.part].chars().collect();
    let i = m.at.map_or(chars.len() - 1, |at| at.index(chars.len()));
    prop_assume!(chars[i] != m.to);
    chars[i] = m.to;
    parts[m.part] = chars.into_iter().collect();
    let mutated = parts.join(".");
    let verdict = ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &mutated);
    prop_assert!(
        verdict.is_err(),
        "mutated token accepted: part {} index {} -> {:?}: {}",
        m.part,
        i,
        m.to,
        mutated
    );
    Ok(())
}

/// The last character of a base64url part carries padding bits: every other value of it, in every
/// part of an HS256 token, is refused (a decoder that ignored those bits would accept some).
#[test]
fn every_last_character_change_is_refused() {
    let (ring, token) = &RINGS[0];
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for part in 0..3 {
        for to in alphabet.chars() {
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let mut chars: Vec<char> = parts[part].chars().collect();
            let last = chars.len() - 1;
            if chars[last] == to {
                continue;
            }
            chars[last] = to;
            parts[part] = chars.into_iter().collect();
            let mutated = parts.join(".");
            assert!(
                ring.verify::<HandleClaims>(HANDLE_AUDIENCE, &mutated)
                    .is_err(),
                "accepted with the last character of part {part} set to {to:?}: {mutated}"
            );
        }
    }
}
