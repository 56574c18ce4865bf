//! One principal's record in the memory store: its work sessions, the links that point at them,
//! its surface indexes and its recent projects, with their expiry as Redis keeps them (each of the
//! principal's Redis keys is a field here, the key's TTL beside it). Ids are [`Packed`], repeated
//! values shared ([`super::intern`]), and each collection is a [`Small`] map, so a principal with
//! one work session is one allocation.
//!
//! A surface index (Redis's `surf:<surface>` zset) is split in two: its expiry is kept here
//! ([`Principal::surfaces`]), each member's score in the member's own [`Record::scores`]. A member
//! is only ever added to a work session that exists, and a work session's scores go with it when it
//! is purged: answers cannot tell, since a member without a work session is never reported.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use super::maps::{Entry, after};
use super::packed::Packed;
use super::small::Small;
use crate::ids::{PrincipalId, Project, Surface};
use crate::session::{BackendSessions, WorkSession};

/// One work session (Redis's work-session hash), keyed by its id in [`Principal::sessions`].
#[derive(Debug)]
pub(super) struct Record {
    pub(super) surface: Arc<Surface>,
    pub(super) project: Arc<Project>,
    /// Boxed: most work sessions have none, and it would take the room of three times in each.
    pub(super) conversation: Option<Box<Packed>>,
    pub(super) created_ms: u64,
    pub(super) last_active_ms: u64,
    pub(super) calls: u64,
    /// When its idle TTL runs out (ms of the store's clock).
    pub(super) expires: u64,
    /// When it was finalized (never live again), if it was: the store clock's ms, at least 1 (so
    /// that "not finalized" takes no room of its own; a millisecond more of grace at the epoch).
    pub(super) finalized: Option<NonZeroU64>,
    /// Distinct client MCP sessions that worked in it.
    pub(super) mcp_sessions: u64,
    /// Its backend sessions, by field name (`b:<upstream>:<project>`).
    pub(super) backends: Small<Arc<String>, Packed>,
    /// The surface indexes it is a member of, with its score in each.
    pub(super) scores: Small<Arc<Surface>, u64>,
}

impl Record {
    /// Within its idle TTL and not finalized.
    pub(super) fn live(&self, now: u64) -> bool {
        self.expires > now && self.finalized.is_none()
    }

    /// The work session as the store's callers see it.
    pub(super) fn session(&self, id: &Packed, principal: &PrincipalId) -> Option<WorkSession> {
        let mut backends = BackendSessions::default();
        for (field, session) in self.backends.iter() {
            backends.insert_field(field.to_string(), session.restore()?);
        }
        let conversation = match &self.conversation {
            Some(key) => Some(key.restore()?),
            None => None,
        };
        Some(WorkSession {
            id: id.restore()?,
            principal: principal.clone(),
            surface: Surface::clone(&self.surface),
            conversation,
            project: Project::clone(&self.project),
            created_ms: self.created_ms,
            last_active_ms: self.last_active_ms,
            calls: self.calls,
            backends,
        })
    }
}

/// What few principals use: conversation links, ended MCP sessions, replacement backend sessions
/// and parked rounds (kept apart so the others do not carry their room).
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// `conv:<key>`: the conversation's work session.
    pub(super) conversations: Small<Packed, Entry<Packed>>,
    /// `end:<sid>`: client MCP sessions that were ended, and until when they stay refused.
    pub(super) ended: Small<Packed, u64>,
    /// `bk:<sid>:<upstream>`: the backend session now carrying a client MCP session's unbound
    /// traffic on an upstream.
    pub(super) replaced: Small<(Packed, Packed), Entry<Packed>>,
    /// `park:<key>`: what a parked call left for its next round.
    pub(super) parked: Small<Box<str>, Entry<Box<str>>>,
}

impl Extra {
    /// Drops what expired; `true` when nothing is left.
    fn purge(&mut self, now: u64) -> bool {
        self.conversations.retain(|_, link| link.live(now));
        self.ended.retain(|_, until| *until > now);
        self.replaced.retain(|_, backend| backend.live(now));
        self.parked.retain(|_, value| value.live(now));
        self.conversations.is_empty()
            && self.ended.is_empty()
            && self.replaced.is_empty()
            && self.parked.is_empty()
    }
}

/// Everything the store keeps for one principal.
#[derive(Debug, Default)]
pub(super) struct Principal {
    /// `ws:<id>`: its work sessions, live or not, until purged.
    pub(super) sessions: Small<Packed, Record>,
    /// `mcp:<sid>`: the work session a client MCP session selected.
    pub(super) mcp_links: Small<Packed, Entry<Packed>>,
    /// `surf:<surface>`: when each surface index expires (the scores are in the records).
    pub(super) surfaces: Small<Arc<Surface>, u64>,
    /// `recent`: recently used projects, by when.
    pub(super) recent: Entry<Small<Arc<Project>, u64>>,
    pub(super) extra: Option<Box<Extra>>,
}

impl Principal {
    /// The work session `id` while it is live.
    pub(super) fn live(&self, id: &Packed, now: u64) -> Option<&Record> {
        self.sessions.get(id).filter(|record| record.live(now))
    }

