//! The lookup cache across replicas, on a real `redis-server` (one node and a Cluster): once
//! another replica's select, an operator's rebind or an ended MCP session has returned, a replica
//! that kept the old answer answers the new one with its very next lookup (the writer waited for
//! its feed's ack); and nothing kept is served once Redis restarts (empty), pauses, or the work
//! session goes idle. Two selects at the same instant on two replicas both land, and every
//! replica then answers what Redis holds.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::ids::{McpSessionId, PrincipalId, Project, Surface, UpstreamId, WorkSessionId};
use broker::session::{Links, WorkSession};
use broker::store::redis::{RedisSettings, RedisStore};
use broker::store::{AdminAction, Lifetimes, McpQuery, Query, Store};

fn lifetimes(idle: Duration) -> Lifetimes {
    let mut lifetimes = Lifetimes::with_idle(idle);
    lifetimes.refresh = idle / 10;
    lifetimes
}

fn replica(url: &str, idle: Duration) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::new(RedisSettings::new(url), lifetimes(idle))
            .expect("store")
            .with_lookup_cache(true),
    )
}

fn principal() -> PrincipalId {
    PrincipalId::parse("5a".repeat(16)).expect("principal")
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

fn work(project: &str) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: principal(),
        surface: Surface::parse("claude-ai").expect("surface"),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: now_ms(),
        last_active_ms: now_ms(),
        calls: 0,
        backends: Default::default(),
    }
}

fn links(mcp: &McpSessionId) -> Links {
    Links {
        mcp_session: Some(mcp.clone()),
        conversation: None,
        count_only: false,
    }
}

/// A steady call's lookup: the MCP session's link settles it.
fn steady(mcp: &McpSessionId) -> Query {
    Query {
        principal: principal(),
        surface: Surface::parse("claude-ai").expect("surface"),
        mcp: Some(McpQuery {
            session: mcp.clone(),
            upstream: UpstreamId::parse("ab".repeat(8)).expect("upstream"),
            backend: None,
        }),
        handle: None,
        conversation: None,
        settle_early: true,
        record_when_settled: false,
    }
}

/// The project `store` resolves the steady call on (`None`: nothing linked).
async fn project(store: &RedisStore, query: &Query) -> Option<String> {
    let answer = store.lookup(query).await.expect("lookup");
    answer.found.linked.map(|s| s.project.to_string())
}

/// Binds a steady call's MCP session to `project` on `store` and has its lookup served from the
/// cache; returns that lookup.
async fn bound_and_kept(store: &RedisStore, project: &str) -> Query {
    let mcp = McpSessionId::random();
    let query = steady(&mcp);
    store
        .bind(&work(project), &links(&mcp))
        .await
        .expect("bind");
    kept(store, &query, project).await;
    query
}

