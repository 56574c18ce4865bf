//! Finalization in Redis, bucket by bucket (every bucket is one slot: [`crate::store::keys`]):
//! - the sweep: `due.lua` names a bucket's due work sessions, `claim.lua` finalizes them and appends
//!   their events to the bucket's stream, atomically, so each is finalized exactly once;
//! - delivery through each bucket's consumer group `finalizers`: new events, and events left
//!   unacknowledged (a failed action, a replica that died) once their backoff has passed, until the
//!   attempts are spent: then `dead.lua` moves the event to the bucket's dead letters.
//!
//! No command blocks (a cluster connection is shared by every request); the deliverer polls.

use std::collections::HashMap;

use redis::Value;
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};

use super::RedisStore;
use crate::finalize::{Delivery, Finalized, Redelivery};
use crate::ids::{PrincipalId, Project, Surface, WorkSessionId};
use crate::store::keys::{Bucket, Keys};
use crate::store::{Claimed, StoreError};

pub(super) const GROUP: &str = "finalizers";
/// Approximate number of entries kept per bucket stream (acknowledged ones are history).
pub(super) const STREAM_LENGTH: usize = 10_000;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// `<bucket>:<stream id>`: the id a consumer acknowledges, or an operator replays.
pub(super) fn event_id(bucket: Bucket, id: &str) -> String {
    format!("{}:{id}", bucket.name())
}

