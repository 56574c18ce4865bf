//! The store contract's cases about finding work sessions: by every key and nowhere else, the
//! surface's newest first, a lookup that stops once settled, and one that records its call.

use broker::ids::{ConversationKey, McpSessionId, PrincipalId, Project, WorkSessionId};
use broker::session::{Links, WorkSession};
use broker::store::{McpQuery, Store};

use crate::common::{linking, mcp_query, principal, query, work};
use crate::support::time::TestTime;

pub async fn binding_is_found_by_every_key_and_nowhere_else(store: &dyn Store) {
    let alice = principal(1);
    let bob = principal(2);
    let sid = McpSessionId::random();
    let conversation = ConversationKey::parse("cd".repeat(16)).expect("conversation");
    let session = work(&alice, "claude-ai", "linkedin", 1000);
    let links = linking(&sid, Some(&conversation));
    store.bind(&session, &links).await.expect("bind");

    let mut q = query(&alice, "claude-ai");
    q.handle = Some(session.id.clone());
    q.conversation = Some(conversation.clone());
    q.mcp = Some(mcp_query(&sid));
    let answer = store.lookup(&q).await.expect("lookup");
    assert_eq!(
        answer.found.handle.as_ref().map(|s| &s.id),
        Some(&session.id)
    );
    assert_eq!(
        answer.found.linked.as_ref().map(|s| &s.id),
        Some(&session.id)
    );
    assert_eq!(
        answer.found.conversation.as_ref().map(|s| &s.id),
        Some(&session.id)
    );
    assert_eq!(answer.found.surface_live.len(), 1);
    assert_eq!(
        answer.found.recent_projects,
        vec![Project::parse("linkedin").expect("p")]
    );
    assert_eq!(answer.found.handle.as_ref().map(|s| s.calls), Some(1));

    // Another surface of the same principal sees nothing on its surface.
    let other_surface = store
        .lookup(&query(&alice, "claude-code"))
        .await
        .expect("lookup");
    assert!(other_surface.found.surface_live.is_empty());

    // Another principal sees nothing at all, even with the same ids.
    let mut foreign = q.clone();
    foreign.principal = bob.clone();
    let answer = store.lookup(&foreign).await.expect("lookup");
    assert_eq!(answer.found, Default::default());
}

pub async fn surfaces_list_newest_first(store: &dyn Store, time: &TestTime) {
    let p = principal(4);
    let older = work(&p, "claude-ai", "linkedin", 100);
    let newer = work(&p, "claude-ai", "innkeeper", 200);
    store.bind(&older, &Links::default()).await.expect("bind");
    // Redis stamps activity with the store's clock, not the caller's: let it tick between the two.
    time.pass(std::time::Duration::from_millis(5)).await;
    store.bind(&newer, &Links::default()).await.expect("bind");
    let live = store
        .lookup(&query(&p, "claude-ai"))
        .await
        .expect("lookup")
        .found
        .surface_live;
    let projects: Vec<&str> = live.iter().map(|s| s.project.as_str()).collect();
    assert_eq!(projects, ["innkeeper", "linkedin"]);
}

/// same work session as a full one, lookup after lookup (the Redis store then reads the hinted work
/// session in its first step), and follows a pointer that moved since.
pub async fn a_settled_lookup_finds_what_a_full_one_finds(store: &dyn Store) {
    let p = principal(60);
    let sid = McpSessionId::random();
    let conversation = ConversationKey::parse("ef".repeat(16)).expect("conversation");
    let first = work(&p, "claude-ai", "atlas", 1000);
    let links = linking(&sid, Some(&conversation));
    store.bind(&first, &links).await.expect("bind");
    let other = work(&p, "claude-ai", "zephyr", 1000);
    store.bind(&other, &Links::default()).await.expect("bind");
    let mcp = mcp_query(&sid);
    settled_matches_full(store, &p, &mcp, &conversation, &first).await;

    // The link and the conversation move to a new work session: the hints name the old one.
    let moved = work(&p, "claude-ai", "orion", 1500);
    store.bind(&moved, &links).await.expect("bind");
    settled_matches_full(store, &p, &mcp, &conversation, &moved).await;
}

