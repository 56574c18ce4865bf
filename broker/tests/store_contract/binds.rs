//! The store contract's cases about counting calls when they come together: a bind that lands on a
//! work session others changed meanwhile (a select that continues a work session binds the copy its
//! lookup read, while calls of the same work session keep touching it and recording backend
//! sessions, on any replica), and touches coalesced into one.

use broker::ids::{BackendSessionId, McpSessionId, Project};
use broker::session::Links;
use broker::store::{BackendRef, Query, Store};

use crate::common::{linking, principal, query, upstream, work};

fn by_handle(session: &broker::session::WorkSession) -> Query {
    let mut q = query(&session.principal, session.surface.as_str());
    q.handle = Some(session.id.clone());
    q
}

/// A bind merges into what the store holds: the calls counted by touches that ran after its copy
/// was read stay counted (it adds its own), the creation time stays, a backend session recorded
/// meanwhile stays, and the backend session the bind carries (the select's) is recorded.
pub async fn a_bind_keeps_what_calls_recorded_meanwhile(store: &dyn Store) {
    let p = principal(70);
    let links = linking(&McpSessionId::random(), None);
    let session = work(&p, "claude-ai", "atlas", 1000);
    store.bind(&session, &links).await.expect("bind");
    let older = BackendRef {
        upstream: upstream(),
        session: BackendSessionId::parse("backend-older").expect("bs"),
    };
    assert!(
        store
            .set_work_backend(&session, &older)
            .await
            .expect("record")
    );

    // The select's lookup reads the work session: one call, the older backend session.
    let mut copy = store
        .lookup(&by_handle(&session))
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    assert_eq!(copy.calls, 1);
    let atlas = Project::parse("atlas").expect("p");

    // Meanwhile: three calls touch it, and one re-opened its backend session (the older one was
    // forgotten by the backend) and recorded the newer one.
    for now in [2000, 2001, 2002] {
        assert!(
            store
                .touch(&session, &Links::default(), now)
                .await
                .expect("touch")
        );
    }
    let newer = BackendRef {
        upstream: upstream(),
        session: BackendSessionId::parse("backend-newer").expect("bs"),
    };
    assert!(
        store
            .set_work_backend(&session, &newer)
            .await
            .expect("record")
    );

    // Then the select binds its copy (a stale count, a made-up creation time), carrying only the
    // backend session it ran on, as the proxy does: here on another upstream.
    copy.created_ms = 999_999;
    copy.backends = Default::default();
    let elsewhere = broker::ids::UpstreamId::parse("ef".repeat(8)).expect("upstream");
    let selected_on = BackendSessionId::parse("backend-of-the-select").expect("bs");
    copy.backends.insert_field(
        broker::session::BackendSessions::field(&elsewhere, &atlas),
        selected_on.clone(),
    );
    store.bind(&copy, &links).await.expect("bind the copy");
    let found = store
        .lookup(&by_handle(&session))
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    assert_eq!(
        found.calls,
        1 + 3 + 1,
        "the touches' calls and the bind's own"
    );
    assert_eq!(found.created_ms, session.created_ms);
    assert_eq!(
        found.backends.get(&upstream(), &atlas),
        Some(&newer.session)
    );
    assert_eq!(found.backends.get(&elsewhere, &atlas), Some(&selected_on));
    assert_eq!(found.project, atlas);

    // A select that ran on a fresh backend session (the recorded one was forgotten by the backend)
    // records it in place of the recorded one.
    let fresher = BackendSessionId::parse("backend-fresher").expect("bs");
    let mut again = found.clone();
    again.backends = Default::default();
    again.backends.insert_field(
        broker::session::BackendSessions::field(&upstream(), &atlas),
        fresher.clone(),
    );
    store.bind(&again, &links).await.expect("bind again");
    let found = store
        .lookup(&by_handle(&session))
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    assert_eq!(found.backends.get(&upstream(), &atlas), Some(&fresher));
    assert_eq!(found.backends.get(&elsewhere, &atlas), Some(&selected_on));
    assert_eq!(found.calls, 1 + 3 + 1 + 1);

    // A first bind still starts from one call, with its own backend session.
    let mut fresh = work(&p, "claude-ai", "zephyr", 3000);
    let zephyr = Project::parse("zephyr").expect("p");
    let own = BackendSessionId::parse("backend-of-the-select").expect("bs");
    fresh.backends.insert_field(
        broker::session::BackendSessions::field(&upstream(), &zephyr),
        own.clone(),
    );
    store.bind(&fresh, &links).await.expect("bind");
    let found = store
        .lookup(&by_handle(&fresh))
        .await
        .expect("lookup")
        .found
        .handle
        .expect("live");
    assert_eq!((found.calls, found.created_ms), (1, 3000));
    assert_eq!(found.backends.get(&upstream(), &zephyr), Some(&own));
}

/// A touch of several calls at once (the proxy coalesces the touches of one work session that queue
/// up while the store is slow) records what that many touches would.
pub async fn a_coalesced_touch_counts_every_call(store: &dyn Store) {
    let p = principal(71);
    let session = work(&p, "claude-ai", "atlas", 1000);
    let mcp = McpSessionId::random();
    store.bind(&session, &Links::default()).await.expect("bind");
    let counted = Links {
        count_only: true,
        ..linking(&mcp, None)
    };
    assert!(
        store
            .touch_calls(&session, &counted, 2000, 7)
            .await
            .expect("touch")
    );
    assert!(store.touch(&session, &counted, 2001).await.expect("touch"));
    let status = store
        .work_session(&p, &session.id)
        .await
        .expect("status")
        .expect("exists");
    assert_eq!(status.session.calls, 1 + 7 + 1);
    assert_eq!(
        status.mcp_sessions,
        7 + 1,
        "each call's MCP session counted"
    );

    // Nothing is recorded for a work session that ended.
    let gone = work(&p, "claude-ai", "zephyr", 1000);
    assert!(
        !store
            .touch_calls(&gone, &counted, 2002, 3)
            .await
            .expect("touch")
    );
}
