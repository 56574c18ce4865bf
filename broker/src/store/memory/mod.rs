//! The in-memory store: one process, nothing survives a restart. Same key schema and semantics as
//! Redis (sliding TTLs, scoped by principal, a work session's data kept past its idle deadline until
//! it is finalized, finalized exactly once, events handed out until acknowledged with backoff, then
//! dead-lettered), so the two are interchangeable and tested alike (the store contract, and the
//! differential test that compares their every answer). Every time it judges or writes comes from its
//! [`Clock`] (the wall clock unless a test gives it a manual one), in milliseconds. The maps and
//! their primitive reads and writes are in `maps.rs`, finalization and the operator's views in
//! `events.rs`.

use std::sync::Mutex;

use async_trait::async_trait;

use super::clock::Clock;
use super::keys::Keys;
use super::{
    AdminAction, Answer, BackendRef, Claimed, Lifetimes, McpQuery, McpState, Query, Status, Store,
    StoreError,
};
use crate::finalize::{DeadLetter, Delivery, Redelivery};
use crate::ids::{McpSessionId, PrincipalId, Project, WorkSessionId};
use crate::resolve::Found;
use crate::session::{BackendSessions, Links, WorkSession};
use crate::store::clock::ms;

mod events;
mod maps;
#[cfg(test)]
mod size;

use maps::{Entry, Maps, after};

const PREFIX: &str = "msb";

/// How many live work sessions of one surface a lookup reports.
const SURFACE_LIMIT: usize = 20;
/// How many recent projects a lookup reports.
const RECENT_LIMIT: usize = 10;

/// A process-local store.
pub struct MemoryStore {
    lifetimes: Lifetimes,
    /// Most live work sessions per principal that [`Store::bind`] lets exist (0: no limit).
    max_work_sessions: u64,
    clock: Clock,
    maps: Mutex<Maps>,
}

