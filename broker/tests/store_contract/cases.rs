//! The store contract's cases about finding, touching and administering work sessions (and the
//! helpers every case uses). Each case takes `&dyn Store`: both stores run every one.

use std::time::Duration;

use broker::ids::{
    BackendSessionId, ConversationKey, McpSessionId, PrincipalId, Project, Surface, UpstreamId,
    WorkSessionId,
};
use broker::session::{Links, WorkSession};
use broker::store::{AdminAction, BackendRef, McpQuery, Query, Store};

pub fn principal(n: u8) -> PrincipalId {
    PrincipalId::parse(format!("{n:02x}").repeat(16)).expect("principal")
}

pub fn surface(name: &str) -> Surface {
    Surface::parse(name).expect("surface")
}

pub fn work(p: &PrincipalId, s: &str, project: &str, at: u64) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: p.clone(),
        surface: surface(s),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: at,
        last_active_ms: at,
        calls: 0,
        backends: Default::default(),
    }
}

pub fn query(p: &PrincipalId, s: &str) -> Query {
    Query {
        principal: p.clone(),
        surface: surface(s),
        mcp: None,
        handle: None,
        conversation: None,
        settle_early: false,
        record_when_settled: false,
    }
}

pub fn upstream() -> UpstreamId {
    UpstreamId::parse("ab".repeat(8)).expect("upstream")
}

/// The MCP-session part of a query, for a session whose id names no backend session.
pub fn mcp_query(session: &McpSessionId) -> McpQuery {
    McpQuery {
        session: session.clone(),
        upstream: upstream(),
        backend: None,
    }
}

/// Links that set the MCP-session link (and the conversation link, if given).
pub fn linking(session: &McpSessionId, conversation: Option<&ConversationKey>) -> Links {
    Links {
        mcp_session: Some(session.clone()),
        conversation: conversation.cloned(),
        count_only: false,
    }
}

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

pub async fn touch_slides_the_idle_ttl(store: &dyn Store) {
    let p = principal(3);
    let session = work(&p, "cursor", "atlas", 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    for step in 0..4u64 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            store
                .touch(&session, &Links::default(), 10 + step)
                .await
                .expect("touch"),
            "alive at step {step}"
        );
    }
    let live = store
        .lookup(&query(&p, "cursor"))
        .await
        .expect("lookup")
        .found
        .surface_live;
    assert_eq!(live.first().map(|s| s.calls), Some(5));
    // Activity moves last_active forward (Redis stamps it with its own clock, so replicas agree).
    assert!(
        live.first()
            .is_some_and(|s| s.last_active_ms > session.last_active_ms)
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        !store
            .touch(&session, &Links::default(), 99)
            .await
            .expect("touch"),
        "expired after idling"
    );
    assert!(
        store
            .lookup(&query(&p, "cursor"))
            .await
            .expect("lookup")
            .found
            .surface_live
            .is_empty()
    );
}

