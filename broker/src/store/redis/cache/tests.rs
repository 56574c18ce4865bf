//! The cache's rules, table by table: which answers are kept, how long they are served, and that no
//! invalidation or feed fault can be lost between a read and its insert.

use super::*;
use crate::ids::{
    BackendSessionId, ConversationKey, McpSessionId, Project, Surface, UpstreamId, WorkSessionId,
};
use crate::store::{McpQuery, McpState};

const IDLE: u64 = 7_200_000;
const REFRESH: u64 = 5_000;
const NOW: u64 = 50_000_000;
const RULES: Rules = Rules {
    idle_ms: IDLE,
    refresh_ms: REFRESH,
};

fn principal() -> PrincipalId {
    PrincipalId::parse("ab".repeat(16)).expect("p")
}

fn ws(project: &str) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: principal(),
        surface: Surface::parse("claude-ai").expect("s"),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: 0,
        last_active_ms: NOW - 1_000,
        calls: 0,
        backends: Default::default(),
    }
}

#[derive(Clone, Copy)]
struct Shape {
    handle: bool,
    conversation: bool,
    mcp: bool,
    settle_early: bool,
    record: bool,
}

const STEADY: Shape = Shape {
    handle: false,
    conversation: false,
    mcp: true,
    settle_early: true,
    record: false,
};

fn query(shape: Shape) -> Query {
    Query {
        principal: principal(),
        surface: Surface::parse("claude-ai").expect("s"),
        mcp: shape.mcp.then(|| McpQuery {
            session: McpSessionId::parse("a1").expect("sid"),
            upstream: UpstreamId::parse("b1").expect("u"),
            backend: Some(BackendSessionId::parse("b1").expect("b")),
        }),
        handle: shape.handle.then(WorkSessionId::random),
        conversation: shape
            .conversation
            .then(|| ConversationKey::parse("c".repeat(32)).expect("c")),
        settle_early: shape.settle_early,
        record_when_settled: shape.record,
    }
}

/// An answer: which of handle / conversation / linked the store found, and whether the MCP session
/// has ended.
fn answer(handle: bool, conversation: bool, linked: bool, ended: bool) -> Answer {
    Answer {
        found: Found {
            handle: handle.then(|| ws("h")),
            conversation: conversation.then(|| ws("c")),
            linked: linked.then(|| ws("l")),
            surface_live: vec![ws("s")],
            recent_projects: vec![Project::parse("r").expect("p")],
        },
        mcp: McpState {
            ended,
            backend_override: None,
        },
        live_count: 3,
        recorded: false,
    }
}

/// A row: what, the query's shape, the answer (handle, conversation, linked found; MCP session
/// ended), and the project of the answer kept.
type KeptRow = (
    &'static str,
    Shape,
    (bool, bool, bool, bool),
    Option<&'static str>,
);