/// Puts `store`'s answer for `query` in its cache, and checks it is served from there.
async fn kept(store: &RedisStore, query: &Query, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = store.lookup_cache_hits().expect("cache on");
        assert_eq!(project(store, query).await.as_deref(), Some(want));
        if store.lookup_cache_hits().expect("cache on") > before {
            return;
        }
        assert!(Instant::now() < deadline, "never answered from the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn selects_and_rebinds_reach_every_replica(url: &str) {
    let idle = Duration::from_secs(60);
    let (a, b) = (replica(url, idle), replica(url, idle));
    let mcp = McpSessionId::random();
    let query = steady(&mcp);
    a.bind(&work("p0"), &links(&mcp)).await.expect("bind");
    kept(&b, &query, "p0").await;
    kept(&a, &query, "p0").await;

    let mut slowest = Duration::ZERO;
    for round in 1..=40 {
        let name = format!("p{round}");
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let started = Instant::now();
        writer.bind(&work(&name), &links(&mcp)).await.expect("bind");
        slowest = slowest.max(started.elapsed());
        // Once the bind returned (the select's reply may leave), every replica's next lookup sees
        // it: the writer's at once, the other's because the bind waited for its feed's ack.
        let want = Some(name.as_str());
        assert_eq!(project(writer, &query).await.as_deref(), want);
        assert_eq!(
            project(reader, &query).await.as_deref(),
            want,
            "round {round}"
        );
        kept(reader, &query, &name).await;
    }
    eprintln!("slowest bind, waiting for every replica's ack: {slowest:?}");

    // An operator's rebind, on either replica.
    let current = a
        .lookup(&query)
        .await
        .expect("lookup")
        .found
        .linked
        .expect("linked");
    kept(&b, &query, "p40").await;
    let done = a
        .admin(
            &principal(),
            &current.id,
            &AdminAction::Rebind(Project::parse("ops").expect("p")),
        )
        .await
        .expect("admin");
    assert!(done);
    assert_eq!(
        project(&b, &query).await.as_deref(),
        Some("ops"),
        "the rebind, at once"
    );

    // An ended MCP session: refused everywhere.
    kept(&b, &query, "ops").await;
    a.end_mcp_session(&principal(), &mcp).await.expect("end");
    let ended = b.lookup(&query).await.expect("lookup").mcp.ended;
    assert!(ended, "the end, at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selects_rebinds_and_ends_reach_every_replica() {
    let redis = support::RedisServer::start();
    selects_and_rebinds_reach_every_replica(&redis.url()).await;
    // The syncs leave nothing behind: a writer deletes its ack set, and a late ack's has a TTL.
    let mut admin = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let acks: Vec<String> = redis::cmd("KEYS")
        .arg("msb:acks:*")
        .query_async(&mut admin)
        .await
        .expect("keys");
    for key in acks {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .expect("pttl");
        assert!(ttl > 0, "{key} never expires ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selects_rebinds_and_ends_reach_every_replica_on_a_cluster() {
    let cluster = support::cluster::RedisCluster::start();
    selects_and_rebinds_reach_every_replica(&cluster.url()).await;
}

/// Two selects of one principal, on one MCP session, at the same instant on two replicas (two of a
/// user's windows, or a client retrying on another replica): both return, and once both have,
/// each replica's next lookup answers what Redis holds, whichever bind ran last. Each bind's sync
/// has its own nonce and ack set, and each feed acks both: neither barrier can take the other's
/// acks, nor leave a replica serving the answer the other bind replaced.
async fn simultaneous_selects_end_on_what_redis_holds(url: &str) {
    let idle = Duration::from_secs(60);
    let (a, b) = (replica(url, idle), replica(url, idle));
    let truth = RedisStore::new(RedisSettings::new(url), lifetimes(idle)).expect("store");
    let mcp = McpSessionId::random();
    let query = steady(&mcp);
    a.bind(&work("start"), &links(&mcp)).await.expect("bind");
    let mut current = "start".to_owned();
    let (mut slowest, mut won) = (Duration::ZERO, [0u32; 2]);
    for round in 1..=30 {
        // Both replicas serve the current answer from their caches.
        kept(&a, &query, &current).await;
        kept(&b, &query, &current).await;
        let (pa, pb) = (format!("a{round}"), format!("b{round}"));
        let timed = |store: Arc<RedisStore>, project: String| {
            let mcp = mcp.clone();
            async move {
                let started = Instant::now();
                store
                    .bind(&work(&project), &links(&mcp))
                    .await
                    .expect("bind");
                started.elapsed()
            }
        };
        let (ta, tb) = tokio::join!(timed(a.clone(), pa.clone()), timed(b.clone(), pb.clone()));
        slowest = slowest.max(ta).max(tb);
        let held = project(&truth, &query)
            .await
            .expect("Redis holds one of them");
        assert!(
            held == pa || held == pb,
            "round {round}: Redis holds {held}"
        );
        won[usize::from(held == pb)] += 1;
        for (name, store) in [("a", &a), ("b", &b)] {
            assert_eq!(
                project(store, &query).await.as_deref(),
                Some(held.as_str()),
                "round {round}: replica {name} after both selects returned"
            );
        }
        current = held;
    }
    eprintln!("slowest of two simultaneous binds: {slowest:?}; last writer a/b: {won:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_selects_on_two_replicas_end_on_what_redis_holds() {
    let redis = support::RedisServer::start();
    simultaneous_selects_end_on_what_redis_holds(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_selects_on_two_replicas_end_on_what_redis_holds_on_a_cluster() {
    let cluster = support::cluster::RedisCluster::start();
    simultaneous_selects_end_on_what_redis_holds(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_kept_is_served_once_redis_restarts_empty() {
    let mut redis = support::RedisServer::start();
    let store = replica(&redis.url(), Duration::from_secs(60));
    let query = bound_and_kept(&store, "before").await;

    redis.stop();
    // The feed's connection breaks: the cache is dropped, lookups fail fast.
    let started = Instant::now();
    while store.lookup(&query).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still served from the cache"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.start_again();
    let started = Instant::now();
    let answer = loop {
        if let Ok(answer) = store.lookup(&query).await {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        answer.found.linked, None,
        "the binding died with Redis's data: ask again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_kept_is_served_while_redis_is_paused() {
    let redis = support::RedisServer::start();
    let store = replica(&redis.url(), Duration::from_secs(60));
    let query = bound_and_kept(&store, "atlas").await;
    redis.pause();
    let started = Instant::now();
    while store.lookup(&query).await.is_ok() {
        // The lease (1 s) runs out, or the heartbeat (every 250 ms, 500 ms timeout) fails first.
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "served while cut off"
        );
    }
    redis.resume();
    let started = Instant::now();
    while project(&store, &query).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never recovered"
        );
    }
    kept(&store, &query, "atlas").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_work_session_is_never_served() {
    let redis = support::RedisServer::start();
    let idle = Duration::from_millis(1_500);
    let store = replica(&redis.url(), idle);
    let query = bound_and_kept(&store, "atlas").await;
    tokio::time::sleep(idle).await;
    assert_eq!(project(&store, &query).await, None, "idle: not live");
}