pub async fn surfaces_list_newest_first(store: &dyn Store) {
    let p = principal(4);
    let older = work(&p, "claude-ai", "linkedin", 100);
    let newer = work(&p, "claude-ai", "innkeeper", 200);
    store.bind(&older, &Links::default()).await.expect("bind");
    // Redis stamps activity with its own millisecond clock: let it tick between the two.
    tokio::time::sleep(Duration::from_millis(5)).await;
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

pub async fn mcp_sessions_end_and_remember_backends(store: &dyn Store) {
    let p = principal(5);
    let sid = McpSessionId::random();
    let own = BackendSessionId::parse("own-backend-session").expect("bs");
    let replacement = BackendSessionId::parse("replacement").expect("bs");
    let mcp = McpQuery {
        session: sid.clone(),
        upstream: upstream(),
        backend: Some(own.clone()),
    };
    assert_eq!(
        store.mcp_state(&p, &mcp).await.expect("state"),
        Default::default()
    );

    let replacement_ref = BackendRef {
        upstream: upstream(),
        session: replacement.clone(),
    };
    store
        .set_backend_session(&p, &sid, &replacement_ref)
        .await
        .expect("override");
    let state = store.mcp_state(&p, &mcp).await.expect("state");
    assert_eq!(state.backend_override, Some(replacement));

    store.end_mcp_session(&p, &sid).await.expect("end");
    assert!(store.mcp_state(&p, &mcp).await.expect("state").ended);
    assert!(
        !store
            .mcp_state(&principal(6), &mcp)
            .await
            .expect("state")
            .ended
    );
}

pub async fn work_sessions_remember_their_backend_sessions(store: &dyn Store) {
    let p = principal(12);
    let mut session = work(&p, "claude-ai", "atlas", 1000);
    let sid = McpSessionId::random();
    let links = linking(&sid, None);
    let first = BackendRef {
        upstream: upstream(),
        session: BackendSessionId::parse("backend-on-atlas").expect("bs"),
    };
    assert!(
        !store
            .set_work_backend(&session, &first)
            .await
            .expect("record"),
        "nothing is recorded for a work session that does not exist"
    );
    store.bind(&session, &links).await.expect("bind");
    assert!(
        store
            .set_work_backend(&session, &first)
            .await
            .expect("record")
    );
    let mut q = query(&p, "claude-ai");
    q.handle = Some(session.id.clone());
    let found = store
        .lookup(&q)
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    let atlas = Project::parse("atlas").expect("p");
    assert_eq!(
        found.backends.get(&upstream(), &atlas),
        Some(&first.session)
    );
    let other_upstream = UpstreamId::parse("cd".repeat(8)).expect("up");
    assert_eq!(found.backends.get(&other_upstream, &atlas), None);

    // A later bind of the same work session (a select that continues it) keeps the record.
    session.last_active_ms = 2000;
    store.bind(&session, &links).await.expect("bind again");
    let found = store
        .lookup(&q)
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    assert_eq!(
        found.backends.get(&upstream(), &atlas),
        Some(&first.session)
    );

    // After an operator's rebind, the new project has no backend session yet.
    let zephyr = Project::parse("zephyr").expect("p");
    assert!(
        store
            .admin(&p, &session.id, &AdminAction::Rebind(zephyr.clone()))
            .await
            .expect("rebind")
    );
    let found = store
        .lookup(&q)
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    assert_eq!(found.project, zephyr);
    assert_eq!(found.backends.get(&upstream(), &zephyr), None);
}

pub async fn operators_list_rebind_and_end_work_sessions(store: &dyn Store) {
    let p = principal(20);
    let session = work(&p, "claude-ai", "linkedin", 1);
    let first = Links {
        mcp_session: Some(McpSessionId::random()),
        conversation: None,
        count_only: false,
    };
    let second = Links {
        mcp_session: Some(McpSessionId::random()),
        conversation: None,
        count_only: false,
    };
    store.bind(&session, &first).await.expect("bind");
    assert!(store.touch(&session, &first, 2).await.expect("touch"));
    assert!(store.touch(&session, &second, 3).await.expect("touch"));
    let listed = store.list_work_sessions(&p).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].live && !listed[0].finalized);
    assert_eq!(
        listed[0].mcp_sessions, 2,
        "two distinct MCP sessions worked in it"
    );
    // A call that resolved without its MCP session's link counts the session and links nothing.
    let third = McpSessionId::random();
    let counted = Links {
        mcp_session: Some(third.clone()),
        conversation: None,
        count_only: true,
    };
    assert!(store.touch(&session, &counted, 4).await.expect("touch"));
    let listed = store.list_work_sessions(&p).await.expect("list");
    assert_eq!(listed[0].mcp_sessions, 3);
    let mut q = query(&p, "claude-ai");
    q.mcp = Some(mcp_query(&third));
    assert_eq!(
        store.lookup(&q).await.expect("lookup").found.linked,
        None,
        "no link was written"
    );
    assert!(
        store
            .list_work_sessions(&principal(21))
            .await
            .expect("list")
            .is_empty()
    );

    let innkeeper = Project::parse("innkeeper").expect("p");
    assert!(
        store
            .admin(&p, &session.id, &AdminAction::Rebind(innkeeper.clone()))
            .await
            .expect("rebind")
    );
    let shown = store
        .work_session(&p, &session.id)
        .await
        .expect("show")
        .expect("exists");
    assert_eq!(shown.session.project, innkeeper);
    assert!(
        !store
            .admin(&principal(21), &session.id, &AdminAction::End)
            .await
            .expect("end"),
        "another principal's"
    );

    assert!(
        store
            .admin(&p, &session.id, &AdminAction::End)
            .await
            .expect("end")
    );
    assert!(
        !store.touch(&session, &first, 4).await.expect("touch"),
        "ended: no longer live"
    );
    let mut finalized = 0;
    for _ in 0..3 {
        finalized += store.claim_expired(100).await.expect("claim").finalized;
    }
    assert!(finalized >= 1);
    let shown = store
        .work_session(&p, &session.id)
        .await
        .expect("show")
        .expect("exists");
    assert!(shown.finalized && !shown.live);
    assert!(
        !store
            .admin(&p, &session.id, &AdminAction::End)
            .await
            .expect("end"),
        "already finalized"
    );
}

/// A call's lookup that stops once its pointer settles the work session (`settle_early`) finds the
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
pub async fn a_call_recorded_by_its_lookup_counts_as_a_touch(store: &dyn Store) {
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
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
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

/// A parked call's next round is taken once, by its principal's key only, and not after its TTL.
pub async fn parked_rounds_are_taken_once_and_expire(store: &dyn Store) {
    let (a, b) = (principal(31), principal(32));
    let ttl = Duration::from_millis(300);
    store
        .put_parked(&a, "k1", "round-1", ttl)
        .await
        .expect("put");
    assert_eq!(
        store.take_parked(&b, "k1").await.expect("take"),
        None,
        "another principal's key"
    );
    assert_eq!(
        store.take_parked(&a, "k1").await.expect("take").as_deref(),
        Some("round-1")
    );
    assert_eq!(
        store.take_parked(&a, "k1").await.expect("take"),
        None,
        "taken once"
    );
    store.put_parked(&a, "k2", "late", ttl).await.expect("put");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.take_parked(&a, "k2").await.expect("take"),
        None,
        "expired"
    );
}
