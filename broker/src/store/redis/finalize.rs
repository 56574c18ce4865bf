//! Finalization in Redis: the atomic claim (`claim.lua`), and delivery of the `finalized` stream
//! through the consumer group `finalizers`, so an event a replica took and never acknowledged (it
//! died mid-delivery) is handed to another replica after `stale`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::RedisStore;
use crate::finalize::{Delivery, Finalized};
use crate::ids::{PrincipalId, Project, Surface, WorkSessionId};
use crate::store::{StoreError, keys};

const GROUP: &str = "finalizers";
/// Approximate number of stream entries kept (acknowledged ones are history).
const STREAM_LENGTH: usize = 100_000;

pub(super) async fn claim_expired(store: &RedisStore, limit: usize) -> Result<usize, StoreError> {
    let prefix = &store.settings.prefix;
    let mut invocation = store.claim.prepare_invoke();
    invocation
        .key(keys::deadlines(prefix))
        .key(keys::finalized_stream(prefix))
        .arg(limit)
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(prefix)
        .arg(STREAM_LENGTH);
    let claimed: i64 = store
        .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
        .await?;
    Ok(usize::try_from(claimed).unwrap_or(0))
}

async fn ensure_group(store: &RedisStore) -> Result<(), StoreError> {
    if store.group_ready.load(Ordering::Relaxed) {
        return Ok(());
    }
    let stream = keys::finalized_stream(&store.settings.prefix);
    store
        .run(|mut connection| async move {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut connection)
                .await;
            match created {
                Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await?;
    store.group_ready.store(true, Ordering::Relaxed);
    Ok(())
}

pub(super) async fn next_finalized(
    store: &RedisStore,
    consumer: &str,
    count: usize,
    wait: Duration,
    stale: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    ensure_group(store).await?;
    let result = read(store, consumer, count, wait, stale).await;
    if let Err(StoreError::Unavailable(message)) = &result
        && message.contains("NOGROUP")
    {
        // Redis lost the group (restarted empty): create it again on the next call.
        store.group_ready.store(false, Ordering::Relaxed);
    }
    result
}

async fn read(
    store: &RedisStore,
    consumer: &str,
    count: usize,
    wait: Duration,
    stale: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    let stream = keys::finalized_stream(&store.settings.prefix);
    let (reclaim_stream, reclaimer) = (stream.clone(), consumer.to_owned());
    let reclaimed: StreamAutoClaimReply = store
        .run(|mut connection| async move {
            redis::cmd("XAUTOCLAIM")
                .arg(reclaim_stream)
                .arg(GROUP)
                .arg(reclaimer)
                .arg(RedisStore::ms(stale))
                .arg("0-0")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut connection)
                .await
        })
        .await?;
    if !reclaimed.claimed.is_empty() {
        return reclaimed
            .claimed
            .iter()
            .map(|entry| decode(entry, 1))
            .collect();
    }
    let reader = consumer.to_owned();
    let deadline = wait + store.settings.timeout;
    let reply: Option<StreamReadReply> = store
        .run_within(deadline, |connection| async move {
            // The pooled connection gives up on a reply after the client's response timeout (500 ms by
            // default), which a read blocking `wait` outlasts on a healthy Redis: this one read gets
            // its own handle on the connection, with the same deadline as the whole operation.
            let mut blocking = MultiplexedConnection::clone(&connection);
            blocking.set_response_timeout(deadline);
            let reply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(reader)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(RedisStore::ms(wait))
                .arg("STREAMS")
                .arg(stream)
                .arg(">")
                .query_async(&mut blocking)
                .await;
            drop(connection); // back to the pool only once the blocking read is over
            reply
        })
        .await?;
    let Some(reply) = reply else {
        return Ok(Vec::new());
    };
    reply
        .keys
        .iter()
        .flat_map(|key| key.ids.iter())
        .map(|entry| decode(entry, 0))
        .collect()
}

pub(super) async fn ack(store: &RedisStore, id: &str) -> Result<(), StoreError> {
    let stream = keys::finalized_stream(&store.settings.prefix);
    let id = id.to_owned();
    store
        .run(|mut connection| async move {
            redis::cmd("XACK")
                .arg(stream)
                .arg(GROUP)
                .arg(id)
                .query_async::<i64>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
}

fn decode(entry: &StreamId, redeliveries: u64) -> Result<Delivery, StoreError> {
    let fields: HashMap<&str, String> = entry
        .map
        .iter()
        .filter_map(|(k, v)| text(v).map(|t| (k.as_str(), t)))
        .collect();
    let get = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("finalized event without {name}")))
    };
    let number = |name: &str| -> Result<u64, StoreError> {
        get(name)?.parse().map_err(|_| {
            StoreError::Corrupt(format!("finalized event field {name} is not a number"))
        })
    };
    let corrupt = |e: crate::ids::IdError| StoreError::Corrupt(e.to_string());
    Ok(Delivery {
        id: entry.id.clone(),
        redeliveries,
        event: Finalized {
            work_session: WorkSessionId::parse(get("ws")?).map_err(corrupt)?,
            principal: PrincipalId::parse(get("p")?).map_err(corrupt)?,
            surface: Surface::parse(get("sf")?).map_err(corrupt)?,
            project: Project::parse(get("pj")?).map_err(corrupt)?,
            started_ms: number("cr")?,
            last_active_ms: number("la")?,
            finalized_ms: number("fz")?,
            calls: number("n")?,
        },
    })
}

fn text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(value).ok()
}
