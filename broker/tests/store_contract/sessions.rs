//! The store contract's cases about the life of a work session and what hangs on it: a touch slides
//! its idle TTL, MCP sessions end and remember their backend sessions, operators list, rebind and
//! end work sessions, and a parked call's next round is taken once.

use std::time::Duration;

use broker::ids::{BackendSessionId, McpSessionId, Project, UpstreamId};
use broker::session::Links;
use broker::store::{AdminAction, BackendRef, McpQuery, Store};

use crate::common::{idle_tenths, linking, mcp_query, principal, query, upstream, work};
use crate::support::time::TestTime;

pub async fn touch_slides_the_idle_ttl(store: &dyn Store, time: &TestTime) {
    let p = principal(3);
    let session = work(&p, "cursor", "atlas", 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    // Four touches 0.4 idle TTL apart: 1.6 idle TTLs after the bind, still live.
    for step in 0..4u64 {
        time.pass(idle_tenths(4)).await;
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
    time.pass(idle_tenths(13)).await;
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

/// A parked call's next round is taken once, by its principal's key only, and not after its TTL
/// (in Redis a real `SET ... PX`, which the test's time ages: `support::time`).
pub async fn parked_rounds_are_taken_once_and_expire(store: &dyn Store, time: &TestTime) {
    let (a, b) = (principal(31), principal(32));
    let ttl = Duration::from_secs(30);
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
    time.pass(Duration::from_secs(40)).await;
    assert_eq!(
        store.take_parked(&a, "k2").await.expect("take"),
        None,
        "expired"
    );
}