    /// The work session `id` as callers see it, while it is live.
    pub(super) fn session(
        &self,
        id: &Packed,
        principal: &PrincipalId,
        now: u64,
    ) -> Option<WorkSession> {
        self.live(id, now)?.session(id, principal)
    }

    /// How many of its work sessions are live.
    pub(super) fn live_count(&self, now: u64) -> u64 {
        let live = self
            .sessions
            .iter()
            .filter(|(_, record)| record.live(now))
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    /// The work session a link points at, while the link is live.
    pub(super) fn linked<'a>(
        links: &'a Small<Packed, Entry<Packed>>,
        key: &Packed,
        now: u64,
    ) -> Option<&'a Packed> {
        links
            .get(key)
            .filter(|link| link.live(now))
            .map(|link| &link.value)
    }

    pub(super) fn extra(&self) -> Option<&Extra> {
        self.extra.as_deref()
    }

    pub(super) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The members of a surface index by score, highest first; equal scores in reverse order of
    /// their ids, as Redis's `ZREVRANGE` gives them (two binds in the same millisecond).
    pub(super) fn surface_members(&self, surface: &Surface, now: u64) -> Vec<&Packed> {
        if self.surfaces.get(surface).is_none_or(|until| *until <= now) {
            return Vec::new();
        }
        let mut members: Vec<(u64, &Packed)> = self
            .sessions
            .iter()
            .filter_map(|(id, record)| record.scores.get(surface).map(|score| (*score, id)))
            .collect();
        members.sort_by(|a, b| b.cmp(a));
        members.into_iter().map(|(_, id)| id).collect()
    }

    /// Its recent projects, most recent first; equal times in reverse order of their names (as
    /// `ZREVRANGE`).
    pub(super) fn recent_projects(&self, now: u64) -> Vec<Project> {
        if !self.recent.live(now) {
            return Vec::new();
        }
        let mut projects: Vec<(u64, &Arc<Project>)> = self
            .recent
            .value
            .iter()
            .map(|(project, at)| (*at, project))
            .collect();
        projects.sort_by(|a, b| b.cmp(a));
        projects
            .into_iter()
            .map(|(_, project)| Project::clone(project))
            .collect()
    }

    /// `ZADD` of work session `id` (which exists) to the index of `surface` with `score`; the
    /// index lives `ttl` from now, and starts empty if it had expired.
    pub(super) fn index_on_surface(
        &mut self,
        surface: &Arc<Surface>,
        id: &Packed,
        score: u64,
        ttl: Duration,
        now: u64,
    ) {
        let until = after(now, ttl);
        match self.surfaces.get_mut(&**surface) {
            Some(expires) if *expires > now => *expires = until,
            _ => {
                for record in self.sessions.values_mut() {
                    record.scores.remove(&**surface);
                }
                self.surfaces.insert(Arc::clone(surface), until);
            }
        }
        if let Some(record) = self.sessions.get_mut(id) {
            record.scores.insert(Arc::clone(surface), score);
        }
    }

    /// `ZADD` of `project` to the recent projects with `score`; the set lives `ttl` from now, and
    /// starts empty if it had expired.
    pub(super) fn add_recent(
        &mut self,
        project: Arc<Project>,
        score: u64,
        ttl: Duration,
        now: u64,
    ) {
        if !self.recent.live(now) {
            self.recent.value = Small::Empty;
        }
        self.recent.value.insert(project, score);
        self.recent.expires = after(now, ttl);
    }

    /// Drops what expired (as `Maps::purge_now_and_then` says); returns how many work sessions
    /// were dropped unclaimed, and whether anything is left.
    pub(super) fn purge(&mut self, now: u64, grace: u64, safety: u64) -> (usize, bool) {
        let mut dropped = 0;
        self.sessions.retain(|_, record| {
            let keep = match record.finalized {
                Some(at) => at.get().saturating_add(grace) > now,
                None => record.expires.saturating_add(safety) > now,
            };
            if !keep && record.finalized.is_none() {
                dropped += 1;
            }
            keep
        });
        self.mcp_links.retain(|_, link| link.live(now));
        self.surfaces.retain(|_, until| *until > now);
        let surfaces = &self.surfaces;
        for record in self.sessions.values_mut() {
            record
                .scores
                .retain(|surface, _| surfaces.get(surface).is_some());
        }
        if !self.recent.live(now) {
            self.recent.value = Small::Empty;
        }
        if self.extra.as_mut().is_some_and(|extra| extra.purge(now)) {
            self.extra = None;
        }
        let left = !self.sessions.is_empty()
            || !self.mcp_links.is_empty()
            || !self.surfaces.is_empty()
            || !self.recent.value.is_empty()
            || self.extra.is_some();
        (dropped, left)
    }
}

/// A link (or any value) written now, living `ttl`.
pub(super) fn link<T>(value: T, ttl: Duration, now: u64) -> Entry<T> {
    Entry {
        value,
        expires: after(now, ttl),
    }
}
