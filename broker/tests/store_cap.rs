//! The cap on live work sessions per principal, enforced by `bind` itself, run against both stores
//! (memory, and Redis on a real `redis-server`): exact under concurrency, updates of a live work
//! session always allowed, idle and ended ones not counted, other principals untouched. Idling is a
//! manual clock's step ([`support::time::TestTime`]), not a sleep.

mod support;

use std::sync::Arc;
use std::time::Duration;

use broker::ids::{PrincipalId, Project, Surface, WorkSessionId};
use broker::session::{Links, WorkSession};
use broker::store::memory::MemoryStore;
use broker::store::redis::{RedisSettings, RedisStore};
use broker::store::{AdminAction, Lifetimes, Query, Store, StoreError};
use support::time::TestTime;

const CAP: u64 = 3;

fn principal(n: u8) -> PrincipalId {
    PrincipalId::parse(format!("{n:02x}").repeat(16)).expect("principal")
}

fn work(p: &PrincipalId, surface: &str, project: &str) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: p.clone(),
        surface: Surface::parse(surface).expect("surface"),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: 1,
        last_active_ms: 1,
        calls: 0,
        backends: Default::default(),
    }
}

async fn live_count(store: &dyn Store, p: &PrincipalId) -> u64 {
    let query = Query {
        principal: p.clone(),
        surface: Surface::parse("any").expect("surface"),
        mcp: None,
        handle: None,
        conversation: None,
        settle_early: false,
        record_when_settled: false,
    };
    store.lookup(&query).await.expect("lookup").live_count
}

async fn listed_live(store: &dyn Store, p: &PrincipalId) -> usize {
    let all = store.list_work_sessions(p).await.expect("list");
    all.iter().filter(|s| s.live).count()
}

/// A new work session past the cap is refused and nothing is written; a live one is still updated;
/// another principal has its own cap; an ended one frees its place.
async fn cap_refuses_the_one_too_many(store: &dyn Store) {
    let p = principal(1);
    let mut bound = Vec::new();
    for n in 0..CAP {
        let session = work(&p, &format!("s{n}"), &format!("p{n}"));
        store
            .bind(&session, &Links::default())
            .await
            .expect("under the cap");
        bound.push(session);
    }
    let extra = work(&p, "extra", "one-too-many");
    assert!(matches!(
        store.bind(&extra, &Links::default()).await,
        Err(StoreError::TooMany(CAP))
    ));
    assert!(
        store
            .work_session(&p, &extra.id)
            .await
            .expect("show")
            .is_none(),
        "a refused bind writes nothing"
    );
    assert_eq!(live_count(store, &p).await, CAP);

    let mut moved = bound[0].clone();
    moved.project = Project::parse("elsewhere").expect("project");
    store
        .bind(&moved, &Links::default())
        .await
        .expect("updating a live work session is always allowed");

    let q = principal(2);
    store
        .bind(&work(&q, "s0", "other"), &Links::default())
        .await
        .expect("another principal's cap is its own");

    assert!(
        store
            .admin(&p, &bound[1].id, &AdminAction::End)
            .await
            .expect("end")
    );
    store
        .bind(&extra, &Links::default())
        .await
        .expect("an ended work session no longer counts");
    assert_eq!(listed_live(store, &p).await, 3);
}

/// Many binds of new work sessions at once: exactly the cap succeed.
async fn concurrent_binds_stop_exactly_at_the_cap(store: Arc<dyn Store>, cap: u64) {
    let p = principal(3);
    let attempts = (0..100).map(|n| {
        let store = store.clone();
        let session = work(&p, &format!("surface-{n}"), "race");
        tokio::spawn(async move { store.bind(&session, &Links::default()).await })
    });
    let (mut ok, mut refused) = (0u64, 0u64);
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::TooMany(c)) if c == cap => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, refused), (cap, 100 - cap));
    assert_eq!(live_count(store.as_ref(), &p).await, cap);
    assert_eq!(listed_live(store.as_ref(), &p).await as u64, cap);
}

/// Work sessions idle past their TTL leave room for new ones.
async fn idle_work_sessions_do_not_count(store: &dyn Store, time: &TestTime) {
    let p = principal(4);
    for n in 0..CAP {
        store
            .bind(&work(&p, &format!("s{n}"), "old"), &Links::default())
            .await
            .expect("bind");
    }
    time.pass(IDLE + IDLE / 10).await;
    store
        .bind(&work(&p, "fresh", "new"), &Links::default())
        .await
        .expect("idle ones are not live");
}

/// Far longer than the real time a test takes: only the clock idles a work session.
const IDLE: Duration = Duration::from_secs(60);

fn lifetimes() -> Lifetimes {
    Lifetimes::with_idle(IDLE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_caps_binds() {
    let time = TestTime::memory();
    let store = MemoryStore::new(lifetimes())
        .with_max_work_sessions(CAP)
        .with_clock(time.clock());
    cap_refuses_the_one_too_many(&store).await;
    idle_work_sessions_do_not_count(&store, &time).await;
    let racing = Arc::new(MemoryStore::new(lifetimes()).with_max_work_sessions(10));
    concurrent_binds_stop_exactly_at_the_cap(racing, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_caps_binds() {
    let redis = support::RedisServer::start();
    let time = TestTime::redis_url(&redis.url());
    let store = RedisStore::new(RedisSettings::new(redis.url()), lifetimes())
        .expect("store")
        .with_max_work_sessions(CAP)
        .with_clock(time.clock());
    cap_refuses_the_one_too_many(&store).await;
    idle_work_sessions_do_not_count(&store, &time).await;
    // Three replicas sharing one Redis, racing: still exactly the cap.
    let replicas: Vec<Arc<dyn Store>> = (0..3)
        .map(|_| {
            let store = RedisStore::new(RedisSettings::new(redis.url()), lifetimes())
                .expect("store")
                .with_max_work_sessions(10);
            Arc::new(store) as Arc<dyn Store>
        })
        .collect();
    concurrent_binds_across(replicas, 10).await;
}

/// Like [`concurrent_binds_stop_exactly_at_the_cap`], spread over several stores (replicas).
async fn concurrent_binds_across(replicas: Vec<Arc<dyn Store>>, cap: u64) {
    let p = principal(5);
    let attempts: Vec<_> = (0..120)
        .map(|n| {
            let store = replicas[n % replicas.len()].clone();
            let session = work(&p, &format!("surface-{n}"), "race");
            tokio::spawn(async move { store.bind(&session, &Links::default()).await })
        })
        .collect();
    let mut ok = 0u64;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::TooMany(_)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, cap);
    assert_eq!(live_count(replicas[0].as_ref(), &p).await, cap);
}

#[tokio::test]
async fn no_cap_means_no_limit() {
    let store = MemoryStore::new(lifetimes());
    let p = principal(6);
    for n in 0..20 {
        store
            .bind(&work(&p, &format!("s{n}"), "x"), &Links::default())
            .await
            .expect("no cap");
    }
    assert_eq!(live_count(&store, &p).await, 20);
}
