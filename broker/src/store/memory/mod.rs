//! The in-memory store: one process, nothing survives a restart. The same semantics as Redis
//! (sliding TTLs, scoped by principal, a work session's data kept past its idle deadline until it
//! is finalized, finalized exactly once, events handed out until acknowledged with backoff, then
//! dead-lettered), so the two are interchangeable and tested alike (the store contract, and the
//! differential test that compares their every answer). Every time it judges or writes comes from its
//! [`Clock`] (the wall clock unless a test gives it a manual one), in milliseconds.
//!
//! Its layout is its own, made to be small (a few hundred bytes per live work session): one record
//! per principal holding what Redis keeps under that principal's keys (`principal.rs`), the records
//! in chunks of a thousand allocated at once (`slab.rs`), ids as bytes (`packed.rs`), repeated names
//! shared (`intern.rs`), maps that hold one entry inline (`small.rs`). The state, its purge and the
//! writes that span it are in `maps.rs`, finalization and the operator's views in `events.rs`, the
//! deadline index that lets the sweep visit only the work sessions that may be due (its invariant
//! and who keeps it) in `deadlines.rs`.

use std::sync::Mutex;

use async_trait::async_trait;

use super::clock::Clock;
use super::{
    AdminAction, Answer, BackendRef, Claimed, Lifetimes, McpQuery, McpState, Query, Status, Store,
    StoreError,
};
use crate::finalize::{DeadLetter, Delivery, Redelivery};
use crate::ids::{McpSessionId, PrincipalId, WorkSessionId};
use crate::resolve::Found;
use crate::session::{BackendSessions, Links, WorkSession};
use crate::store::clock::ms;

mod deadlines;
mod events;
mod intern;
mod maps;
mod packed;
mod principal;
#[cfg(test)]
mod size;
mod slab;
mod small;
#[cfg(test)]
mod tests;

