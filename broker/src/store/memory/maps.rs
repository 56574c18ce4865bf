//! The memory store's state: one [`Principal`] record per principal (in a slab, by its packed id),
//! the shared names, the finalized events; the purge that keeps memory following the live set, and
//! the writes that span a principal's record and the shared names. Every caller holds the store's one
//! lock, so each operation sees and leaves the state consistent.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::deadlines::Deadlines;
use super::intern::Names;
use super::packed::Packed;
use super::principal::{Principal, Record, link};
use super::slab::Principals;
use super::small::Small;
use crate::finalize::{DeadLetter, Delivery};
use crate::ids::{PrincipalId, Surface};
use crate::session::{Links, WorkSession};
use crate::store::clock::ms;
use crate::store::{Lifetimes, McpQuery, McpState, StoreError};

/// How often expired entries are dropped, at most (ms of the store's clock).
const PURGE_EVERY_MS: u64 = 60_000;

/// `now + ttl`, in the store clock's milliseconds.
pub(super) fn after(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ms(ttl))
}

/// A value and the moment it expires (a Redis key's TTL), in the store clock's milliseconds.
#[derive(Debug, Default)]
pub(super) struct Entry<T> {
    pub(super) value: T,
    pub(super) expires: u64,
}

impl<T> Entry<T> {
    pub(super) fn live(&self, now: u64) -> bool {
        self.expires > now
    }
}

/// A call (or a select) recorded in a work session's links and surface index.
pub(super) struct Recorded<'a> {
    pub(super) id: &'a Packed,
    /// The surface whose index gets the work session, with `score`.
    pub(super) surface: &'a Surface,
    pub(super) score: u64,
    pub(super) links: &'a Links,
    /// How many calls: what a link that only counts its MCP session adds to the count.
    pub(super) calls: u64,
}

/// Everything the memory store holds, behind its one lock.
#[derive(Default)]
pub(super) struct Maps {
    pub(super) principals: Principals,
    pub(super) names: Names,
    /// Work sessions whose data expired unclaimed (past the safety TTL), not yet reported.
    pub(super) dropped: usize,
    /// Finalized events not yet handed out, and handed-out ones awaiting acknowledgement (with when
    /// they were last handed out (ms) and how many times).
    pub(super) pending: VecDeque<Delivery>,
    pub(super) in_flight: HashMap<String, (Delivery, u64, u64)>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) next_event: u64,
    pub(super) last_purge: Option<u64>,
    /// When each work session that is not finalized may come due (see `deadlines.rs` for the
    /// invariant and who keeps it).
    pub(super) deadlines: Deadlines,
    /// Deadline entries the sweeps popped (tests count what a sweep visits).
    #[cfg(test)]
    pub(super) visited: usize,
}

impl Maps {
    /// Drops expired entries at most once a minute, so memory follows the live set: a finalized
    /// work session after the grace, an unclaimed one only after the safety TTL (counted as dropped),
    /// links and indexes past their TTL, principals with nothing left, names nothing points to.
    pub(super) fn purge_now_and_then(&mut self, now: u64, lifetimes: &Lifetimes) {
        // A clock that went back (the wall clock can) purges at once and starts over from there.
        if self
            .last_purge
            .and_then(|at| now.checked_sub(at))
            .is_some_and(|since| since < PURGE_EVERY_MS)
        {
            return;
        }
        self.last_purge = Some(now);
        let (grace, safety) = (ms(lifetimes.grace), ms(lifetimes.safety));
        let mut dropped = 0;
        self.principals.retain(|_, principal| {
            let (gone, left) = principal.purge(now, grace, safety);
            dropped += gone;
            left
        });
        self.dropped += dropped;
        self.names.purge();
        self.deadlines.shrink();
    }

    pub(super) fn principal(&self, principal: &PrincipalId) -> Option<&Principal> {
        self.principals.get(&Packed::new(principal.as_str()))
    }

    pub(super) fn principal_mut(&mut self, principal: &PrincipalId) -> Option<&mut Principal> {
        self.principals.get_mut(&Packed::new(principal.as_str()))
    }

    /// The principal's record, made empty if it has none.
    pub(super) fn principal_or_new(&mut self, principal: &PrincipalId) -> &mut Principal {
        self.principals
            .get_or_default(Packed::new(principal.as_str()))
    }

    pub(super) fn mcp_state(&self, principal: &PrincipalId, mcp: &McpQuery, now: u64) -> McpState {
        let Some(extra) = self.principal(principal).and_then(Principal::extra) else {
            return McpState::default();
        };
        let sid = Packed::new(mcp.session.as_str());
        let ended = extra.ended.get(&sid).is_some_and(|until| *until > now);
        let backend_override = extra
            .replaced
            .get(&(sid, Packed::new(mcp.upstream.as_str())))
            .filter(|backend| backend.live(now))
            .and_then(|backend| backend.value.restore());
        McpState {
            ended,
            backend_override,
        }
    }

