//! Reading finalized events from a healthy Redis never fails: the blocking stream read waits longer
//! than the Redis client's per-reply timeout (500 ms), and must still come back empty, not as an error.

mod support;

use std::time::{Duration, Instant};

use broker::store::Lifetimes;
use broker::store::Store;
use broker::store::redis::{RedisSettings, RedisStore};

#[tokio::test]
async fn blocking_reads_on_a_healthy_redis_come_back_empty() {
    let redis = support::RedisServer::start();
    let store = RedisStore::new(
        RedisSettings::new(redis.url()),
        Lifetimes::with_idle(Duration::from_secs(60)),
    )
    .expect("store");
    for wait in [500, 700, 1200] {
        let wait = Duration::from_millis(wait);
        let started = Instant::now();
        let events = store
            .next_finalized("reader", 16, wait, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("a read blocking {wait:?} failed: {e}"));
        assert!(events.is_empty());
        assert!(
            started.elapsed() >= wait,
            "it blocked for {:?}",
            started.elapsed()
        );
    }
}
