//! The store contract, run against every store: the in-memory one, Redis (a real `redis-server` on
//! a free port), Redis over TLS and a Redis Cluster (three masters and three replicas, real
//! `redis-server`s). Same calls, same answers. No case sleeps: every store runs on a manual clock
//! that the cases advance ([`support::time::TestTime`], which ages Redis's own timers with it).
//! `store_differential/` compares the two stores' answers on random sequences of operations.

#[path = "../support/mod.rs"]
mod support;

mod binds;
mod common;
mod finalization;
mod lookups;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use broker::finalize::Redelivery;
use broker::session::Links;
use broker::store::memory::MemoryStore;
use broker::store::redis::{RedisSettings, RedisStore, TlsFiles};
use broker::store::{Lifetimes, Store};

use binds::*;
use common::*;
use finalization::*;
use lookups::*;
use sessions::*;
use support::time::TestTime;

/// Never hands an unacknowledged event out again within a test.
const NEVER_AGAIN: Redelivery = Redelivery {
    after: Duration::from_secs(600),
    attempts: 8,
};

/// Every case, in order, on one store and the time it runs on. The cases share the store and its
/// clock: time a case lets pass also idles the work sessions of the cases before it, which the
/// finalization cases' sweeps then finalize too (they look at their own principal's events).
async fn contract(store: &dyn Store, time: &TestTime) {
    store.ping().await.expect("ping");
    binding_is_found_by_every_key_and_nowhere_else(store).await;
    surfaces_list_newest_first(store, time).await;
    mcp_sessions_end_and_remember_backends(store).await;
    work_sessions_remember_their_backend_sessions(store).await;
    a_bind_keeps_what_calls_recorded_meanwhile(store).await;
    a_coalesced_touch_counts_every_call(store).await;
    touch_slides_the_idle_ttl(store, time).await;
    idle_sessions_are_finalized_once_and_delivered_until_acknowledged(store, time).await;
    operators_list_rebind_and_end_work_sessions(store).await;
    failing_events_back_off_then_go_to_the_dead_letters_and_replay(store, time).await;
    a_late_sweeper_still_finalizes_exactly_once(store, time).await;
    parked_rounds_are_taken_once_and_expire(store, time).await;
    a_settled_lookup_finds_what_a_full_one_finds(store).await;
    a_call_recorded_by_its_lookup_counts_as_a_touch(store, time).await;
}

/// A Redis store on `time`'s clock.
fn redis_store(settings: RedisSettings, time: &TestTime) -> RedisStore {
    RedisStore::new(settings, lifetimes())
        .expect("store")
        .with_clock(time.clock())
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let time = TestTime::memory();
    let store = MemoryStore::new(lifetimes()).with_clock(time.clock());
    contract(&store, &time).await;
}

/// Lifetimes with the proxy's refresh interval (0.2 idle TTL): activity recorded ahead.
fn refreshed() -> Lifetimes {
    let mut lifetimes = lifetimes();
    lifetimes.refresh = common::idle_tenths(2);
    lifetimes
}

#[tokio::test]
async fn memory_store_records_a_refresh_ahead() {
    let time = TestTime::memory();
    let store = MemoryStore::new(refreshed()).with_clock(time.clock());
    a_refresh_covers_the_interval_after_it(&store, &time).await;
}

#[tokio::test]
async fn redis_store_records_a_refresh_ahead() {
    let redis = support::RedisServer::start();
    let time = TestTime::redis_url(&redis.url());
    let store = RedisStore::new(RedisSettings::new(redis.url()), refreshed())
        .expect("store")
        .with_clock(time.clock());
    a_refresh_covers_the_interval_after_it(&store, &time).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = support::RedisServer::start();
    let time = TestTime::redis_url(&redis.url());
    contract(&redis_store(RedisSettings::new(redis.url()), &time), &time).await;
}

