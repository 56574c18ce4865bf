//! The lookup in Redis, in at most two steps, every key declared: `lookup.lua` reads the links, the
//! surface index and the handle's work session; `sessions.lua` then reads the work sessions the
//! links and the surface name (skipped when there are none besides the handle's). Neither writes.

use std::collections::HashMap;

use redis::Value;

use super::RedisStore;
use crate::ids::{BackendSessionId, Project, WorkSessionId};
use crate::resolve::Found;
use crate::session::WorkSession;
use crate::store::keys::Keys;
use crate::store::{Answer, McpState, Query, StoreError, hash};

/// How many live work sessions of one surface a lookup reports.
const SURFACE_LIMIT: usize = 20;
/// How many surface entries active within the idle TTL are read (finalized ones are skipped).
const SURFACE_CANDIDATES: usize = 50;
/// How many recent projects a lookup reports.
const RECENT_LIMIT: usize = 10;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn optional_session(value: &Value) -> Result<Option<WorkSession>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        other => {
            let flat: Vec<String> = redis::from_redis_value_ref(other).map_err(corrupt)?;
            hash::from_flat(flat).map(Some)
        }
    }
}

fn optional_string(value: &Value) -> Result<Option<String>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        other => redis::from_redis_value_ref(other)
            .map(Some)
            .map_err(corrupt),
    }
}

fn optional_id(value: &Value) -> Result<Option<WorkSessionId>, StoreError> {
    Ok(optional_string(value)?.and_then(|s| WorkSessionId::parse(s).ok()))
}

/// What the first step found.
struct First {
    ended: bool,
    handle: Option<WorkSession>,
    linked: Option<WorkSessionId>,
    conversation: Option<WorkSessionId>,
    surface: Vec<WorkSessionId>,
    recent: Vec<Project>,
    backend_override: Option<BackendSessionId>,
    active: u64,
}

fn decode_first(reply: Value) -> Result<First, StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::Corrupt("lookup did not return an array".into()));
    };
    let [
        ended,
        handle,
        linked,
        conversation,
        surface,
        recent,
        override_,
        active,
    ] = <[Value; 8]>::try_from(items)
        .map_err(|_| StoreError::Corrupt("lookup returned a wrong arity".into()))?;
    let ended: i64 = redis::from_redis_value_ref(&ended).map_err(corrupt)?;
    let surface: Vec<String> = redis::from_redis_value_ref(&surface).unwrap_or_default();
    let recent: Vec<String> = redis::from_redis_value_ref(&recent).unwrap_or_default();
    Ok(First {
        ended: ended == 1,
        handle: optional_session(&handle)?,
        linked: optional_id(&linked)?,
        conversation: optional_id(&conversation)?,
        surface: surface
            .into_iter()
            .filter_map(|id| WorkSessionId::parse(id).ok())
            .collect(),
        recent: recent
            .into_iter()
            .filter_map(|p| Project::parse(p).ok())
            .collect(),
        backend_override: optional_string(&override_)?
            .and_then(|s| BackendSessionId::parse(s).ok()),
        active: redis::from_redis_value_ref::<u64>(&active).unwrap_or(0),
    })
}

pub(super) async fn lookup(store: &RedisStore, query: &Query) -> Result<Answer, StoreError> {
    let keys = store.keys(&query.principal);
    let unused = keys.unused();
    let mcp = query.mcp.as_ref();
    let mut invocation = store.scripts.lookup.prepare_invoke();
    invocation
        .key(
            mcp.map(|m| keys.mcp_ended(&m.session))
                .unwrap_or_else(|| unused.clone()),
        )
        .key(
            mcp.map(|m| keys.mcp_link(&m.session))
                .unwrap_or_else(|| unused.clone()),
        )
        .key(
            query
                .conversation
                .as_ref()
                .map(|c| keys.conversation(c))
                .unwrap_or_else(|| unused.clone()),
        )
        .key(keys.surface(&query.surface))
        .key(keys.recent())
        .key(
            mcp.map(|m| keys.backend_session(&m.session, &m.upstream))
                .unwrap_or_else(|| unused.clone()),
        )
        .key(keys.index())
        .key(
            query
                .handle
                .as_ref()
                .map(|id| keys.work_session(id))
                .unwrap_or_else(|| unused.clone()),
        )
        .arg(SURFACE_CANDIDATES)
        .arg(RECENT_LIMIT)
        .arg(if mcp.is_some() { "1" } else { "0" })
        .arg(RedisStore::ms(store.lifetimes.idle));
    let reply: Value = store
        .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
        .await?;
    let first = decode_first(reply)?;
    let sessions = read_sessions(store, &keys, &first).await?;
    let get = |id: &Option<WorkSessionId>| id.as_ref().and_then(|id| sessions.get(id)).cloned();
    Ok(Answer {
        found: Found {
            linked: get(&first.linked),
            conversation: get(&first.conversation),
            surface_live: first
                .surface
                .iter()
                .filter_map(|id| sessions.get(id).cloned())
                .take(SURFACE_LIMIT)
                .collect(),
            handle: first.handle,
            recent_projects: first.recent,
        },
        mcp: McpState {
            ended: first.ended,
            backend_override: first.backend_override,
        },
        live_count: first.active,
    })
}

/// The live work sessions the first step named, by id (the handle's included, without reading it
/// again).
async fn read_sessions(
    store: &RedisStore,
    keys: &Keys,
    first: &First,
) -> Result<HashMap<WorkSessionId, WorkSession>, StoreError> {
    let mut found = HashMap::new();
    if let Some(handle) = &first.handle {
        found.insert(handle.id.clone(), handle.clone());
    }
    let mut wanted: Vec<WorkSessionId> = Vec::new();
    let named = first
        .linked
        .iter()
        .chain(&first.conversation)
        .chain(&first.surface);
    for id in named {
        if !found.contains_key(id) && !wanted.contains(id) {
            wanted.push(id.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(found);
    }
    let mut invocation = store.scripts.sessions.prepare_invoke();
    for id in &wanted {
        invocation.key(keys.work_session(id));
    }
    invocation.arg(RedisStore::ms(store.lifetimes.idle));
    let reply: Vec<Value> = store
        .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
        .await?;
    for value in &reply {
        if let Some(session) = optional_session(value)? {
            found.insert(session.id.clone(), session);
        }
    }
    Ok(found)
}
