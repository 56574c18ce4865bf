//! The operations the differential test draws, over a small world so that they meet: two
//! principals, two surfaces, six work sessions (each of one principal and one surface for good),
//! three MCP sessions, two conversations, two upstreams, three projects. Every id is an index into
//! the [`World`], which holds the real ids of one case (fresh per case).

use std::time::Duration;

use broker::ids::{
    BackendSessionId, ConversationKey, McpSessionId, PrincipalId, Project, Surface, UpstreamId,
    WorkSessionId,
};
use broker::session::{BackendSessions, WorkSession};
use proptest::prelude::*;

pub const PRINCIPALS: usize = 2;
pub const SURFACES: [&str; 2] = ["claude-ai", "cursor"];
pub const WORK_SESSIONS: usize = 6;
pub const MCP_SESSIONS: usize = 3;
pub const CONVERSATIONS: usize = 2;
pub const UPSTREAMS: usize = 2;
pub const PROJECTS: [&str; 3] = ["alpha", "beta", "gamma"];
pub const BACKENDS: [&str; 3] = ["backend-0", "backend-1", "backend-2"];
pub const PARKED_KEYS: [&str; 1] = ["k0"];
pub const CONSUMERS: [&str; 2] = ["finalizer-a", "finalizer-b"];

/// Clock steps, in seconds: all multiples of 10 s, as are every TTL and backoff of the test, so
/// that the real time a case takes (far less than 10 s), which Redis's own timers count too, never
/// tips a comparison. Below, at and past the idle TTL (60 s), and one that spans several.
pub const STEPS_S: [u64; 7] = [10, 30, 50, 60, 70, 120, 600];
/// A parked round's TTL, in seconds.
pub const PARKED_TTLS_S: [u64; 3] = [30, 60, 3600];

/// How a lookup is asked (`Query::settle_early`, `Query::record_when_settled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A select's lookup: everything.
    Full,
    /// A call's: may stop once settled.
    Settle,
    /// A call's that records itself in the work session it settles on.
    Record,
}

#[derive(Debug, Clone)]
pub enum Op {
    Bind {
        ws: usize,
        project: usize,
        mcp: Option<usize>,
        conversation: Option<usize>,
        backend: Option<(usize, usize)>,
    },
    Lookup {
        principal: usize,
        surface: usize,
        handle: Option<usize>,
        mcp: Option<usize>,
        conversation: Option<usize>,
        mode: Mode,
    },
    McpState {
        principal: usize,
        mcp: usize,
        upstream: usize,
    },
    Touch {
        ws: usize,
        mcp: Option<usize>,
        conversation: Option<usize>,
        count_only: bool,
        calls: u64,
    },
    SetWorkBackend {
        ws: usize,
        project: usize,
        upstream: usize,
        backend: usize,
    },
    SetBackendSession {
        principal: usize,
        mcp: usize,
        upstream: usize,
        backend: usize,
    },
    EndMcpSession {
        principal: usize,
        mcp: usize,
    },
    PutParked {
        principal: usize,
        key: usize,
        value: u8,
        ttl_s: u64,
    },
    TakeParked {
        principal: usize,
        key: usize,
    },
    Rebind {
        principal: usize,
        ws: usize,
        project: usize,
    },
    End {
        principal: usize,
        ws: usize,
    },
    Show {
        principal: usize,
        ws: usize,
    },
    List {
        principal: usize,
    },
    LiveCount,
    Claim,
    Next {
        consumer: usize,
    },
    /// Acknowledges the n-th delivery held so far (modulo how many), by each store's own id.
    Ack(usize),
    /// Buries the n-th delivery held so far.
    DeadLetter(usize),
    DeadLetters,
    /// Replays the n-th dead letter of the last listing.
    Replay(usize),
    Advance {
        secs: u64,
    },
}

fn maybe(n: usize) -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.5, 0..n)
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Full), Just(Mode::Settle), Just(Mode::Record)]
}

