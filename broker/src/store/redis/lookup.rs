//! The lookup in Redis, in at most two steps, every key declared: `lookup.lua` reads the links, the
//! surface index, the handle's work session and the hinted one ([`super::hints`]); `sessions.lua`
//! then reads the work sessions the links and the surface name that the first step did not (skipped
//! when there are none: a steady call whose link still names the hinted work session takes one
//! round trip). Only `lookup.lua` writes, and only to record a call it settled
//! ([`crate::store::Query::record_when_settled`]), as `touch.lua` would right after.

use std::collections::{HashMap, HashSet};

use redis::Value;

use super::{RedisStore, flag};
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
    /// The hinted work session, when the first step read it: `Some(None)` if it is not live.
    hinted: Option<(WorkSessionId, Option<WorkSession>)>,
    /// The call was recorded in the work session it settled on.
    recorded: bool,
}

fn decode_first(reply: Value, hint: Option<&WorkSessionId>) -> Result<First, StoreError> {
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
        hinted,
        hint_read,
        recorded,
    ] = <[Value; 11]>::try_from(items)
        .map_err(|_| StoreError::Corrupt("lookup returned a wrong arity".into()))?;
    let ended: i64 = redis::from_redis_value_ref(&ended).map_err(corrupt)?;
    let surface: Vec<String> = redis::from_redis_value_ref(&surface).unwrap_or_default();
    let recent: Vec<String> = redis::from_redis_value_ref(&recent).unwrap_or_default();
    let hint_read: i64 = redis::from_redis_value_ref(&hint_read).map_err(corrupt)?;
    let hinted = match hint {
        Some(id) if hint_read == 1 => Some((id.clone(), optional_session(&hinted)?)),
        _ => None,
    };
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
        hinted,
        recorded: redis::from_redis_value_ref::<i64>(&recorded).map_err(corrupt)? == 1,
    })
}

pub(super) async fn lookup(store: &RedisStore, query: &Query) -> Result<Answer, StoreError> {
    let keys = store.keys(&query.principal);
    let unused = keys.unused();
    let mcp = query.mcp.as_ref();
    let link = mcp.map(|m| keys.mcp_link(&m.session));
    let conversation = query.conversation.as_ref().map(|c| keys.conversation(c));
    let surface = keys.surface(&query.surface);
    // The pointer that decides a call (the conversation key when sent, else the link), else the
    // surface: what it named last time is most likely what the first step will find.
    let hint = conversation
        .as_deref()
        .or(link.as_deref())
        .and_then(|pointer| store.hints.get(pointer))
        .or_else(|| store.hints.get(&surface));
    let mut invocation = store.scripts.lookup.prepare_invoke();
    invocation
        .key(
            mcp.map(|m| keys.mcp_ended(&m.session))
                .unwrap_or_else(|| unused.clone()),
        )
        .key(link.clone().unwrap_or_else(|| unused.clone()))
        .key(conversation.clone().unwrap_or_else(|| unused.clone()))
        .key(&surface)
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
        .key(
            hint.as_ref()
                .map(|id| keys.work_session(id))
                .unwrap_or_else(|| unused.clone()),
        )
        .key(keys.deadlines())
        .arg(SURFACE_CANDIDATES)
        .arg(RECENT_LIMIT)
        .arg(flag(mcp.is_some()))
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(hint.as_ref().map(|id| id.as_str()).unwrap_or(""))
        .arg(flag(query.settle_early))
        .arg(flag(query.handle.is_some()))
        .arg(flag(query.conversation.is_some()))
        .arg(flag(query.record_when_settled))
        .arg(store.keep_ms())
        .arg(query.principal.as_str())
        .arg(query.surface.as_str())
        .arg(RedisStore::ms(store.lifetimes.refresh));
    let reply: Value = store.eval(invocation).await?;
    let first = decode_first(reply, hint.as_ref())?;
    remember(
        store,
        &first,
        link.as_deref(),
        conversation.as_deref(),
        &surface,
    );
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
        recorded: first.recorded,
    })
}

/// Remembers what the pointers named, as hints for the next lookup.
fn remember(
    store: &RedisStore,
    first: &First,
    link: Option<&str>,
    conversation: Option<&str>,
    surface: &str,
) {
    let pairs = [
        (link, first.linked.as_ref()),
        (conversation, first.conversation.as_ref()),
        (Some(surface), first.surface.first()),
    ];
    for (pointer, id) in pairs {
        if let (Some(pointer), Some(id)) = (pointer, id) {
            store.hints.remember(pointer, id);
        }
    }
}

/// The live work sessions the first step named, by id (the handle's and the hinted one included,
/// without reading them again).
async fn read_sessions(
    store: &RedisStore,
    keys: &Keys,
    first: &First,
) -> Result<HashMap<WorkSessionId, WorkSession>, StoreError> {
    let mut found = HashMap::new();
    let mut read_already = HashSet::new();
    if let Some(handle) = &first.handle {
        found.insert(handle.id.clone(), handle.clone());
    }
    if let Some((id, session)) = &first.hinted {
        read_already.insert(id.clone());
        if let Some(session) = session {
            found.insert(id.clone(), session.clone());
        }
    }
    let mut wanted: Vec<WorkSessionId> = Vec::new();
    let named = first
        .linked
        .iter()
        .chain(&first.conversation)
        .chain(&first.surface);
    for id in named {
        if !found.contains_key(id) && !read_already.contains(id) && !wanted.contains(id) {
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
    let reply: Vec<Value> = store.eval(invocation).await?;
    for value in &reply {
        if let Some(session) = optional_session(value)? {
            found.insert(session.id.clone(), session);
        }
    }
    Ok(found)
}
