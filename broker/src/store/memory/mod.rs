//! The in-memory store: one process, nothing survives a restart. Same key schema and semantics as
//! Redis (sliding TTLs, scoped by principal, a work session's data kept past its idle deadline until
//! it is finalized, finalized exactly once, events handed out until acknowledged with backoff, then
//! dead-lettered), so the two are interchangeable and tested alike.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::keys::Keys;
use super::{
    AdminAction, Answer, BackendRef, Claimed, Lifetimes, McpQuery, McpState, Query, Status, Store,
    StoreError,
};
use crate::finalize::{DeadLetter, Delivery, Redelivery};
use crate::ids::{BackendSessionId, McpSessionId, PrincipalId, Project, WorkSessionId};
use crate::resolve::Found;
use crate::session::{BackendSessions, Links, WorkSession};

mod events;

const PREFIX: &str = "msb";

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
/// How many live work sessions of one surface a lookup reports.
const SURFACE_LIMIT: usize = 20;
/// How many recent projects a lookup reports.
const RECENT_LIMIT: usize = 10;

struct Entry<T> {
    value: T,
    expires: Instant,
}

impl<T> Entry<T> {
    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<String, Entry<WorkSession>>,
    strings: HashMap<String, Entry<String>>,
    /// Sorted sets as member → score.
    zsets: HashMap<String, Entry<HashMap<String, u64>>>,
    /// Work-session keys already finalized (never live again), and when.
    finalized: HashMap<String, Instant>,
    /// Work sessions whose data expired unclaimed (past the safety TTL), not yet reported.
    dropped: usize,
    /// Finalized events not yet handed out, and handed-out ones awaiting acknowledgement (with when
    /// they were last handed out and how many times).
    pending: VecDeque<Delivery>,
    in_flight: HashMap<String, (Delivery, Instant, u64)>,
    dead: Vec<DeadLetter>,
    next_event: u64,
    /// Distinct client MCP sessions that worked in each work session (by work-session key).
    mcp_seen: HashMap<String, u64>,
    last_purge: Option<Instant>,
}

/// A process-local store.
pub struct MemoryStore {
    lifetimes: Lifetimes,
    maps: Mutex<Maps>,
}

impl MemoryStore {
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            lifetimes,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Maps, Instant) -> R) -> Result<R, StoreError> {
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))?;
        let now = Instant::now();
        maps.purge_now_and_then(now, &self.lifetimes);
        Ok(f(&mut maps, now))
    }
}

impl Maps {
    /// Drops expired entries at most once a minute, so memory follows the live set: a finalized
    /// work session after the grace, an unclaimed one only after the safety TTL (counted as dropped).
    fn purge_now_and_then(&mut self, now: Instant, lifetimes: &Lifetimes) {
        if self
            .last_purge
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.last_purge = Some(now);
        let (finalized, mcp_seen) = (&mut self.finalized, &mut self.mcp_seen);
        let mut dropped = 0;
        self.sessions.retain(|key, e| {
            let keep = match finalized.get(key) {
                Some(at) => *at + lifetimes.grace > now,
                None => e.expires + lifetimes.safety > now,
            };
            if !keep {
                if finalized.remove(key).is_none() {
                    dropped += 1;
                }
                mcp_seen.remove(key);
            }
            keep
        });
        self.dropped += dropped;
        self.strings.retain(|_, e| e.live(now));
        self.zsets.retain(|_, e| e.live(now));
    }

    fn session(&self, key: &str, now: Instant) -> Option<WorkSession> {
        if self.finalized.contains_key(key) {
            return None;
        }
        self.sessions
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    fn string(&self, key: &str, now: Instant) -> Option<&str> {
        self.strings
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.as_str())
    }

