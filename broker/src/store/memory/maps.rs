//! The memory store's maps: work sessions, strings and sorted sets with their expiry, as Redis keeps
//! them (same key names), and the reads and writes the store's operations are made of. Every caller
//! holds the store's one lock, so each operation sees and leaves the maps consistent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::finalize::{DeadLetter, Delivery};
use crate::ids::BackendSessionId;
use crate::session::{Links, WorkSession};
use crate::store::clock::ms;
use crate::store::keys::Keys;
use crate::store::{Lifetimes, McpQuery, McpState};

/// How often expired entries are dropped, at most (ms of the store's clock).
const PURGE_EVERY_MS: u64 = 60_000;

/// `now + ttl`, in the store clock's milliseconds.
pub(super) fn after(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ms(ttl))
}

/// A value and the moment it expires (a Redis key's TTL), in the store clock's milliseconds.
pub(super) struct Entry<T> {
    pub(super) value: T,
    pub(super) expires: u64,
}

impl<T> Entry<T> {
    pub(super) fn live(&self, now: u64) -> bool {
        self.expires > now
    }
}

/// Everything the memory store holds, behind its one lock.
#[derive(Default)]
pub(super) struct Maps {
    pub(super) sessions: HashMap<String, Entry<WorkSession>>,
    pub(super) strings: HashMap<String, Entry<String>>,
    /// Sorted sets as member → score.
    pub(super) zsets: HashMap<String, Entry<HashMap<String, u64>>>,
    /// Work-session keys already finalized (never live again), and when (ms).
    pub(super) finalized: HashMap<String, u64>,
    /// Work sessions whose data expired unclaimed (past the safety TTL), not yet reported.
    pub(super) dropped: usize,
    /// Finalized events not yet handed out, and handed-out ones awaiting acknowledgement (with when
    /// they were last handed out (ms) and how many times).
    pub(super) pending: VecDeque<Delivery>,
    pub(super) in_flight: HashMap<String, (Delivery, u64, u64)>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) next_event: u64,
    /// Distinct client MCP sessions that worked in each work session (by work-session key).
    pub(super) mcp_seen: HashMap<String, u64>,
    /// Each principal's work-session keys (by work-session key prefix), so counting one principal's
    /// live work sessions reads that principal's only, never every work session of every principal.
    pub(super) by_principal: HashMap<String, HashSet<String>>,
    pub(super) last_purge: Option<u64>,
}

impl Maps {
    /// Drops expired entries at most once a minute, so memory follows the live set: a finalized
    /// work session after the grace, an unclaimed one only after the safety TTL (counted as dropped).
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
        let (finalized, mcp_seen) = (&mut self.finalized, &mut self.mcp_seen);
        let mut dropped = 0;
        self.sessions.retain(|key, e| {
            let keep = match finalized.get(key) {
                Some(at) => after(*at, lifetimes.grace) > now,
                None => after(e.expires, lifetimes.safety) > now,
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
        let sessions = &self.sessions;
        self.by_principal.retain(|_, keys| {
            keys.retain(|key| sessions.contains_key(key));
            !keys.is_empty()
        });
        self.strings.retain(|_, e| e.live(now));
        self.zsets.retain(|_, e| e.live(now));
    }

    pub(super) fn session(&self, key: &str, now: u64) -> Option<WorkSession> {
        if self.finalized.contains_key(key) {
            return None;
        }
        self.sessions
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    pub(super) fn string(&self, key: &str, now: u64) -> Option<&str> {
        self.strings
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.as_str())
    }

    pub(super) fn set_string(&mut self, key: String, value: String, ttl: Duration, now: u64) {
        self.strings.insert(
            key,
            Entry {
                value,
                expires: after(now, ttl),
            },
        );
    }

    pub(super) fn zadd(
        &mut self,
        key: String,
        member: String,
        score: u64,
        ttl: Duration,
        now: u64,
    ) {
        let entry = self.zsets.entry(key).or_insert_with(|| Entry {
            value: HashMap::new(),
            expires: now,
        });
        if !entry.live(now) {
            entry.value.clear();
        }
        entry.value.insert(member, score);
        entry.expires = after(now, ttl);
    }

    /// Members by score, highest first; equal scores in reverse lexicographic order, as Redis's
    /// `ZREVRANGE` gives them (two binds in the same millisecond).
    pub(super) fn zrev(&self, key: &str, now: u64) -> Vec<String> {
        let Some(entry) = self.zsets.get(key).filter(|e| e.live(now)) else {
            return Vec::new();
        };
        let mut members: Vec<(&String, &u64)> = entry.value.iter().collect();
        members.sort_by(|a, b| b.1.cmp(a.1).then_with(|| b.0.cmp(a.0)));
        members.into_iter().map(|(m, _)| m.clone()).collect()
    }

    /// How many work sessions of the principal are live (within their idle TTL, not finalized).
    pub(super) fn live_count(&self, keys: &Keys, now: u64) -> u64 {
        let Some(own) = self.by_principal.get(&keys.work_session_prefix()) else {
            return 0;
        };
        let live = own
            .iter()
            .filter(|key| {
                !self.finalized.contains_key(*key)
                    && self.sessions.get(*key).is_some_and(|e| e.live(now))
            })
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    pub(super) fn linked_session(
        &self,
        keys: &Keys,
        link_key: &str,
        now: u64,
    ) -> Option<WorkSession> {
        let id = self.string(link_key, now)?;
        self.session(&format!("{}{id}", keys.work_session_prefix()), now)
    }

    pub(super) fn mcp_state(&self, keys: &Keys, mcp: &McpQuery, now: u64) -> McpState {
        let ended = self.string(&keys.mcp_ended(&mcp.session), now).is_some();
        let backend_override = self
            .string(&keys.backend_session(&mcp.session, &mcp.upstream), now)
            .and_then(|s| BackendSessionId::parse(s).ok());
        McpState {
            ended,
            backend_override,
        }
    }

    pub(super) fn refresh(
        &mut self,
        keys: &Keys,
        session: &WorkSession,
        links: &Links,
        ttl: Duration,
        now: u64,
        calls: u64,
    ) {
        let id = session.id.to_string();
        if let (Some(_), true) = (&links.mcp_session, links.count_only) {
            *self
                .mcp_seen
                .entry(keys.work_session(&session.id))
                .or_insert(0) += calls;
        } else if let Some(sid) = &links.mcp_session {
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
