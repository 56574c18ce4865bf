//! Dead letters in Redis: a finalized event whose actions failed every attempt moves, with the
//! reason, from its bucket's stream to the bucket's dead-letter stream (`dead.lua`, atomic with its
//! acknowledgement); operators list them and replay one (`replay.lua`: back into the stream as a new
//! event, delivered from its first attempt).

use super::RedisStore;
use super::finalize::{GROUP, STREAM_LENGTH, decode, event_id, fields, split_id};
use crate::finalize::DeadLetter;
use crate::store::StoreError;
use crate::store::keys::Bucket;

/// Moves a pending event to the dead letters with `reason` and the group's delivery count (one no
/// longer pending is only acknowledged: `dead.lua`).
pub(super) async fn bury(store: &RedisStore, id: &str, reason: &str) -> Result<(), StoreError> {
    let (bucket, id) = split_id(id)?;
    let prefix = &store.settings.prefix;
    let mut invocation = store.scripts.dead.prepare_invoke();
    invocation
        .key(bucket.finalized(prefix))
        .key(bucket.dead_letters(prefix))
        .arg(GROUP)
        .arg(id)
        .arg(reason)
        .arg(STREAM_LENGTH);
    store.eval::<i64>(invocation).await.map(|_| ())
}

pub(super) async fn list(store: &RedisStore, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut all = Vec::new();
    for bucket in Bucket::all() {
        let key = bucket.dead_letters(&store.settings.prefix);
        let reply: redis::streams::StreamRangeReply = store
            .run(|mut connection| async move {
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        for entry in &reply.ids {
            let fields = fields(entry);
            let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
            all.push(DeadLetter {
                id: event_id(bucket, &entry.id),
                event: decode(bucket, entry, 0)?.event,
                reason: fields.get("why").cloned().unwrap_or_default(),
                deliveries: number("dl"),
                dead_ms: number("at"),
            });
        }
    }
    all.sort_by_key(|d| std::cmp::Reverse(d.dead_ms));
    all.truncate(limit);
    Ok(all)
}

pub(super) async fn replay(store: &RedisStore, id: &str) -> Result<bool, StoreError> {
    let (bucket, id) = split_id(id)?;
    let prefix = &store.settings.prefix;
    let mut invocation = store.scripts.replay.prepare_invoke();
    invocation
        .key(bucket.dead_letters(prefix))
        .key(bucket.finalized(prefix))
        .arg(id)
        .arg(STREAM_LENGTH);
    let replayed: i64 = store.eval(invocation).await?;
    Ok(replayed == 1)
}