    fn set_string(&mut self, key: String, value: String, ttl: Duration, now: Instant) {
        self.strings.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    fn zadd(&mut self, key: String, member: String, score: u64, ttl: Duration, now: Instant) {
        let entry = self.zsets.entry(key).or_insert_with(|| Entry {
            value: HashMap::new(),
            expires: now,
        });
        if !entry.live(now) {
            entry.value.clear();
        }
        entry.value.insert(member, score);
        entry.expires = now + ttl;
    }

    /// Members by score, highest first.
    fn zrev(&self, key: &str, now: Instant) -> Vec<String> {
        let Some(entry) = self.zsets.get(key).filter(|e| e.live(now)) else {
            return Vec::new();
        };
        let mut members: Vec<(&String, &u64)> = entry.value.iter().collect();
        members.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        members.into_iter().map(|(m, _)| m.clone()).collect()
    }

    fn linked_session(&self, keys: &Keys, link_key: &str, now: Instant) -> Option<WorkSession> {
        let id = self.string(link_key, now)?;
        self.session(&format!("{}{id}", keys.work_session_prefix()), now)
    }

    fn mcp_state(&self, keys: &Keys, mcp: &McpQuery, now: Instant) -> McpState {
        let ended = self.string(&keys.mcp_ended(&mcp.session), now).is_some();
        let backend_override = self
            .string(&keys.backend_session(&mcp.session, &mcp.upstream), now)
            .and_then(|s| BackendSessionId::parse(s).ok());
        McpState {
            ended,
            backend_override,
        }
    }

    fn refresh(
        &mut self,
        keys: &Keys,
        session: &WorkSession,
        links: &Links,
        ttl: Duration,
        now: Instant,
    ) {
        let id = session.id.to_string();
        if let Some(sid) = &links.mcp_session {
            let link = keys.mcp_link(sid);
            if self.string(&link, now) != Some(id.as_str()) {
                *self
                    .mcp_seen
                    .entry(keys.work_session(&session.id))
                    .or_insert(0) += 1;
            }
            self.set_string(link, id.clone(), ttl, now);
        }
        if let Some(conversation) = &links.conversation {
            self.set_string(keys.conversation(conversation), id.clone(), ttl, now);
        }
        self.zadd(
            keys.surface(&session.surface),
            id,
            session.last_active_ms,
            ttl,
            now,
        );
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
            let surface_live = maps
                .zrev(&keys.surface(&query.surface), now)
                .into_iter()
                .filter_map(|id| maps.session(&format!("{}{id}", keys.work_session_prefix()), now))
                .take(SURFACE_LIMIT)
                .collect();
            let recent_projects = maps
                .zrev(&keys.recent(), now)
                .into_iter()
                .filter_map(|p| Project::parse(p).ok())
                .take(RECENT_LIMIT)
                .collect();
            let mcp = query
                .mcp
                .as_ref()
                .map(|mcp| maps.mcp_state(&keys, mcp, now))
                .unwrap_or_default();
            let prefix = keys.work_session_prefix();
            let live_count = maps
                .sessions
                .iter()
                .filter(|(key, e)| {
                    key.starts_with(&prefix) && e.live(now) && !maps.finalized.contains_key(*key)
                })
                .count();
            Answer {
                live_count: u64::try_from(live_count).unwrap_or(u64::MAX),
                found: Found {
                    handle,
                    linked,
                    conversation,
                    surface_live,
                    recent_projects,
                },
                mcp,
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

    async fn touch(
        &self,
        session: &WorkSession,
        links: &Links,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let keys = Keys::new(PREFIX, &session.principal);
        let ttl = self.lifetimes.idle;
        self.with(|maps, now| {
            let key = keys.work_session(&session.id);
            if maps.finalized.contains_key(&key) {
                return false;
            }
            let Some(entry) = maps.sessions.get_mut(&key).filter(|e| e.live(now)) else {
                return false;
            };
            entry.value.last_active_ms = now_ms;
            entry.value.calls += 1;
            entry.expires = now + ttl;
            let current = entry.value.clone();
            maps.refresh(&keys, &current, links, ttl, now);
            true
        })
    }

    async fn bind(&self, session: &WorkSession, links: &Links) -> Result<(), StoreError> {
        let keys = Keys::new(PREFIX, &session.principal);
        let lifetimes = self.lifetimes;
        let finalized =
            self.with(|maps, _| maps.finalized.contains_key(&keys.work_session(&session.id)))?;
        if finalized {
            return Err(StoreError::Ended);
        }
        self.with(|maps, now| {
            let mut stored = session.clone();
            stored.calls += 1;
            // Like Redis's HSET, a bind keeps the backend sessions recorded meanwhile.
            if let Some(existing) = maps.sessions.get(&keys.work_session(&session.id)) {
                for (field, backend) in existing.value.backends.fields() {
                    if stored.backends.get_field(field).is_none() {
                        stored
                            .backends
                            .insert_field(field.to_owned(), backend.clone());
                    }
                }
            }
            maps.sessions.insert(
                keys.work_session(&session.id),
                Entry {
                    value: stored,
                    expires: now + lifetimes.idle,
                },
            );
            maps.refresh(&keys, session, links, lifetimes.idle, now);
            maps.zadd(
                keys.recent(),
                session.project.to_string(),
                session.last_active_ms,
                lifetimes.recent_projects,
                now,
            );
        })
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
            finalized: maps.claim_expired(limit, now),
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
        self.with(|maps, _| maps.bury(&delivery.id, reason))
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
            all.sort_by_key(|s| std::cmp::Reverse(s.session.last_active_ms));
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
        let key = keys.work_session(id);
        let recent_ttl = self.lifetimes.recent_projects;
        self.with(|maps, now| {
            if maps.finalized.contains_key(&key) {
                return false;
            }
            let Some(entry) = maps.sessions.get_mut(&key).filter(|e| e.live(now)) else {
                return false;
            };
            match action {
                AdminAction::Rebind(project) => {
                    entry.value.project = project.clone();
                    let score = entry.value.last_active_ms;
                    maps.zadd(keys.recent(), project.to_string(), score, recent_ttl, now);
                }
                AdminAction::End => entry.expires = now,
            }
            true
        })
    }

    async fn ack_finalized(&self, id: &str) -> Result<(), StoreError> {
        self.with(|maps, _| {
            maps.in_flight.remove(id);
        })
    }
}