use maps::{Entry, Maps, Recorded, after};
use packed::Packed;
use principal::{Principal, link};

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
        self.with(|maps, now| {
            let mcp = query
                .mcp
                .as_ref()
                .map(|mcp| maps.mcp_state(&query.principal, mcp, now))
                .unwrap_or_default();
            let Some(record) = maps.principal(&query.principal) else {
                return Answer {
                    mcp,
                    ..Answer::default()
                };
            };
            let principal = &query.principal;
            let session = |id: &Packed| record.session(id, principal, now);
            let handle = query
                .handle
                .as_ref()
                .and_then(|id| session(&Packed::new(id.as_str())));
            let linked = query.mcp.as_ref().and_then(|mcp| {
                let sid = Packed::new(mcp.session.as_str());
                Principal::linked(&record.mcp_links, &sid, now).and_then(session)
            });
            let conversation = query.conversation.as_ref().and_then(|key| {
                let key = Packed::new(key.as_str());
                let extra = record.extra()?;
                Principal::linked(&extra.conversations, &key, now).and_then(session)
            });
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
                let surface_live: Vec<WorkSession> = record
                    .surface_members(&query.surface, now)
                    .into_iter()
                    .filter_map(session)
                    .take(SURFACE_LIMIT)
                    .collect();
                let mut recent_projects = record.recent_projects(now);
                recent_projects.truncate(RECENT_LIMIT);
                (surface_live, recent_projects, record.live_count(now))
            };
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
        self.with(|maps, now| maps.mcp_state(principal, mcp, now))
    }

    async fn touch_calls(
        &self,
        session: &WorkSession,
        links: &Links,
        now_ms: u64,
        calls: u64,
    ) -> Result<bool, StoreError> {
        let ttl = self.lifetimes.idle;
        let refresh = ms(self.lifetimes.refresh);
        self.with(|maps, now| {
            let id = Packed::new(session.id.as_str());
            let Some(record) = maps
                .principal_mut(&session.principal)
                .and_then(|principal| principal.sessions.get_mut(&id))
                .filter(|record| record.live(now))
            else {
                return false;
            };
            // As record_call in prelude.lua: the last call's time (how long ago by the caller's
            // clock, at most the refresh interval), never moving the last activity back.
            let ago = now.saturating_sub(now_ms).min(refresh);
            let at = record.last_active_ms.max(now - ago);
            record.last_active_ms = at;
            record.calls += calls;
            record.expires = record.expires.max(after(at, ttl));
            let surface = std::sync::Arc::clone(&record.surface);
            let call = Recorded {
                id: &id,
                surface: &surface,
                score: at,
                links,
                calls,
            };
            maps.refresh(&session.principal, &call, ttl, now);
            true
        })
    }

    async fn bind(&self, session: &WorkSession, links: &Links) -> Result<(), StoreError> {
        let lifetimes = self.lifetimes;
        let cap = self.max_work_sessions;
        // One lock for the checks and the writes: two binds cannot both see room for one more.
        self.with(|maps, now| maps.bind(session, links, &lifetimes, cap, now))?
    }

    async fn set_work_backend(
        &self,
        session: &WorkSession,
        backend: &BackendRef,
    ) -> Result<bool, StoreError> {
        let field = BackendSessions::field(&backend.upstream, &session.project);
        self.with(|maps, _| {
            let field = maps.names.fields.share(&field);
            let Some(record) = maps
                .principal_mut(&session.principal)
                .and_then(|p| p.sessions.get_mut(&Packed::new(session.id.as_str())))
                .filter(|record| record.finalized.is_none())
            else {
                return false;
            };
            record
                .backends
                .insert(field, Packed::new(backend.session.as_str()));
            true
        })
    }

    async fn set_backend_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
        backend: &BackendRef,
    ) -> Result<(), StoreError> {
        let key = (
            Packed::new(session.as_str()),
            Packed::new(backend.upstream.as_str()),
        );
        let value = Packed::new(backend.session.as_str());
        let ttl = self.lifetimes.idle;
        self.with(|maps, now| {
            let extra = maps.principal_or_new(principal).extra_mut();
            extra.replaced.insert(key, link(value, ttl, now));
        })
    }

    async fn put_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.with(|maps, now| {
            let extra = maps.principal_or_new(principal).extra_mut();
            extra
                .parked
                .insert(key.into(), link(value.into(), ttl, now));
        })
    }

    async fn take_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        self.with(|maps, now| {
            let extra = maps.principal_mut(principal)?.extra.as_deref_mut()?;
            let parked: Entry<Box<str>> = extra.parked.remove(key)?;
            parked.live(now).then(|| parked.value.into())
        })
    }

    async fn end_mcp_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
    ) -> Result<(), StoreError> {
        let ttl = self.lifetimes.ended_mcp_session;
        self.with(|maps, now| {
            let sid = Packed::new(session.as_str());
            let principal = maps.principal_or_new(principal);
            principal.mcp_links.remove(&sid);
            principal.extra_mut().ended.insert(sid, after(now, ttl));
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
            maps.principals
                .iter()
                .map(|(_, principal)| principal.live_count(now))
                .fold(0, u64::saturating_add)
        })
    }

    async fn list_work_sessions(&self, principal: &PrincipalId) -> Result<Vec<Status>, StoreError> {
        self.with(|maps, now| maps.statuses(principal, now))
    }

    async fn work_session(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
    ) -> Result<Option<Status>, StoreError> {
        self.with(|maps, now| maps.status(principal, id, now))
    }

    async fn admin(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
        action: &AdminAction,
    ) -> Result<bool, StoreError> {
        let lifetimes = self.lifetimes;
        self.with(|maps, now| maps.act(principal, id, action, &lifetimes, now))
    }

    async fn ack_finalized(&self, id: &str) -> Result<(), StoreError> {
        self.with(|maps, _| {
            maps.in_flight.remove(id);
        })
    }
}
