//! Reading finalized events from a healthy Redis never fails and never blocks: every bucket's stream
//! is read without `BLOCK` (a blocking read would outlast the client's per-reply timeout, and on a
//! cluster it would stall the shared connection), and an empty read comes back empty, not as an error.

mod support;

use std::time::{Duration, Instant};

use broker::finalize::Redelivery;
use broker::store::Lifetimes;
use broker::store::Store;
use broker::store::redis::{RedisSettings, RedisStore};

#[tokio::test]
async fn reads_on_a_healthy_redis_come_back_empty_at_once() {
    let redis = support::RedisServer::start();
    let store = RedisStore::new(
        RedisSettings::new(redis.url()),
        Lifetimes::with_idle(Duration::from_secs(60)),
    )
    .expect("store");
    let policy = Redelivery {
        after: Duration::from_secs(30),
        attempts: 8,
    };
    for _ in 0..3 {
        let started = Instant::now();
        let events = store
            .next_finalized("reader", 16, &policy)
            .await
            .unwrap_or_else(|e| panic!("a read failed: {e}"));
        assert!(events.is_empty());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "it took {:?}",
            started.elapsed()
        );
    }
}