/// A row: what, and what happens between a lookup's ticket and its insert.
type RaceRow = (&'static str, fn(&LookupCache));

#[test]
fn only_a_steady_calls_settled_answer_is_kept_and_only_its_settling_session() {
    let with = |f: fn(&mut Shape)| {
        let mut shape = STEADY;
        f(&mut shape);
        shape
    };
    // (what, query shape, answer (handle, conversation, linked, ended), kept: which project)
    let rows: Vec<KeptRow> = vec![
        (
            "link settles",
            STEADY,
            (false, false, true, false),
            Some("l"),
        ),
        ("link missing", STEADY, (false, false, false, false), None),
        (
            "MCP session ended",
            STEADY,
            (false, false, true, true),
            None,
        ),
        (
            "a select reads everything",
            with(|s| s.settle_early = false),
            (false, false, true, false),
            None,
        ),
        (
            "a lookup that records",
            with(|s| s.record = true),
            (false, false, true, false),
            None,
        ),
        (
            "handle settles",
            with(|s| s.handle = true),
            (true, true, true, false),
            Some("h"),
        ),
        (
            "handle gone: refused, never kept",
            with(|s| s.handle = true),
            (false, true, true, false),
            None,
        ),
        (
            "conversation settles",
            with(|s| s.conversation = true),
            (false, true, true, false),
            Some("c"),
        ),
        (
            "keyed, not selected: never the link",
            with(|s| s.conversation = true),
            (false, false, true, false),
            None,
        ),
        (
            "no MCP session, no key: surface only",
            with(|s| s.mcp = false),
            (false, false, true, false),
            None,
        ),
    ];
    for (what, shape, (h, c, l, ended), kept) in rows {
        let got = settled(&query(shape), &answer(h, c, l, ended));
        let project = got
            .as_ref()
            .and_then(settling)
            .map(|s| s.project.to_string());
        assert_eq!(project.as_deref(), kept, "{what}");
        if let Some(got) = got {
            assert!(got.found.surface_live.is_empty(), "{what}: surface kept");
            assert!(got.found.recent_projects.is_empty(), "{what}: recent kept");
            assert_eq!(got.live_count, 0, "{what}: count kept");
            let settled_fields = [
                &got.found.handle,
                &got.found.conversation,
                &got.found.linked,
            ];
            assert_eq!(
                settled_fields.iter().filter(|f| f.is_some()).count(),
                1,
                "{what}: exactly the settling work session"
            );
        }
    }
}

#[test]
fn an_entry_is_served_for_one_interval_and_never_near_idle() {
    // (what, read at, last activity, now, served)
    let rows = [
        ("just read", NOW, NOW - 1_000, NOW, true),
        (
            "within the interval",
            NOW,
            NOW - 1_000,
            NOW + REFRESH - 1,
            true,
        ),
        ("one interval old", NOW, NOW - 1_000, NOW + REFRESH, false),
        ("idle TTL far", NOW, NOW - IDLE + 2 * REFRESH, NOW, true),
        (
            "within one interval of idle",
            NOW,
            NOW - IDLE + REFRESH,
            NOW,
            false,
        ),
        ("idle", NOW, NOW - IDLE, NOW, false),
        ("long idle", NOW, 0, NOW, false),
        ("clock behind the read", NOW, NOW - 1_000, NOW - 10, true),
    ];
    for (what, read, last, now, served) in rows {
        assert_eq!(fresh(RULES, read, last, now), served, "{what}");
    }
}

fn live_cache() -> LookupCache {
    let cache = LookupCache::new(RULES);
    cache.renew(Instant::now() + Duration::from_secs(60));
    cache
}

#[test]
fn a_kept_answer_is_served_until_invalidated() {
    let cache = live_cache();
    let q = query(STEADY);
    let a = answer(false, false, true, false);
    let ticket = cache.ticket().expect("feed up");
    cache.put(ticket, &q, &a, NOW);
    let served = cache.get(&q, NOW + 1).expect("served");
    assert_eq!(served, settled(&q, &a).expect("kept"));
    let mut other = q.clone();
    other.mcp = None;
    assert_eq!(
        cache.get(&other, NOW + 1),
        None,
        "another query is another entry"
    );
    cache.invalidate(&principal());
    assert_eq!(cache.get(&q, NOW + 1), None, "invalidated");
    assert!(cache.is_empty());
}

#[test]
fn nothing_read_across_an_invalidation_or_a_feed_fault_is_kept() {
    let q = query(STEADY);
    let a = answer(false, false, true, false);
    // (what, what happens between the ticket and the insert)
    let rows: [RaceRow; 4] = [
        ("an invalidation of this principal", |c| {
            c.invalidate(&principal())
        }),
        ("an invalidation of another principal", |c| {
            c.invalidate(&PrincipalId::parse("cd".repeat(16)).expect("p"))
        }),
        ("the feed broke", |c| c.drop_all()),
        ("the feed broke and came back", |c| {
            c.drop_all();
            c.renew(Instant::now() + Duration::from_secs(60));
        }),
    ];
    for (what, between) in rows {
        let cache = live_cache();
        let ticket = cache.ticket().expect("feed up");
        between(&cache);
        cache.put(ticket, &q, &a, NOW);
        assert_eq!(cache.get(&q, NOW), None, "{what}: kept");
    }
}

#[test]
fn nothing_is_served_or_kept_without_a_live_feed() {
    let q = query(STEADY);
    let a = answer(false, false, true, false);
    let cache = LookupCache::new(RULES);
    assert_eq!(cache.ticket(), None, "never subscribed");
    let cache = live_cache();
    cache.put(cache.ticket().expect("up"), &q, &a, NOW);
    cache.renew(Instant::now() - Duration::from_millis(1));
    assert_eq!(cache.get(&q, NOW), None, "lease run out");
    cache.renew(Instant::now() + Duration::from_secs(60));
    assert!(cache.get(&q, NOW).is_some(), "renewed on the same feed");
    cache.drop_all();
    assert!(cache.is_empty(), "dropped whole");
    assert_eq!(cache.ticket(), None);
}

#[test]
fn it_stays_bounded() {
    let cache = live_cache();
    let a = answer(false, false, true, false);
    for i in 0..CAPACITY + 10 {
        let mut q = query(STEADY);
        if let Some(mcp) = q.mcp.as_mut() {
            mcp.session = McpSessionId::parse(format!("{i:x}")).expect("sid");
        }
        cache.put(cache.ticket().expect("up"), &q, &a, NOW);
    }
    assert!(cache.len() <= CAPACITY);
}