/// A work session, the first two (one of each principal) most often, so that the operations of a
/// case meet on them; the others bring the cap (two live per principal) into play.
fn ws() -> impl Strategy<Value = usize> {
    let weights: [u32; WORK_SESSIONS] = [4, 4, 2, 2, 1, 1];
    let choices: Vec<(u32, BoxedStrategy<usize>)> = weights
        .iter()
        .enumerate()
        .map(|(ws, weight)| (*weight, Just(ws).boxed()))
        .collect();
    prop::strategy::Union::new_weighted(choices)
}

/// A work session and who asks about it: its principal, or one time in five the other one (who
/// must find nothing).
fn asked() -> impl Strategy<Value = (usize, usize)> {
    (ws(), prop::bool::weighted(0.2)).prop_map(|(ws, foreign)| {
        let (owner, _) = World::owner(ws);
        let principal = if foreign {
            (owner + 1) % PRINCIPALS
        } else {
            owner
        };
        (principal, ws)
    })
}

/// A lookup around one work session: its principal and surface (one time in five another
/// surface), its handle one time in three (else another one's, or none).
fn lookup() -> impl Strategy<Value = Op> {
    let handle = prop_oneof![
        2 => Just(None),
        2 => Just(Some(true)),
        1 => Just(Some(false)),
    ];
    (
        asked(),
        prop::bool::weighted(0.2),
        handle,
        ws(),
        maybe(MCP_SESSIONS),
        maybe(CONVERSATIONS),
        mode(),
    )
        .prop_map(
            |((principal, ws), other_surface, handle, other, mcp, conversation, mode)| {
                let (_, surface) = World::owner(ws);
                Op::Lookup {
                    principal,
                    surface: if other_surface {
                        (surface + 1) % SURFACES.len()
                    } else {
                        surface
                    },
                    handle: handle.map(|own| if own { ws } else { other }),
                    mcp,
                    conversation,
                    mode,
                }
            },
        )
}

/// Clock steps, mostly short ones so that work sessions live through several operations.
fn advance() -> impl Strategy<Value = Op> {
    let weights = [6, 4, 1, 1, 1, 1, 1];
    let steps: Vec<(u32, BoxedStrategy<u64>)> = STEPS_S
        .iter()
        .zip(weights)
        .map(|(secs, weight)| (weight, Just(*secs).boxed()))
        .collect();
    prop::strategy::Union::new_weighted(steps).prop_map(|secs| Op::Advance { secs })
}

pub fn op() -> impl Strategy<Value = Op> {
    let principal = 0..PRINCIPALS;
    prop_oneof![
        8 => (ws(), 0..PROJECTS.len(), maybe(MCP_SESSIONS), maybe(CONVERSATIONS),
            prop::option::of((0..UPSTREAMS, 0..BACKENDS.len())))
            .prop_map(|(ws, project, mcp, conversation, backend)| Op::Bind {
                ws, project, mcp, conversation, backend
            }),
        6 => lookup(),
        1 => (principal.clone(), 0..MCP_SESSIONS, 0..UPSTREAMS)
            .prop_map(|(principal, mcp, upstream)| Op::McpState { principal, mcp, upstream }),
        5 => (ws(), maybe(MCP_SESSIONS), maybe(CONVERSATIONS), any::<bool>(), 1..4u64)
            .prop_map(|(ws, mcp, conversation, count_only, calls)| Op::Touch {
                ws, mcp, conversation, count_only, calls
            }),
        1 => (ws(), 0..PROJECTS.len(), 0..UPSTREAMS, 0..BACKENDS.len())
            .prop_map(|(ws, project, upstream, backend)| Op::SetWorkBackend {
                ws, project, upstream, backend
            }),
        1 => (principal.clone(), 0..MCP_SESSIONS, 0..UPSTREAMS, 0..BACKENDS.len())
            .prop_map(|(principal, mcp, upstream, backend)| Op::SetBackendSession {
                principal, mcp, upstream, backend
            }),
        1 => (principal.clone(), 0..MCP_SESSIONS)
            .prop_map(|(principal, mcp)| Op::EndMcpSession { principal, mcp }),
        1 => (prop::bool::weighted(0.2), 0..PARKED_KEYS.len(), any::<u8>(),
            prop::sample::select(&PARKED_TTLS_S[..]))
            .prop_map(|(other, key, value, ttl_s)| Op::PutParked {
                principal: usize::from(other), key, value, ttl_s
            }),
        1 => (prop::bool::weighted(0.2), 0..PARKED_KEYS.len())
            .prop_map(|(other, key)| Op::TakeParked { principal: usize::from(other), key }),
        1 => (asked(), 0..PROJECTS.len())
            .prop_map(|((principal, ws), project)| Op::Rebind { principal, ws, project }),
        1 => asked().prop_map(|(principal, ws)| Op::End { principal, ws }),
        1 => asked().prop_map(|(principal, ws)| Op::Show { principal, ws }),
        1 => principal.prop_map(|principal| Op::List { principal }),
        1 => Just(Op::LiveCount),
        3 => Just(Op::Claim),
        3 => (0..CONSUMERS.len()).prop_map(|consumer| Op::Next { consumer }),
        1 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::DeadLetter),
        1 => Just(Op::DeadLetters),
        1 => any::<usize>().prop_map(Op::Replay),
        5 => advance(),
    ]
}

