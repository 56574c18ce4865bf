//! Operator views and actions in Redis (a principal's work sessions from its index, one work session,
//! rebind and end-now through `admin.lua`, atomic and refused on a work session that is not live),
//! and the small per-MCP-session records (ended sessions, replacement backend sessions).

use super::RedisStore;
use crate::ids::{McpSessionId, PrincipalId, WorkSessionId};
use crate::store::{AdminAction, BackendRef, McpQuery, McpState, Status, StoreError, hash, keys};

/// How many work sessions a listing shows at most.
const LIST_LIMIT: isize = 200;

/// Whether the MCP session ended and its replacement backend session: two reads pipelined in one
/// round trip (both keys in the principal's slot), no script.
pub(super) async fn mcp_state(
    store: &RedisStore,
    principal: &PrincipalId,
    mcp: &McpQuery,
) -> Result<McpState, StoreError> {
    let keys = store.keys(principal);
    let mut pipe = redis::pipe();
    pipe.exists(keys.mcp_ended(&mcp.session))
        .get(keys.backend_session(&mcp.session, &mcp.upstream));
    let (ended, backend): (bool, Option<String>) = store
        .run(|mut connection| async move { pipe.query_async(&mut connection).await })
        .await?;
    Ok(McpState {
        ended,
        backend_override: backend.and_then(|s| crate::ids::BackendSessionId::parse(s).ok()),
    })
}

pub(super) async fn set_backend_session(
    store: &RedisStore,
    principal: &PrincipalId,
    session: &McpSessionId,
    backend: &BackendRef,
) -> Result<(), StoreError> {
    let key = store
        .keys(principal)
        .backend_session(session, &backend.upstream);
    let value = backend.session.to_string();
    set_px(store, key, value, store.lifetimes.idle).await?;
    announce(store, principal).await
}

/// What `announce` in `lua/prelude.lua` does, for a write made without a script: tells every
/// replica's lookup cache (this one's at once) that the principal's settled lookups may have
/// changed. Sent after the write, so a replica that re-reads sees it.
async fn announce(store: &RedisStore, principal: &PrincipalId) -> Result<(), StoreError> {
    store.forget(principal);
    let channel = super::feed::channel(&store.settings.prefix);
    store.publish(principal, &channel, principal.as_str()).await
}

/// `SET key value PX ttl`.
async fn set_px(
    store: &RedisStore,
    key: String,
    value: String,
    ttl: std::time::Duration,
) -> Result<(), StoreError> {
    let ttl = RedisStore::ms(ttl);
    store
        .run(|mut connection| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
}

/// `SET key value PX ttl` for a parked call's next round.
pub(super) async fn put_parked(
    store: &RedisStore,
    principal: &PrincipalId,
    key: &str,
    value: &str,
    ttl: std::time::Duration,
) -> Result<(), StoreError> {
    let key = store.keys(principal).parked(key);
    set_px(store, key, value.to_owned(), ttl).await
}

/// `GETDEL`: what a parked call left, taken once.
pub(super) async fn take_parked(
    store: &RedisStore,
    principal: &PrincipalId,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let key = store.keys(principal).parked(key);
    store
        .run(|mut connection| async move {
            redis::cmd("GETDEL")
                .arg(key)
                .query_async::<Option<String>>(&mut connection)
                .await
        })
        .await
}

/// Marks the MCP session ended first, then drops its link: a reader in between sees it ended.
pub(super) async fn end_mcp_session(
    store: &RedisStore,
    principal: &PrincipalId,
    session: &McpSessionId,
) -> Result<(), StoreError> {
    let keys = store.keys(principal);
    let ttl = RedisStore::ms(store.lifetimes.ended_mcp_session);
    let (ended, link) = (keys.mcp_ended(session), keys.mcp_link(session));
    store
        .run(|mut connection| async move {
            redis::cmd("SET")
                .arg(ended)
                .arg("1")
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut connection)
                .await?;
            redis::cmd("DEL")
                .arg(link)
                .query_async::<()>(&mut connection)
                .await
        })
        .await?;
    announce(store, principal).await?;
    store.seen_everywhere(principal).await;
    Ok(())
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
    let mut all = Vec::new();
    for id in ids {
        let Ok(id) = WorkSessionId::parse(id) else {
            continue;
        };
        if let Some(status) = one(store, principal, &id).await? {
            all.push(status);
        }
    }
    Ok(all)
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
    hash::status_from_flat(flat, RedisStore::ms(store.lifetimes.idle), store.now_ms()).map(Some)
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
    let mut invocation = store.scripts.admin.prepare_invoke();
    invocation
        .key(keys.work_session(id))
        .key(keys.deadlines())
        .key(keys.recent())
        .key(keys.index())
        .arg(name)
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(keys::deadline_member(principal, id))
        .arg(project)
        .arg(id.to_string());
    let done: i64 = store.eval(invocation).await?;
    if done == 1 {
        store.forget(principal);
        store.seen_everywhere(principal).await;
    }
    Ok(done == 1)
}
