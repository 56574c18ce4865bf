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
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoGroupsReply, StreamPendingCountReply};

/// A manual clock, and the Redis nodes to age with it (none for the memory store).
pub struct TestTime {
    clock: Clock,
    hand: Arc<ManualClock>,
    nodes: Vec<Node>,
}

/// A Redis node to age, and its connection once made (`None` inside: a replica, left alone).
struct Node {
    client: redis::Client,
    connection: tokio::sync::OnceCell<Option<MultiplexedConnection>>,
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
        let nodes = nodes
            .into_iter()
            .map(|client| Node {
                client,
                connection: tokio::sync::OnceCell::new(),
            })
            .collect();
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
            if let Some(connection) = node.connection.get_or_init(|| master(&node.client)).await {
                age(&mut connection.clone(), by_ms).await;
            }
        }
    }
}

/// A connection to the node, if it is a master.
async fn master(node: &redis::Client) -> Option<MultiplexedConnection> {
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
    master.then_some(connection)
}

/// Ages one master's data by `by_ms`, in a few pipelined round trips.
async fn age(connection: &mut MultiplexedConnection, by_ms: u64) {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if keys.is_empty() {
        return;
    }
    let mut ask = redis::pipe();
    for key in &keys {
        ask.cmd("PTTL").arg(key).cmd("TYPE").arg(key);
    }
    let answers: Vec<redis::Value> = ask.query_async(connection).await.expect("PTTL, TYPE");
    let (mut ttls, mut aged) = (redis::pipe(), 0);
    let mut streams = Vec::new();
    for (key, answer) in keys.iter().zip(answers.chunks(2)) {
        let ttl: i64 = redis::from_redis_value_ref(&answer[0]).expect("PTTL");
        let kind: String = redis::from_redis_value_ref(&answer[1]).expect("TYPE");
        let ttl = u64::try_from(ttl).unwrap_or(0);
        if ttl > 0 && ttl <= by_ms {
            ttls.cmd("DEL").arg(key).ignore();
            aged += 1;
            continue;
        }
        if ttl > 0 {
            ttls.cmd("PEXPIRE").arg(key).arg(ttl - by_ms).ignore();
            aged += 1;
        }
        if kind == "stream" {
            streams.push(key);
        }
    }
    if aged > 0 {
        ttls.query_async::<()>(connection)
            .await
            .expect("age the TTLs");
    }
    age_pending(connection, &streams, by_ms).await;
}

/// Gives every pending entry of every group of these streams `by_ms` more idle time.
async fn age_pending(connection: &mut MultiplexedConnection, streams: &[&String], by_ms: u64) {
    if streams.is_empty() {
        return;
    }
    let mut ask = redis::pipe();
    for stream in streams {
        ask.cmd("XINFO").arg("GROUPS").arg(*stream);
    }
    let infos: Vec<StreamInfoGroupsReply> =
        ask.query_async(connection).await.expect("XINFO GROUPS");
    let groups: Vec<(&String, String)> = streams
        .iter()
        .zip(infos)
        .flat_map(|(stream, info)| info.groups.into_iter().map(move |g| (*stream, g.name)))
        .collect();
    if groups.is_empty() {
        return;
    }
    let mut ask = redis::pipe();
    for (stream, group) in &groups {
        ask.cmd("XPENDING")
            .arg(*stream)
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(100_000);
    }
    let pending: Vec<StreamPendingCountReply> =
        ask.query_async(connection).await.expect("XPENDING");
    let (mut claims, mut claimed) = (redis::pipe(), 0);
    for ((stream, group), pending) in groups.iter().zip(pending) {
        for entry in pending.ids {
            claimed += 1;
            let idle = u64::try_from(entry.last_delivered_ms).unwrap_or(0) + by_ms;
            claims
                .cmd("XCLAIM")
                .arg(*stream)
                .arg(group)
                .arg(&entry.consumer)
                .arg(0)
                .arg(&entry.id)
                .arg("IDLE")
                .arg(idle)
                .arg("JUSTID")
                .ignore();
        }
    }
    if claimed > 0 {
        claims
            .query_async::<()>(connection)
            .await
            .expect("XCLAIM IDLE JUSTID");
    }
}
