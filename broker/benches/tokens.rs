//! Minting and verifying the broker's tokens (`broker::tokens::KeyRing`): every `initialize` mints
//! a session id, every request verifies one, every bound call signs an assertion, a select mints
//! a handle. HS256 (a shared secret) and EdDSA (an Ed25519 key) alike.
//!
//! Run: `cargo bench -p broker --bench tokens` (see docs/performance.md).

use std::hint::black_box;
use std::time::Duration;

use broker::ids::{McpSessionId, PrincipalId, Project, Surface, UpstreamId, WorkSessionId};
use broker::keys::{self, KeyMaterial};
use broker::tokens::{
    AssertionClaims, HANDLE_AUDIENCE, HandleClaims, KeyRing, SESSION_AUDIENCE, SessionClaims,
};
use criterion::{Criterion, criterion_group, criterion_main};

const ASSERTION_AUDIENCE: &str = "mcp-backend";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Verification checks `nbf` and `exp` against the clock, so tokens are minted for now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn session_claims() -> SessionClaims {
    SessionClaims {
        p: PrincipalId::parse("3f".repeat(16)).expect("a principal"),
        sid: McpSessionId::random(),
        up: UpstreamId::parse("9c0ffee19c0ffee1").expect("an upstream id"),
        bs: Some("0123456789abcdef0123456789abcdef".into()),
        ini: serde_json::json!({"protocolVersion": "2025-06-18",
            "capabilities": {"roots": {"listChanged": true}},
            "clientInfo": {"name": "claude-ai", "version": "0.1.0"}}),
        mb: false,
        lz: false,
    }
}

fn assertion_claims() -> AssertionClaims {
    AssertionClaims {
        sub: PrincipalId::parse("3f".repeat(16)).expect("a principal"),
        ws: WorkSessionId::random(),
        surface: Surface::parse("claude-ai").expect("a surface"),
        project: Project::parse("linkedin").expect("a project"),
        via: Some("mcp_session".into()),
    }
}

fn rings() -> Vec<(&'static str, KeyRing)> {
    let secret = b"bench-signing-key-0123456789abcdef0123456789";
    let pem = keys::generate_ed25519_pem().expect("an Ed25519 key");
    let ed25519 = KeyMaterial::parse(pem.as_bytes()).expect("the key parses");
    vec![
        (
            "hs256",
            KeyRing::hs256("session-broker", secret).expect("a ring"),
        ),
        (
            "eddsa",
            KeyRing::from_material("session-broker", &ed25519).expect("a ring"),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let session = session_claims();
    let assertion = assertion_claims();
    let handle = HandleClaims {
        p: session.p.clone(),
        ws: assertion.ws.clone(),
    };
    let mut group = c.benchmark_group("tokens");
    for (alg, ring) in rings() {
        let now = now_secs();
        let session_id = ring
            .sign(SESSION_AUDIENCE, DAY, now, &session)
            .expect("signed");
        let assertion_token = ring
            .sign(ASSERTION_AUDIENCE, DAY, now, &assertion)
            .expect("signed");
        group.bench_function(format!("{alg}/mint_session_id"), |b| {
            b.iter(|| ring.sign(SESSION_AUDIENCE, DAY, now, black_box(&session)))
        });
        group.bench_function(format!("{alg}/verify_session_id"), |b| {
            b.iter(|| {
                ring.verify::<SessionClaims>(SESSION_AUDIENCE, black_box(&session_id))
                    .expect("verifies")
            })
        });
        group.bench_function(format!("{alg}/sign_assertion"), |b| {
            b.iter(|| ring.sign(ASSERTION_AUDIENCE, DAY, now, black_box(&assertion)))
        });
        group.bench_function(format!("{alg}/verify_assertion"), |b| {
            b.iter(|| {
                ring.verify::<AssertionClaims>(ASSERTION_AUDIENCE, black_box(&assertion_token))
                    .expect("verifies")
            })
        });
        group.bench_function(format!("{alg}/mint_handle"), |b| {
            b.iter(|| ring.sign(HANDLE_AUDIENCE, DAY, now, black_box(&handle)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
