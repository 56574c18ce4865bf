//! Operator views and actions in Redis: a principal's work sessions from its index, one work session,
//! rebind and end-now (`admin.lua`, atomic and refused on a work session that is not live).

use super::RedisStore;
use crate::ids::{PrincipalId, WorkSessionId};
use crate::store::{AdminAction, Status, StoreError, hash, keys};

/// How many work sessions a listing shows at most.
const LIST_LIMIT: isize = 200;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(super) async fn list(
    store: &RedisStore,
    principal: &PrincipalId,
) -> Result<Vec<Status>, StoreError> {
    let keys = store.keys(principal);
    let index = keys.index();
    let ids: Vec<String> = store
        .run(|mut connection| async move {
            redis::cmd("ZREVRANGE")
                .arg(index)
                .arg(0)
                .arg(LIST_LIMIT - 1)
                .query_async(&mut connection)
                .await
        })
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGETALL")
            .arg(format!("{}{id}", keys.work_session_prefix()));
    }
    let hashes: Vec<Vec<String>> = store
        .run(|mut connection| async move { pipe.query_async(&mut connection).await })
        .await?;
    let idle = RedisStore::ms(store.lifetimes.idle);
    let now = now_ms();
    hashes
        .into_iter()
        .filter(|flat| !flat.is_empty())
        .map(|flat| hash::status_from_flat(flat, idle, now))
        .collect()
}

pub(super) async fn one(
    store: &RedisStore,
    principal: &PrincipalId,
    id: &WorkSessionId,
) -> Result<Option<Status>, StoreError> {
    let key = store.keys(principal).work_session(id);
    let flat: Vec<String> = store
        .run(|mut connection| async move {
            redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut connection)
                .await
        })
        .await?;
    if flat.is_empty() {
        return Ok(None);
    }
    hash::status_from_flat(flat, RedisStore::ms(store.lifetimes.idle), now_ms()).map(Some)
}

pub(super) async fn act(
    store: &RedisStore,
    principal: &PrincipalId,
    id: &WorkSessionId,
    action: &AdminAction,
) -> Result<bool, StoreError> {
    let keys = store.keys(principal);
    let (name, project) = match action {
        AdminAction::Rebind(project) => ("rebind", project.to_string()),
        AdminAction::End => ("end", String::new()),
    };
    let mut invocation = store.admin.prepare_invoke();
    invocation
        .key(keys.work_session(id))
        .key(keys::deadlines(&store.settings.prefix))
        .key(keys.recent())
        .arg(name)
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(keys::deadline_member(principal, id))
        .arg(project);
    let done: i64 = store
        .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
        .await?;
    Ok(done == 1)
}