    /// Writes a call's links (each living `ttl`), counts its MCP session, and puts the work
    /// session on its surface's index, as `record_call` in Redis does.
    pub(super) fn refresh(
        &mut self,
        principal: &PrincipalId,
        call: &Recorded<'_>,
        ttl: Duration,
        now: u64,
    ) {
        let surface = self.names.surfaces.share(call.surface);
        let Some(principal) = self.principal_mut(principal) else {
            return;
        };
        let id = call.id;
        let links = call.links;
        if let (Some(_), true) = (&links.mcp_session, links.count_only) {
            if let Some(record) = principal.sessions.get_mut(id) {
                record.mcp_sessions += call.calls;
            }
        } else if let Some(sid) = &links.mcp_session {
            let sid = Packed::new(sid.as_str());
            let already = Principal::linked(&principal.mcp_links, &sid, now) == Some(id);
            if !already && let Some(record) = principal.sessions.get_mut(id) {
                record.mcp_sessions += 1;
            }
            principal.mcp_links.insert(sid, link(id.clone(), ttl, now));
        }
        if let Some(conversation) = &links.conversation {
            principal.extra_mut().conversations.insert(
                Packed::new(conversation.as_str()),
                link(id.clone(), ttl, now),
            );
        }
        principal.index_on_surface(&surface, id, call.score, ttl, now);
    }

    /// Creates or updates a work session after a select (`Store::bind`: the cap, the merge, the
    /// links, the recent projects); nothing is written on an error.
    pub(super) fn bind(
        &mut self,
        session: &WorkSession,
        links: &Links,
        lifetimes: &Lifetimes,
        cap: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let id = Packed::new(session.id.as_str());
        let principal = self.principal(&session.principal);
        let existing = principal.and_then(|p| p.sessions.get(&id));
        if existing.is_some_and(|record| record.finalized.is_some()) {
            return Err(StoreError::Ended);
        }
        let starts = !existing.is_some_and(|record| record.live(now));
        let live = principal.map_or(0, |p| p.live_count(now));
        if starts && cap > 0 && live >= cap {
            return Err(StoreError::TooMany(cap));
        }
        let project = self.names.projects.share(&session.project);
        let mut record = Record {
            surface: self.names.surfaces.share(&session.surface),
            project: std::sync::Arc::clone(&project),
            conversation: session
                .conversation
                .as_ref()
                .map(|c| Box::new(Packed::new(c.as_str()))),
            created_ms: session.created_ms,
            last_active_ms: session.last_active_ms,
            calls: 1,
            expires: after(now, lifetimes.idle),
            finalized: None,
            mcp_sessions: 0,
            backends: Small::Empty,
            scores: Small::Empty,
        };
        let carried: Vec<_> = session
            .backends
            .fields()
            .map(|(field, backend)| {
                let field = self.names.fields.share(&field.to_owned());
                (field, Packed::new(backend.as_str()))
            })
            .collect();
        let principal = self.principal_or_new(&session.principal);
        // It merges into what calls recorded since its copy was read, as bind.lua does
        // (store::hash::bind_fields): their calls, the creation time, the backend sessions it
        // does not carry itself, and the conversation when it carries none.
        // The deadline index needs an entry at or before the new deadline: the one it has is
        // early enough unless this moves `expires` earlier (only a clock that went back can).
        let mut index = true;
        if let Some(existing) = principal.sessions.remove(&id) {
            index = record.expires < existing.expires;
            record.calls = existing.calls + 1;
            record.created_ms = existing.created_ms;
            if record.conversation.is_none() {
                record.conversation = existing.conversation;
            }
            record.last_active_ms = record.last_active_ms.max(existing.last_active_ms);
            record.backends = existing.backends;
            record.mcp_sessions = existing.mcp_sessions;
            record.scores = existing.scores;
        }
        for (field, backend) in carried {
            record.backends.insert(field, backend);
        }
        let deadline = record.expires.saturating_add(ms(lifetimes.refresh));
        principal.sessions.insert(id.clone(), record);
        if index {
            let principal = Packed::new(session.principal.as_str());
            self.deadlines.push(deadline, &principal, &id);
        }
        let call = Recorded {
            id: &id,
            surface: &session.surface,
            score: session.last_active_ms,
            links,
            calls: 1,
        };
        self.refresh(&session.principal, &call, lifetimes.idle, now);
        self.principal_or_new(&session.principal).add_recent(
            project,
            session.last_active_ms,
            lifetimes.recent_projects,
            now,
        );
        Ok(())
    }
}