/// The contract again with the lookup cache on ([`broker::store::redis::cache`]): a refresh
/// interval of 1 ms of the manual clock, so a kept answer is served until the next time step, and
/// every write a case makes must reach the answers after it.
#[tokio::test]
async fn redis_store_with_the_lookup_cache_keeps_the_contract() {
    let redis = support::RedisServer::start();
    let time = TestTime::redis_url(&redis.url());
    let mut cached = lifetimes();
    cached.refresh = Duration::from_millis(1);
    let store = RedisStore::new(RedisSettings::new(redis.url()), cached)
        .expect("store")
        .with_clock(time.clock())
        .with_lookup_cache(true);
    contract(&store, &time).await;
    assert!(
        store.lookup_cache_hits().unwrap_or(0) > 0,
        "the contract's steady lookups were answered from the cache"
    );
}

#[tokio::test]
async fn redis_cluster_store_keeps_the_contract() {
    let cluster = support::cluster::RedisCluster::start();
    let time = TestTime::redis_ports(&cluster.ports);
    contract(
        &redis_store(RedisSettings::new(cluster.url()), &time),
        &time,
    )
    .await;
}

#[tokio::test]
async fn redis_over_tls_with_a_client_certificate_keeps_the_contract() {
    let redis = support::tls::TlsRedis::start();
    let mut settings = RedisSettings::new(redis.url());
    settings.tls = TlsFiles {
        ca: Some(redis.ca.clone()),
        client: Some((redis.client_cert.clone(), redis.client_key.clone())),
    };
    // Building the store installs the TLS provider that the test's own client (which ages Redis's
    // timers) uses too.
    let store = RedisStore::new(settings, lifetimes()).expect("store");
    let time = TestTime::redis(vec![redis.client()]);
    contract(&store.with_clock(time.clock()), &time).await;

    // Without the client certificate the server refuses; without the CA the client does.
    let mut no_cert = RedisSettings::new(redis.url());
    no_cert.tls.ca = Some(redis.ca.clone());
    let store = RedisStore::new(no_cert, lifetimes()).expect("store");
    assert!(store.ping().await.is_err(), "no client certificate");
    let mut no_ca = RedisSettings::new(redis.url());
    no_ca.tls.client = Some((redis.client_cert.clone(), redis.client_key.clone()));
    let store = RedisStore::new(no_ca, lifetimes()).expect("store");
    assert!(
        store.ping().await.is_err(),
        "a server certificate of an unknown CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_finalize_each_work_session_exactly_once() {
    let redis = support::RedisServer::start();
    let time = TestTime::redis_url(&redis.url());
    let replicas: Vec<Arc<RedisStore>> = (0..3)
        .map(|_| Arc::new(redis_store(RedisSettings::new(redis.url()), &time)))
        .collect();
    for n in 0..100u8 {
        let session = work(&principal(100 + n % 50), "claude-ai", &format!("p{n}"), 1);
        replicas[usize::from(n) % 3]
            .bind(&session, &Links::default())
            .await
            .expect("bind");
    }
    time.pass(idle_tenths(12)).await;
    let claims = replicas.iter().cloned().map(|store| {
        tokio::spawn(async move {
            let mut total = 0;
            for _ in 0..20 {
                total += store.claim_expired(7).await.expect("claim").finalized;
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
            .next_finalized("auditor", 50, &NEVER_AGAIN)
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
    let time = TestTime::redis_url(&redis.url());
    let store = redis_store(RedisSettings::new(redis.url()), &time);
    assert!(
        store
            .next_finalized("a", 1, &NEVER_AGAIN)
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
    let _ = store.next_finalized("a", 1, &NEVER_AGAIN).await;
    assert!(store.next_finalized("a", 1, &NEVER_AGAIN).await.is_ok());
    let session = work(&principal(30), "claude-ai", "after-flush", 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    time.pass(idle_tenths(12)).await;
    assert_eq!(store.claim_expired(10).await.expect("claim").finalized, 1);
    let events = store
        .next_finalized("a", 10, &NEVER_AGAIN)
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
