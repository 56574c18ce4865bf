//! The store contract, run against both stores: the in-memory one and Redis (a real `redis-server`
//! on a free port). Same calls, same answers.

mod support;

use std::sync::Arc;
use std::time::Duration;

use broker::ids::{
    BackendSessionId, ConversationKey, McpSessionId, PrincipalId, Project, Surface, UpstreamId,
    WorkSessionId,
};
use broker::session::{Links, WorkSession};
use broker::store::memory::MemoryStore;
use broker::store::redis::{RedisSettings, RedisStore};
use broker::store::{AdminAction, BackendRef, Lifetimes, McpQuery, Query, Store};

fn principal(n: u8) -> PrincipalId {
    PrincipalId::parse(format!("{n:02x}").repeat(16)).expect("principal")
}

fn surface(name: &str) -> Surface {
    Surface::parse(name).expect("surface")
}

fn work(p: &PrincipalId, s: &str, project: &str, at: u64) -> WorkSession {
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

fn query(p: &PrincipalId, s: &str) -> Query {
    Query {
        principal: p.clone(),
        surface: surface(s),
        mcp: None,
        handle: None,
        conversation: None,
    }
}

fn upstream() -> UpstreamId {
    UpstreamId::parse("ab".repeat(8)).expect("upstream")
}

async fn binding_is_found_by_every_key_and_nowhere_else(store: &dyn Store) {
    let alice = principal(1);
    let bob = principal(2);
    let sid = McpSessionId::random();
    let conversation = ConversationKey::parse("cd".repeat(16)).expect("conversation");
    let session = work(&alice, "claude-ai", "linkedin", 1000);
    let links = Links {
        mcp_session: Some(sid.clone()),
        conversation: Some(conversation.clone()),
    };
    store.bind(&session, &links).await.expect("bind");

    let mut q = query(&alice, "claude-ai");
    q.handle = Some(session.id.clone());
    q.conversation = Some(conversation.clone());
    q.mcp = Some(McpQuery {
        session: sid.clone(),
        upstream: upstream(),
        backend: None,
    });
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

async fn touch_slides_the_idle_ttl(store: &dyn Store) {
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

async fn surfaces_list_newest_first(store: &dyn Store) {
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

async fn mcp_sessions_end_and_remember_backends(store: &dyn Store) {
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

async fn work_sessions_remember_their_backend_sessions(store: &dyn Store) {
    let p = principal(12);
    let mut session = work(&p, "claude-ai", "atlas", 1000);
    let sid = McpSessionId::random();
    let links = Links {
        mcp_session: Some(sid.clone()),
        conversation: None,
    };
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

async fn idle_sessions_are_finalized_once_and_delivered_until_acknowledged(store: &dyn Store) {
    let p = principal(9);
    let idle = work(&p, "claude-ai", "handover-me", 1);
    let busy = work(&p, "claude-code", "still-busy", 1);
    store.bind(&idle, &Links::default()).await.expect("bind");
    store.bind(&busy, &Links::default()).await.expect("bind");
    // Drain anything earlier steps of the contract left due.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        store
            .touch(&busy, &Links::default(), 2)
            .await
            .expect("touch")
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    // `idle` is past its deadline; `busy` was called 0.7 s ago: activity postponed its deadline.
    let mut claimed = 0;
    for _ in 0..3 {
        claimed += store.claim_expired(100).await.expect("claim");
    }
    let mut events = Vec::new();
    loop {
        let batch = store
            .next_finalized("a", 10, Duration::from_millis(100), Duration::from_secs(60))
            .await
            .expect("events");
        if batch.is_empty() {
            break;
        }
        events.extend(batch);
    }
    let mine: Vec<_> = events.iter().filter(|d| d.event.principal == p).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].event.project.as_str(), "handover-me");
    assert_eq!(mine[0].event.calls, 1);
    assert!(claimed >= 1);

    // Finalized: not live, not touchable, never revived by a bind, never claimed again.
    assert!(
        !store
            .touch(&idle, &Links::default(), 3)
            .await
            .expect("touch")
    );
    assert!(store.bind(&idle, &Links::default()).await.is_err());
    let live = store
        .lookup(&query(&p, "claude-ai"))
        .await
        .expect("lookup")
        .found
        .surface_live;
    assert!(live.is_empty());
    assert_eq!(store.claim_expired(100).await.expect("claim"), 0);

    // Not acknowledged: another consumer gets it once it is stale; acknowledged: nobody does.
    let retaken = store
        .next_finalized("b", 10, Duration::from_millis(50), Duration::from_millis(1))
        .await
        .expect("events");
    let again: Vec<_> = retaken.iter().filter(|d| d.event.principal == p).collect();
    assert_eq!(
        again.len(),
        1,
        "an unacknowledged event is handed out again"
    );
    assert!(again[0].redeliveries >= 1);
    for delivery in events.iter().chain(retaken.iter()) {
        store.ack_finalized(&delivery.id).await.expect("ack");
    }
    let after = store
        .next_finalized("c", 10, Duration::from_millis(50), Duration::from_millis(1))
        .await
        .expect("events");
    assert!(after.is_empty(), "{after:?}");

    // `busy` is finalized once it idles too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(store.claim_expired(100).await.expect("claim") >= 1);
}

async fn operators_list_rebind_and_end_work_sessions(store: &dyn Store) {
    let p = principal(20);
    let session = work(&p, "claude-ai", "linkedin", 1);
    let first = Links {
        mcp_session: Some(McpSessionId::random()),
        conversation: None,
    };
    let second = Links {
        mcp_session: Some(McpSessionId::random()),
        conversation: None,
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
        finalized += store.claim_expired(100).await.expect("claim");
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

async fn contract(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    binding_is_found_by_every_key_and_nowhere_else(store.as_ref()).await;
    surfaces_list_newest_first(store.as_ref()).await;
    mcp_sessions_end_and_remember_backends(store.as_ref()).await;
    work_sessions_remember_their_backend_sessions(store.as_ref()).await;
    touch_slides_the_idle_ttl(store.as_ref()).await;
    idle_sessions_are_finalized_once_and_delivered_until_acknowledged(store.as_ref()).await;
    operators_list_rebind_and_end_work_sessions(store.as_ref()).await;
}

fn lifetimes() -> Lifetimes {
    Lifetimes::with_idle(Duration::from_secs(1))
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::new(lifetimes()))).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = support::RedisServer::start();
    let store = RedisStore::new(RedisSettings::new(redis.url()), lifetimes()).expect("store");
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_finalize_each_work_session_exactly_once() {
    let redis = support::RedisServer::start();
    let replicas: Vec<Arc<RedisStore>> = (0..3)
        .map(|_| {
            Arc::new(RedisStore::new(RedisSettings::new(redis.url()), lifetimes()).expect("store"))
        })
        .collect();
    for n in 0..100u8 {
        let session = work(&principal(100 + n % 50), "claude-ai", &format!("p{n}"), 1);
        replicas[usize::from(n) % 3]
            .bind(&session, &Links::default())
            .await
            .expect("bind");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let claims = replicas.iter().cloned().map(|store| {
        tokio::spawn(async move {
            let mut total = 0;
            for _ in 0..20 {
                total += store.claim_expired(7).await.expect("claim");
            }
            total
        })
    });
    let mut total = 0;
    for claim in claims {
        total += claim.await.expect("task");
    }
    assert_eq!(total, 100, "every work session finalized exactly once");
    let mut seen = std::collections::HashSet::new();
    loop {
        let batch = replicas[0]
            .next_finalized(
                "auditor",
                50,
                Duration::from_millis(100),
                Duration::from_secs(60),
            )
            .await
            .expect("events");
        if batch.is_empty() {
            break;
        }
        for delivery in batch {
            assert!(
                seen.insert(delivery.event.work_session.clone()),
                "duplicate event"
            );
        }
    }
    assert_eq!(seen.len(), 100);
}

#[tokio::test]
async fn redis_state_survives_a_new_store_instance() {
    let redis = support::RedisServer::start();
    let long = Lifetimes::with_idle(Duration::from_secs(60));
    let p = principal(7);
    let session = work(&p, "claude-ai", "linkedin", 5);
    {
        let first = RedisStore::new(RedisSettings::new(redis.url()), long).expect("store");
        first.bind(&session, &Links::default()).await.expect("bind");
    }
    let second = RedisStore::new(RedisSettings::new(redis.url()), long).expect("store");
    let live = second
        .lookup(&query(&p, "claude-ai"))
        .await
        .expect("lookup")
        .found
        .surface_live;
    assert_eq!(live.first().map(|s| &s.id), Some(&session.id));
}

#[tokio::test]
async fn redis_restarted_empty_recreates_the_consumer_group() {
    let redis = support::RedisServer::start();
    let store = RedisStore::new(RedisSettings::new(redis.url()), lifetimes()).expect("store");
    let wait = Duration::from_millis(50);
    assert!(
        store
            .next_finalized("a", 1, wait, wait)
            .await
            .expect("read")
            .is_empty()
    );
    let cli = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "FLUSHALL"])
        .output()
        .expect("redis-cli (it comes with redis-server)");
    assert!(cli.status.success());
    // The first read after the loss may fail; the next ones work again, and events flow.
    let _ = store.next_finalized("a", 1, wait, wait).await;
    assert!(store.next_finalized("a", 1, wait, wait).await.is_ok());
    let session = work(&principal(30), "claude-ai", "after-flush", 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.claim_expired(10).await.expect("claim"), 1);
    let events = store
        .next_finalized("a", 10, wait, Duration::from_secs(60))
        .await
        .expect("read");
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn redis_down_fails_fast_with_a_store_error() {
    let redis = support::RedisServer::start();
    let url = redis.url();
    drop(redis);
    let store = RedisStore::new(RedisSettings::new(url), lifetimes()).expect("store");
    let started = std::time::Instant::now();
    assert!(store.ping().await.is_err());
    assert!(store.lookup(&query(&principal(8), "x")).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}