impl MemoryStore {
    /// A store on the wall clock.
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            lifetimes,
            max_work_sessions: 0,
            clock: Clock::System,
            maps: Mutex::new(Maps::default()),
        }
    }

    /// Judges time by `clock` instead of the wall clock (a test's [`Clock::Manual`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Caps the live work sessions of each principal (0: no limit), enforced by [`Store::bind`].
    pub fn with_max_work_sessions(mut self, cap: u64) -> Self {
        self.max_work_sessions = cap;
        self
    }

    /// Runs `f` on the maps under the lock, with the clock's now (ms).
    fn with<R>(&self, f: impl FnOnce(&mut Maps, u64) -> R) -> Result<R, StoreError> {
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))?;
        let now = self.clock.now_ms();
        maps.purge_now_and_then(now, &self.lifetimes);
        Ok(f(&mut maps, now))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn lookup(&self, query: &Query) -> Result<Answer, StoreError> {
        let keys = Keys::new(PREFIX, &query.principal);
        self.with(|maps, now| {
            let handle = query
                .handle
                .as_ref()
                .and_then(|id| maps.session(&keys.work_session(id), now));
            let linked = query
                .mcp
                .as_ref()
                .and_then(|mcp| maps.linked_session(&keys, &keys.mcp_link(&mcp.session), now));
            let conversation = query
                .conversation
                .as_ref()
                .and_then(|c| maps.linked_session(&keys, &keys.conversation(c), now));
            // A call settled by its handle, conversation or link needs nothing else (Query::settle_early).
            let settled = query.settle_early
                && match (&query.handle, &query.conversation) {
                    (Some(_), _) => true,
                    (None, Some(_)) => conversation.is_some(),
                    (None, None) => linked.is_some(),
                };
            let (surface_live, recent_projects, live_count) = if settled {
                (Vec::new(), Vec::new(), 0)
            } else {
                let surface_live: Vec<WorkSession> = maps
                    .zrev(&keys.surface(&query.surface), now)
                    .into_iter()
                    .filter_map(|id| {
                        maps.session(&format!("{}{id}", keys.work_session_prefix()), now)
                    })
                    .take(SURFACE_LIMIT)
                    .collect();
                let recent_projects: Vec<Project> = maps
                    .zrev(&keys.recent(), now)
                    .into_iter()
                    .filter_map(|p| Project::parse(p).ok())
                    .take(RECENT_LIMIT)
                    .collect();
                (surface_live, recent_projects, maps.live_count(&keys, now))
            };
            let mcp = query
                .mcp
                .as_ref()
                .map(|mcp| maps.mcp_state(&keys, mcp, now))
                .unwrap_or_default();
            Answer {
                live_count,
                found: Found {
                    handle,
                    linked,
                    conversation,
                    surface_live,
                    recent_projects,
                },
                mcp,
                recorded: false, // the touch that follows costs no round trip here
            }
        })
    }

    async fn mcp_state(
        &self,
        principal: &PrincipalId,
        mcp: &McpQuery,
    ) -> Result<McpState, StoreError> {
        let keys = Keys::new(PREFIX, principal);
        self.with(|maps, now| maps.mcp_state(&keys, mcp, now))
    }

    async fn touch_calls(
        &self,
        session: &WorkSession,
        links: &Links,
        now_ms: u64,
        calls: u64,
    ) -> Result<bool, StoreError> {
        let keys = Keys::new(PREFIX, &session.principal);
        let ttl = self.lifetimes.idle;
        let refresh = ms(self.lifetimes.refresh);
        self.with(|maps, now| {
            let key = keys.work_session(&session.id);
            if maps.finalized.contains_key(&key) {
                return false;
            }
            let Some(entry) = maps.sessions.get_mut(&key).filter(|e| e.live(now)) else {
                return false;
            };
            // As record_call in prelude.lua: the last call's time (how long ago by the caller's
            // clock, at most the refresh interval), never moving the last activity back.
            let ago = now.saturating_sub(now_ms).min(refresh);
            let at = entry.value.last_active_ms.max(now - ago);
            entry.value.last_active_ms = at;
            entry.value.calls += calls;
            entry.expires = entry.expires.max(after(at, ttl));
            let current = entry.value.clone();
            maps.refresh(&keys, &current, links, ttl, now, calls);
            true
        })
    }

    async fn bind(&self, session: &WorkSession, links: &Links) -> Result<(), StoreError> {
        let keys = Keys::new(PREFIX, &session.principal);
        let lifetimes = self.lifetimes;
        let cap = self.max_work_sessions;
        // One lock for the checks and the writes: two binds cannot both see room for one more.
        self.with(|maps, now| {
            let key = keys.work_session(&session.id);
            if maps.finalized.contains_key(&key) {
                return Err(StoreError::Ended);
            }
            let starts = maps.session(&key, now).is_none();
            if starts && cap > 0 && maps.live_count(&keys, now) >= cap {
                return Err(StoreError::TooMany(cap));
            }
            // It merges into what calls recorded since its copy was read, as bind.lua does
            // (store::hash::bind_fields): their calls, the creation time, the backend sessions it
            // does not carry itself, and the conversation when it carries none.
            let mut stored = session.clone();
            stored.calls = 1;
            if let Some(existing) = maps.sessions.get(&key) {
                let existing = &existing.value;
                stored.calls = existing.calls + 1;
                stored.created_ms = existing.created_ms;
                if stored.conversation.is_none() {
                    stored.conversation = existing.conversation.clone();
                }
                stored.last_active_ms = stored.last_active_ms.max(existing.last_active_ms);
                stored.backends = existing.backends.clone();
                for (field, backend) in session.backends.fields() {
                    stored
                        .backends
                        .insert_field(field.to_owned(), backend.clone());
                }
            }
            maps.by_principal
                .entry(keys.work_session_prefix())
                .or_default()
                .insert(key.clone());
            maps.sessions.insert(
                key,
                Entry {
                    value: stored,
                    expires: after(now, lifetimes.idle),
                },
            );
            maps.refresh(&keys, session, links, lifetimes.idle, now, 1);
            maps.zadd(
                keys.recent(),
                session.project.to_string(),
                session.last_active_ms,
                lifetimes.recent_projects,
                now,
            );
            Ok(())
        })?
    }

    async fn set_work_backend(
        &self,
        session: &WorkSession,
        backend: &BackendRef,
    ) -> Result<bool, StoreError> {
        let key = Keys::new(PREFIX, &session.principal).work_session(&session.id);
        let field = BackendSessions::field(&backend.upstream, &session.project);
        self.with(|maps, _| {
            if maps.finalized.contains_key(&key) {
                return false;
            }
            let Some(entry) = maps.sessions.get_mut(&key) else {
                return false;
            };
            entry
                .value
                .backends
                .insert_field(field, backend.session.clone());
            true
        })
    }

    async fn set_backend_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
        backend: &BackendRef,
    ) -> Result<(), StoreError> {
        let key = Keys::new(PREFIX, principal).backend_session(session, &backend.upstream);
        let ttl = self.lifetimes.idle;
        self.with(|maps, now| maps.set_string(key, backend.session.to_string(), ttl, now))
    }

    async fn put_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let key = Keys::new(PREFIX, principal).parked(key);
        self.with(|maps, now| maps.set_string(key, value.to_owned(), ttl, now))
    }

    async fn take_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = Keys::new(PREFIX, principal).parked(key);
        self.with(|maps, now| {
            let value = maps.string(&key, now).map(str::to_owned);
            maps.strings.remove(&key);
            value
        })
    }

    async fn end_mcp_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
    ) -> Result<(), StoreError> {
        let keys = Keys::new(PREFIX, principal);
        let ttl = self.lifetimes.ended_mcp_session;
        self.with(|maps, now| {
            maps.strings.remove(&keys.mcp_link(session));
            maps.set_string(keys.mcp_ended(session), "1".into(), ttl, now);
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|_, _| ())
    }

    async fn claim_expired(&self, limit: usize) -> Result<Claimed, StoreError> {
        self.with(|maps, now| Claimed {
            finalized: maps.claim_expired(limit, now, ms(self.lifetimes.refresh)),
            dropped: std::mem::take(&mut maps.dropped),
        })
    }

    async fn next_finalized(
        &self,
        _consumer: &str,
        count: usize,
        policy: &Redelivery,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.with(|maps, now| maps.take_events(count, policy, now))
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), StoreError> {
        self.with(|maps, now| maps.bury(&delivery.id, reason, now))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.with(|maps, _| maps.dead.iter().rev().take(limit).cloned().collect())
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|maps, _| maps.replay(id))
    }

    async fn live_work_sessions(&self) -> Result<u64, StoreError> {
        self.with(|maps, now| {
            let live = maps
                .sessions
                .iter()
                .filter(|(key, e)| e.live(now) && !maps.finalized.contains_key(*key))
                .count();
            u64::try_from(live).unwrap_or(u64::MAX)
        })
    }

    async fn list_work_sessions(&self, principal: &PrincipalId) -> Result<Vec<Status>, StoreError> {
        let prefix = Keys::new(PREFIX, principal).work_session_prefix();
        self.with(|maps, now| {
            let mut all: Vec<Status> = maps
                .sessions
                .keys()
                .filter(|key| key.starts_with(&prefix))
                .filter_map(|key| maps.status(key, now))
                .collect();
            // Newest first, as Redis's index lists them: equal times in reverse id order.
            all.sort_by(|a, b| {
                (b.session.last_active_ms, &b.session.id)
                    .cmp(&(a.session.last_active_ms, &a.session.id))
            });
            all
        })
    }

    async fn work_session(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
    ) -> Result<Option<Status>, StoreError> {
        let key = Keys::new(PREFIX, principal).work_session(id);
        self.with(|maps, now| maps.status(&key, now))
    }

    async fn admin(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
        action: &AdminAction,
    ) -> Result<bool, StoreError> {
        let keys = Keys::new(PREFIX, principal);
        let lifetimes = self.lifetimes;
        self.with(|maps, now| maps.act(&keys, id, action, &lifetimes, now))
    }

    async fn ack_finalized(&self, id: &str) -> Result<(), StoreError> {
        self.with(|maps, _| {
            maps.in_flight.remove(id);
        })
    }
}
