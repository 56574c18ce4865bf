//! Time for the stores under test, moved without sleeping: [`TestTime::pass`] advances the manual
//! clock the stores were given ([`broker::store::clock::Clock::Manual`]) and, for a Redis store, ages
//! what Redis times by its own real clock, on every master node:
//!
//! - every key's TTL (`PEXPIRE`, `SET ... PX`: links, parked rounds, a finalized work session's grace)
//!   is shortened by the same amount, and a key whose TTL runs out is deleted, as expiry would;
//! - every pending stream entry (an event handed out, not acknowledged) gets that much more idle
//!   time (`XCLAIM ... IDLE ... JUSTID` to its own consumer: the delivery count stays), which is
//!   what the redelivery backoff is judged by.
//!
//! The scripts themselves take the manual clock's reading as "now" (`store/lua/clock/given.lua`), so
//! after `pass(d)` Redis has, in every respect the store relies on, lived `d` longer. Real time still
//! runs beside it (a few milliseconds per case): tests keep their TTLs and steps far larger than that.

use std::sync::Arc;
use std::time::Duration;

use broker::store::clock::{Clock, ManualClock};
use redis::streams::{StreamInfoGroupsReply, StreamPendingCountReply};

/// A manual clock, and the Redis nodes to age with it (none for the memory store).
pub struct TestTime {
    clock: Clock,
    hand: Arc<ManualClock>,
    nodes: Vec<redis::Client>,
}

impl TestTime {
    /// Time for memory stores: the clock alone.
    pub fn memory() -> Self {
        Self::redis(Vec::new())
    }

    /// Time for Redis stores on these nodes (one server, or every node of a cluster: replicas are
    /// skipped, they follow their master).
    pub fn redis(nodes: Vec<redis::Client>) -> Self {
        let (clock, hand) = Clock::manual();
        Self { clock, hand, nodes }
    }

    /// Time for Redis stores on the server at `url` (`redis://`).
    pub fn redis_url(url: &str) -> Self {
        Self::redis(vec![redis::Client::open(url).expect("a Redis URL")])
    }

    /// Time for Redis stores on the cluster nodes on these loopback ports.
    pub fn redis_ports(ports: &[u16]) -> Self {
        let nodes = ports
            .iter()
            .map(|port| redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url"))
            .collect();
        Self::redis(nodes)
    }

    /// The clock to give the stores.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Now, by that clock (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.hand.now_ms()
    }

    /// Lets `by` pass for the stores: the clock, then Redis's own timers.
    pub async fn pass(&self, by: Duration) {
        self.hand.advance(by);
        let by_ms = u64::try_from(by.as_millis()).expect("a short step");
        for node in &self.nodes {
            age(node, by_ms).await;
        }
    }
}

/// Ages one node's data by `by_ms` (nothing on a replica).
async fn age(node: &redis::Client, by_ms: u64) {
    let mut connection = node
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis to age its data");
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut connection)
        .await
        .expect("ROLE");
    let master = role
        .first()
        .and_then(|r| redis::from_redis_value_ref::<String>(r).ok())
        .is_some_and(|r| r == "master");
    if !master {
        return;
    }
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .expect("SCAN");
        for key in keys {
            age_key(&mut connection, &key, by_ms).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

async fn age_key(connection: &mut redis::aio::MultiplexedConnection, key: &str, by_ms: u64) {
    let (ttl, kind): (i64, String) = redis::pipe()
        .cmd("PTTL")
        .arg(key)
        .cmd("TYPE")
        .arg(key)
        .query_async(connection)
        .await
        .expect("PTTL, TYPE");
    if ttl > 0 {
        let ttl = ttl.unsigned_abs();
        if ttl <= by_ms {
            let _: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(connection)
                .await
                .expect("DEL an expired key");
            return;
        }
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(ttl - by_ms)
            .query_async(connection)
            .await
            .expect("PEXPIRE");
    }
    if kind == "stream" {
        age_pending(connection, key, by_ms).await;
    }
}

/// Gives every pending entry of every group of the stream `by_ms` more idle time.
async fn age_pending(connection: &mut redis::aio::MultiplexedConnection, key: &str, by_ms: u64) {
    let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(connection)
        .await
        .expect("XINFO GROUPS");
    for group in groups.groups {
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(key)
            .arg(&group.name)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .query_async(connection)
            .await
            .expect("XPENDING");
        for entry in pending.ids {
            let idle = u64::try_from(entry.last_delivered_ms).unwrap_or(0) + by_ms;
            redis::cmd("XCLAIM")
                .arg(key)
                .arg(&group.name)
                .arg(&entry.consumer)
                .arg(0)
                .arg(&entry.id)
                .arg("IDLE")
                .arg(idle)
                .arg("JUSTID")
                .query_async::<redis::Value>(connection)
                .await
                .expect("XCLAIM IDLE JUSTID");
        }
    }
}