async fn settled_matches_full(
    store: &dyn Store,
    p: &PrincipalId,
    mcp: &McpQuery,
    conversation: &ConversationKey,
    want: &WorkSession,
) {
    use broker::resolve::{Asked, Found, Unkeyed, UnkeyedPolicy, resolve};
    let rules = Unkeyed {
        policy: UnkeyedPolicy::Guarded,
        window_ms: u64::MAX / 4,
        now_ms: 2000,
    };
    let bound =
        |found: &Found, asked: Asked| resolve(found, asked, rules).session().map(|s| s.id.clone());
    let kinds = [
        (
            "handle",
            Asked {
                handle: true,
                keyed: false,
            },
        ),
        (
            "conversation",
            Asked {
                handle: false,
                keyed: true,
            },
        ),
        ("link", Asked::default()),
    ];
    for (kind, asked) in kinds {
        let mut q = query(p, "claude-ai");
        q.mcp = Some(mcp.clone());
        match kind {
            "handle" => q.handle = Some(want.id.clone()),
            "conversation" => q.conversation = Some(conversation.clone()),
            _ => {}
        }
        let full = store.lookup(&q).await.expect("lookup");
        q.settle_early = true;
        for round in 0..3 {
            let settled = store.lookup(&q).await.expect("lookup");
            let (got, wanted) = (bound(&settled.found, asked), bound(&full.found, asked));
            assert_eq!(got, wanted, "{kind}, round {round}");
            assert_eq!(got, Some(want.id.clone()), "{kind}, round {round}");
            assert_eq!(settled.mcp, full.mcp, "{kind}");
        }
    }
}

/// A call the lookup recorded (`record_when_settled`, `Answer::recorded`) counts exactly as a touch
/// right after the lookup would: one call, the link slid, no extra MCP session. Where the lookup
/// did not record it, the broker touches, as here. Never recorded: a work session of another
/// surface (its surface index is not the request's), or a call on an ended MCP session.
pub async fn a_call_recorded_by_its_lookup_counts_as_a_touch(store: &dyn Store, time: &TestTime) {
    let p = principal(61);
    let sid = McpSessionId::random();
    let links = linking(&sid, None);
    let session = work(&p, "claude-ai", "atlas", 1000);
    store.bind(&session, &links).await.expect("bind");
    let before = status_of(store, &p, session.id.clone()).await;
    let mut q = query(&p, "claude-ai");
    q.mcp = Some(mcp_query(&sid));
    q.settle_early = true;
    q.record_when_settled = true;
    for _ in 0..3 {
        let answer = store.lookup(&q).await.expect("lookup");
        assert_eq!(
            answer.found.linked.as_ref().map(|s| &s.id),
            Some(&session.id)
        );
        if !answer.recorded {
            let now = time.now_ms();
            assert!(store.touch(&session, &links, now).await.expect("touch"));
        }
    }
    let after = status_of(store, &p, session.id.clone()).await;
    assert_eq!(after.session.calls, before.session.calls + 3);
    assert_eq!(
        after.mcp_sessions, before.mcp_sessions,
        "the same MCP session"
    );
    assert!(after.session.last_active_ms >= before.session.last_active_ms);

    // A handle naming a work session of another surface: found, never recorded by the lookup.
    let elsewhere = work(&p, "cursor", "zephyr", 1000);
    store
        .bind(&elsewhere, &Links::default())
        .await
        .expect("bind");
    let calls_elsewhere = status_of(store, &p, elsewhere.id.clone())
        .await
        .session
        .calls;
    let mut by_handle = q.clone();
    by_handle.handle = Some(elsewhere.id.clone());
    for _ in 0..2 {
        let answer = store.lookup(&by_handle).await.expect("lookup");
        assert_eq!(
            answer.found.handle.as_ref().map(|s| &s.id),
            Some(&elsewhere.id)
        );
        assert!(!answer.recorded);
    }
    assert_eq!(
        status_of(store, &p, elsewhere.id.clone())
            .await
            .session
            .calls,
        calls_elsewhere
    );

    // An ended MCP session: its calls are refused, so nothing is recorded.
    store.end_mcp_session(&p, &sid).await.expect("end");
    let answer = store.lookup(&q).await.expect("lookup");
    assert!(answer.mcp.ended && !answer.recorded);
    assert_eq!(
        status_of(store, &p, session.id.clone()).await.session.calls,
        after.session.calls
    );
}

async fn status_of(store: &dyn Store, p: &PrincipalId, id: WorkSessionId) -> broker::store::Status {
    store
        .work_session(p, &id)
        .await
        .expect("status")
        .expect("exists")
}
