//! The Redis store's writes of a call and a select: `touch.lua` (a call recorded, coalesced per
//! refresh interval), `bind.lua` (a select), `backend.lua` (a backend session recorded in its work
//! session). Each drops this replica's cached lookups of the principal when it changed what they
//! return (the scripts announce it to every other replica: [`super::cache`]).

use super::{RedisStore, flag};
use crate::session::{BackendSessions, Links, WorkSession};
use crate::store::keys::{self, Keys};
use crate::store::{BackendRef, StoreError, hash};

pub(super) async fn touch_calls(
    store: &RedisStore,
    session: &WorkSession,
    links: &Links,
    now_ms: u64,
    calls: u64,
) -> Result<bool, StoreError> {
    let keys = store.keys(&session.principal);
    // How long ago the last of the calls was made, by the caller's clock against this store's
    // (a difference: Redis stamps it with its own time), at most the refresh interval.
    let refresh = RedisStore::ms(store.lifetimes.refresh);
    let ago = store.clock.now_ms().saturating_sub(now_ms).min(refresh);
    let mut invocation = store.scripts.touch.prepare_invoke();
    invocation
        .key(keys.work_session(&session.id))
        .key(keys.surface(&session.surface))
        .key(link_key(&keys, links))
        .key(conversation_key(&keys, links))
        .key(keys.deadlines())
        .key(keys.index())
        .arg(session.id.to_string())
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(store.keep_ms())
        .arg(match (&links.mcp_session, links.count_only) {
            (None, _) => "0",
            (Some(_), false) => "1",
            (Some(_), true) => "2",
        })
        .arg(flag(links.conversation.is_some()))
        .arg(keys::deadline_member(&session.principal, &session.id))
        .arg(calls)
        .arg(ago)
        .arg(refresh);
    let touched: i64 = store.eval(invocation).await?;
    if touched == 2 {
        store.forget(&session.principal);
    }
    Ok(touched >= 1)
}

pub(super) async fn bind(
    store: &RedisStore,
    session: &WorkSession,
    links: &Links,
) -> Result<(), StoreError> {
    let keys = store.keys(&session.principal);
    let mut invocation = store.scripts.bind.prepare_invoke();
    invocation
        .key(keys.work_session(&session.id))
        .key(keys.surface(&session.surface))
        .key(link_key(&keys, links))
        .key(conversation_key(&keys, links))
        .key(keys.recent())
        .key(keys.deadlines())
        .key(keys.index())
        .arg(session.id.to_string())
        .arg(RedisStore::ms(store.lifetimes.idle))
        .arg(store.keep_ms())
        .arg(flag(links.mcp_session.is_some()))
        .arg(flag(links.conversation.is_some()))
        .arg(RedisStore::ms(store.lifetimes.recent_projects))
        .arg(session.project.to_string())
        .arg(keys::deadline_member(&session.principal, &session.id))
        .arg(store.max_work_sessions);
    invocation.arg(RedisStore::ms(store.lifetimes.refresh));
    let (set, keep) = hash::bind_fields(session);
    invocation.arg(set.len());
    for (field, value) in set.into_iter().chain(keep) {
        invocation.arg(field).arg(value);
    }
    let bound: i64 = store.eval(invocation).await?;
    if bound == 1 {
        store.forget(&session.principal);
        store.seen_everywhere(&session.principal).await;
    }
    match bound {
        1 => Ok(()),
        -1 => Err(StoreError::TooMany(store.max_work_sessions)),
        _ => Err(StoreError::Ended),
    }
}

pub(super) async fn set_work_backend(
    store: &RedisStore,
    session: &WorkSession,
    backend: &BackendRef,
) -> Result<bool, StoreError> {
    let keys = store.keys(&session.principal);
    let mut invocation = store.scripts.backend.prepare_invoke();
    invocation
        .key(keys.work_session(&session.id))
        .arg(BackendSessions::field(&backend.upstream, &session.project))
        .arg(backend.session.to_string());
    let recorded: i64 = store.eval(invocation).await?;
    if recorded == 1 {
        store.forget(&session.principal);
    }
    Ok(recorded == 1)
}

fn link_key(keys: &Keys, links: &Links) -> String {
    links
        .mcp_session
        .as_ref()
        .map(|s| keys.mcp_link(s))
        .unwrap_or_else(|| keys.unused())
}

fn conversation_key(keys: &Keys, links: &Links) -> String {
    links
        .conversation
        .as_ref()
        .map(|c| keys.conversation(c))
        .unwrap_or_else(|| keys.unused())
}