/// 32 hex digits, the same for the same `n` in every case (so that a failing case shrinks
/// reliably: ties between equal timestamps are broken by id), not in the order of `n`.
fn scrambled(n: usize, salt: u32) -> String {
    let n = u32::try_from(n).expect("small") + salt * 97;
    format!("{:08x}", n.wrapping_mul(0x9e37_79b9)).repeat(4)
}

/// The ids of one case.
pub struct World {
    pub principals: Vec<PrincipalId>,
    pub work_sessions: Vec<WorkSessionId>,
    pub mcp_sessions: Vec<McpSessionId>,
    pub conversations: Vec<ConversationKey>,
    pub upstreams: Vec<UpstreamId>,
}

impl World {
    pub fn new() -> Self {
        let hex = |n: usize, len: usize| format!("{:x}", n + 10).repeat(len);
        Self {
            principals: (0..PRINCIPALS)
                .map(|n| PrincipalId::parse(hex(n, 32)).expect("principal"))
                .collect(),
            work_sessions: (0..WORK_SESSIONS)
                .map(|n| WorkSessionId::parse(scrambled(n, 1)).expect("work session"))
                .collect(),
            mcp_sessions: (0..MCP_SESSIONS)
                .map(|n| McpSessionId::parse(scrambled(n, 2)).expect("mcp session"))
                .collect(),
            conversations: (0..CONVERSATIONS)
                .map(|n| ConversationKey::parse(hex(n + 4, 32)).expect("conversation"))
                .collect(),
            upstreams: (0..UPSTREAMS)
                .map(|n| UpstreamId::parse(hex(n + 2, 16)).expect("upstream"))
                .collect(),
        }
    }

    /// Work session `ws` belongs to principal `ws % 2` and surface `ws / 2 % 2`, for good.
    pub fn owner(ws: usize) -> (usize, usize) {
        (ws % PRINCIPALS, ws / PRINCIPALS % SURFACES.len())
    }

    pub fn surface(n: usize) -> Surface {
        Surface::parse(SURFACES[n]).expect("surface")
    }

    pub fn project(n: usize) -> Project {
        Project::parse(PROJECTS[n]).expect("project")
    }

    pub fn backend(n: usize) -> BackendSessionId {
        BackendSessionId::parse(BACKENDS[n]).expect("backend session")
    }

    /// Work session `ws` as a caller holds it at `now_ms`: the proxy stamps the copy it binds with
    /// its now, and the store keeps the creation time of one that exists.
    pub fn session(
        &self,
        ws: usize,
        project: usize,
        conversation: Option<usize>,
        now_ms: u64,
    ) -> WorkSession {
        let (principal, surface) = Self::owner(ws);
        WorkSession {
            id: self.work_sessions[ws].clone(),
            principal: self.principals[principal].clone(),
            surface: Self::surface(surface),
            conversation: conversation.map(|c| self.conversations[c].clone()),
            project: Self::project(project),
            created_ms: now_ms,
            last_active_ms: now_ms,
            calls: 0,
            backends: BackendSessions::default(),
        }
    }
}

/// A step of the clock.
pub fn step(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
