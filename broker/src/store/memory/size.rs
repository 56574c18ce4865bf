//! How much memory the memory store takes per live work session: an ignored test that fills a store
//! as `bench/scale` fills a broker (one work session per principal, each made by a select on its
//! own MCP session, the store's worst case) and prints the process's resident memory growth.
//!
//! `cargo test -p broker --release --lib store::memory::size -- --ignored --nocapture`

use std::time::Duration;

use crate::ids::{
    BackendSessionId, McpSessionId, PrincipalId, Project, Surface, UpstreamId, WorkSessionId,
    random_hex128,
};
use crate::session::{BackendSessions, Links, WorkSession};
use crate::store::{Lifetimes, Store};

use super::MemoryStore;

/// The resident memory of this process (KiB), from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A work session as a select through the broker binds it (one backend session, no conversation).
fn selected(upstream: &UpstreamId, project: &Project, at: u64) -> (WorkSession, Links) {
    let mut backends = BackendSessions::default();
    backends.insert_field(
        BackendSessions::field(upstream, project),
        BackendSessionId::parse(random_hex128()).expect("backend session id"),
    );
    let session = WorkSession {
        id: WorkSessionId::random(),
        principal: PrincipalId::parse(random_hex128()).expect("principal"),
        surface: Surface::parse("mcp-load").expect("surface"),
        conversation: None,
        project: project.clone(),
        created_ms: at,
        last_active_ms: at,
        calls: 0,
        backends,
    };
    let links = Links {
        mcp_session: Some(McpSessionId::random()),
        conversation: None,
        count_only: false,
    };
    (session, links)
}

#[test]
#[ignore = "measures the process's memory: run alone, in release"]
fn resident_memory_per_work_session() {
    const SESSIONS: u64 = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = MemoryStore::new(Lifetimes::with_idle(Duration::from_secs(7200)));
    let upstream = UpstreamId::parse(random_hex128()).expect("upstream");
    let project = Project::parse("linkedin").expect("project");
    let before = rss_kib();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    runtime.block_on(async {
        for _ in 0..SESSIONS {
            let (session, links) = selected(&upstream, &project, now);
            store.bind(&session, &links).await.expect("bind");
        }
    });
    let grown = rss_kib().saturating_sub(before);
    let live = runtime
        .block_on(store.live_work_sessions())
        .expect("live count");
    assert_eq!(live, SESSIONS);
    println!(
        "{SESSIONS} work sessions: +{:.1} MiB resident, {} bytes each",
        grown as f64 / 1024.0,
        grown * 1024 / SESSIONS
    );
}

/// How long a sweep and a purge take under the store's lock when nothing is due, with 100k live work
/// sessions (one per principal, as above): the cost every steady call pays while it waits for the lock.
///
/// `cargo test -p broker --release --lib store::memory::size -- --ignored --nocapture`
#[test]
#[ignore = "measures time: run alone, in release"]
fn a_sweep_with_nothing_due_at_100k_work_sessions() {
    use std::time::Instant;

    use crate::store::clock::Clock;

    const SESSIONS: u64 = 100_000;
    const ROUNDS: u32 = 20;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (clock, hand) = Clock::manual();
    let store = MemoryStore::new(Lifetimes::with_idle(Duration::from_secs(7200))).with_clock(clock);
    let upstream = UpstreamId::parse(random_hex128()).expect("upstream");
    let project = Project::parse("linkedin").expect("project");
    let now = hand.now_ms();
    runtime.block_on(async {
        for _ in 0..SESSIONS {
            let (session, links) = selected(&upstream, &project, now);
            store.bind(&session, &links).await.expect("bind");
        }
        let started = Instant::now();
        for _ in 0..ROUNDS {
            hand.advance(Duration::from_secs(1));
            let claimed = store.claim_expired(100).await.expect("sweep");
            assert_eq!(claimed.finalized, 0);
        }
        let sweep = started.elapsed() / ROUNDS;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            hand.advance(Duration::from_secs(61));
            store.ping().await.expect("purge");
        }
        let purge = started.elapsed() / ROUNDS;
        assert_eq!(store.live_work_sessions().await.expect("live"), SESSIONS);
        println!("{SESSIONS} work sessions, nothing due: a sweep {sweep:?}, a purge {purge:?}");
    });
}

/// What the ~320 bytes above are made of (plus the work session's 40-byte entry in the deadline
/// index, `deadlines.rs`): a principal with one work session, one MCP-session link, one surface and
/// one recent project is one slot of the principals' slab (its record, no allocation of its own:
/// `slab.rs`) and one entry of the map to the slots. A field that makes them grow should be a
/// choice, not an accident.
#[test]
fn a_principal_with_one_work_session_is_one_small_allocation() {
    use std::mem::size_of;

    use super::packed::Packed;
    use super::principal::{Principal, Record};

    assert!(size_of::<Packed>() <= 24, "{}", size_of::<Packed>());
    assert!(size_of::<Record>() <= 128, "{}", size_of::<Record>());
    assert!(size_of::<Principal>() <= 272, "{}", size_of::<Principal>());
}