pub(super) fn split_id(id: &str) -> Result<(Bucket, String), StoreError> {
    id.split_once(':')
        .and_then(|(bucket, id)| Some((Bucket::parse(bucket)?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '-'))
        .ok_or_else(|| StoreError::Corrupt(format!("`{id}` is not an event id")))
}

pub(super) async fn claim_expired(store: &RedisStore, limit: usize) -> Result<Claimed, StoreError> {
    let mut total = Claimed::default();
    for bucket in Bucket::all() {
        if total.finalized >= limit {
            break;
        }
        let claimed = claim_bucket(store, bucket, limit - total.finalized).await?;
        total.finalized += claimed.finalized;
        total.dropped += claimed.dropped;
    }
    Ok(total)
}

async fn claim_bucket(
    store: &RedisStore,
    bucket: Bucket,
    limit: usize,
) -> Result<Claimed, StoreError> {
    let prefix = &store.settings.prefix;
    let deadlines = bucket.deadlines(prefix);
    let mut due = store.scripts.due.prepare_invoke();
    due.key(&deadlines).arg(limit);
    let members: Vec<String> = store.eval(due).await?;
    if members.is_empty() {
        return Ok(Claimed::default());
    }
    let mut claim = store.scripts.claim.prepare_invoke();
    claim
        .key(&deadlines)
        .key(bucket.finalized(prefix))
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(RedisStore::ms(store.lifetimes.grace))
        .arg(STREAM_LENGTH)
        .arg(RedisStore::ms(store.lifetimes.refresh));
    for member in &members {
        // A member that names no work session still gets a key of this bucket, so the script
        // removes it; claim.lua parses the member again and drops what does not match.
        let key = member
            .split_once(':')
            .and_then(|(p, ws)| {
                let principal = PrincipalId::parse(p).ok()?;
                let id = WorkSessionId::parse(ws).ok()?;
                let keys = Keys::new(prefix, &principal);
                (keys.bucket() == bucket).then(|| keys.work_session(&id))
            })
            .unwrap_or_else(|| format!("{deadlines}:malformed"));
        claim.key(key);
    }
    for member in &members {
        claim.arg(member);
    }
    let (finalized, dropped): (usize, usize) = store.eval(claim).await?;
    Ok(Claimed { finalized, dropped })
}

/// Creates the bucket's consumer group (and stream) once per process; again after Redis lost it.
async fn ensure_group(store: &RedisStore, bucket: Bucket) -> Result<(), StoreError> {
    let ready = store
        .groups
        .lock()
        .map(|groups| groups.contains(&bucket))
        .unwrap_or(false);
    if ready {
        return Ok(());
    }
    let stream = bucket.finalized(&store.settings.prefix);
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
    if let Ok(mut groups) = store.groups.lock() {
        groups.insert(bucket);
    }
    Ok(())
}

/// Whether `error` says Redis lost the bucket's group (it restarted empty): then it is forgotten,
/// to be created again.
fn forget_group_if_lost(store: &RedisStore, bucket: Bucket, error: &StoreError) -> bool {
    let lost = matches!(error, StoreError::Unavailable(message) if message.contains("NOGROUP"));
    if lost && let Ok(mut groups) = store.groups.lock() {
        groups.remove(&bucket);
    }
    lost
}

pub(super) async fn next_finalized(
    store: &RedisStore,
    consumer: &str,
    count: usize,
    policy: &Redelivery,
) -> Result<Vec<Delivery>, StoreError> {
    let mut out = Vec::new();
    for bucket in Bucket::all() {
        if out.len() >= count {
            break;
        }
        ensure_group(store, bucket).await?;
        let wanted = count - out.len();
        let result = match read_bucket(store, bucket, consumer, wanted, policy).await {
            Err(error) if forget_group_if_lost(store, bucket, &error) => {
                ensure_group(store, bucket).await?;
                read_bucket(store, bucket, consumer, wanted, policy).await
            }
            other => other,
        };
        out.extend(result?);
    }
    Ok(out)
}

async fn read_bucket(
    store: &RedisStore,
    bucket: Bucket,
    consumer: &str,
    count: usize,
    policy: &Redelivery,
) -> Result<Vec<Delivery>, StoreError> {
    let stream = bucket.finalized(&store.settings.prefix);
    let mut out = reclaim(store, bucket, consumer, count, policy).await?;
    if out.len() >= count {
        return Ok(out);
    }
    let (reader, wanted) = (consumer.to_owned(), count - out.len());
    let reply: Option<StreamReadReply> = store
        .run(|mut connection| async move {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(reader)
                .arg("COUNT")
                .arg(wanted)
                .arg("STREAMS")
                .arg(stream)
                .arg(">")
                .query_async(&mut connection)
                .await
        })
        .await?;
    if let Some(reply) = reply {
        for entry in reply.keys.iter().flat_map(|key| key.ids.iter()) {
            out.push(decode(bucket, entry, 0)?);
        }
    }
    Ok(out)
}

/// Events taken but not acknowledged whose backoff has passed: claimed for `consumer` (only one
/// claimer wins an event: `XCLAIM` with the minimum idle time), or dead-lettered when every
/// attempt is spent. The backoff is judged by the pending entry's idle time, which Redis keeps by
/// its real clock whatever the store's [`crate::store::clock::Clock`] (tests age it instead).
async fn reclaim(
    store: &RedisStore,
    bucket: Bucket,
    consumer: &str,
    count: usize,
    policy: &Redelivery,
) -> Result<Vec<Delivery>, StoreError> {
    let stream = bucket.finalized(&store.settings.prefix);
    let min_idle = RedisStore::ms(policy.after);
    let pending_stream = stream.clone();
    let pending: StreamPendingCountReply = store
        .run(|mut connection| async move {
            redis::cmd("XPENDING")
                .arg(pending_stream)
                .arg(GROUP)
                .arg("IDLE")
                .arg(min_idle)
                .arg("-")
                .arg("+")
                .arg(count)
                .query_async(&mut connection)
                .await
        })
        .await?;
    let mut out = Vec::new();
    for entry in pending.ids {
        let deliveries = u64::try_from(entry.times_delivered).unwrap_or(u64::MAX);
        let wait = RedisStore::ms(policy.backoff(deliveries));
        if u64::try_from(entry.last_delivered_ms).unwrap_or(0) < wait {
            continue;
        }
        if deliveries >= u64::from(policy.attempts) {
            let why = format!("not acknowledged after {deliveries} deliveries");
            super::dead::bury(store, &event_id(bucket, &entry.id), &why).await?;
            continue;
        }
        let (claim_stream, claimer, id) = (stream.clone(), consumer.to_owned(), entry.id.clone());
        let claimed: StreamClaimReply = store
            .run(|mut connection| async move {
                redis::cmd("XCLAIM")
                    .arg(claim_stream)
                    .arg(GROUP)
                    .arg(claimer)
                    .arg(wait)
                    .arg(id)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        for claimed in &claimed.ids {
            out.push(decode(bucket, claimed, deliveries)?);
        }
    }
    Ok(out)
}

pub(super) async fn ack(store: &RedisStore, id: &str) -> Result<(), StoreError> {
    let (bucket, id) = split_id(id)?;
    let stream = bucket.finalized(&store.settings.prefix);
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

pub(super) async fn live_work_sessions(store: &RedisStore) -> Result<u64, StoreError> {
    // A deadline is the last activity plus the idle TTL plus the refresh interval
    // (Lifetimes::refresh): live while the first two are past now.
    let now = store.now_ms() + RedisStore::ms(store.lifetimes.refresh);
    let mut live = 0;
    for bucket in Bucket::all() {
        let key = bucket.deadlines(&store.settings.prefix);
        let count: u64 = store
            .run(|mut connection| async move {
                redis::cmd("ZCOUNT")
                    .arg(key)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        live += count;
    }
    Ok(live)
}

pub(super) fn fields(entry: &StreamId) -> HashMap<&str, String> {
    entry
        .map
        .iter()
        .filter_map(|(k, v)| text(v).map(|t| (k.as_str(), t)))
        .collect()
}

pub(super) fn decode(
    bucket: Bucket,
    entry: &StreamId,
    redeliveries: u64,
) -> Result<Delivery, StoreError> {
    let fields = fields(entry);
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
    Ok(Delivery {
        id: event_id(bucket, &entry.id),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_carry_their_bucket() {
        let bucket = Bucket::parse("a").expect("bucket");
        let id = event_id(bucket, "1764000000000-0");
        assert_eq!(id, "a:1764000000000-0");
        assert_eq!(
            split_id(&id).expect("ok"),
            (bucket, "1764000000000-0".into())
        );
        for bad in ["1764000000000-0", "z:1-0", "a:", "a:1-0 x", "a:*"] {
            assert!(split_id(bad).is_err(), "{bad}");
        }
    }
}
