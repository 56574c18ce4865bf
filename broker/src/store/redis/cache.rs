//! A replica's cache of settled lookups, kept honest by Redis: a steady call, whose handle,
//! conversation key or MCP-session link settles its work session, is answered from memory with no
//! round trip on its reply path.
//!
//! What keeps it honest, all of it required for a hit:
//! - **Announcements.** Every script that changes what a settled lookup returns (a bind, an
//!   operator's rebind or end, a finalization, a backend session recorded, a link re-pointed, an MCP
//!   session ended or its backend replaced) publishes the principal on the invalidation channel in
//!   the same script (`announce` in `lua/prelude.lua`), so Redis queues the invalidation to every
//!   replica's feed before it replies to the writer. The feed ([`super::feed`]) drops that
//!   principal's entries.
//! - **A healthy feed.** Entries are only served while the feed is subscribed and its last
//!   heartbeat was answered within [`LEASE`]; when it breaks (Redis restarted, a network fault) the
//!   whole cache is dropped, and nothing read before it is subscribed again is kept.
//! - **Freshness** ([`fresh`]): an entry is served for at most one refresh interval after it was
//!   read (the bound for what Redis does not announce: a link's TTL running out, a flush by hand),
//!   and only while its work session, by the last activity it read, is more than one refresh
//!   interval away from idle. So an expired or finalized work session is never served: a
//!   finalization needs the last activity plus the idle TTL plus the interval to have passed.
//! - **No lost invalidation.** A lookup takes a [`Ticket`] before it reads; its answer is kept only
//!   if no invalidation and no change of the feed's health happened meanwhile (one generation
//!   counter, under the same lock as the map).
//!
//! The bound this leaves: a replica serves the old binding only if a request reaches it before its
//! feed has read the invalidation Redis sent with the select's reply. Tested across replicas, with
//! Redis restarted and paused (`tests/e2e/test_lookup_cache.py`).
//!
//! Who changes it: lookups insert (through a ticket) and read; the feed invalidates, drops and
//! renews the lease. One mutex guards the map, the generation and the lease, held for one map
//! operation. Bounded: past [`CAPACITY`] entries the map starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ids::PrincipalId;
use crate::resolve::Found;
use crate::session::WorkSession;
use crate::store::{Answer, Query};

/// Settled lookups kept, across principals (a few hundred bytes each).
pub const CAPACITY: usize = 65_536;

/// How long an answered heartbeat keeps the cache servable: also the longest a replica cut off from
/// Redis (a partition that breaks no connection) serves what it kept.
pub const LEASE: Duration = Duration::from_secs(1);

/// The answer worth keeping for `query`, when the lookup settled its work session the way a steady
/// call's does: exactly what `lookup.lua` returns when it stops early (the settling work session,
/// the MCP-session state), so serving it resolves as the store's own answer would. `None` for a
/// lookup that must always read: a select (it reads everything), one that records its call, one
/// that nothing settled, an ended MCP session.
pub fn settled(query: &Query, answer: &Answer) -> Option<Answer> {
    if !query.settle_early || query.record_when_settled || answer.mcp.ended {
        return None;
    }
    let found = &answer.found;
    // The resolution order (`resolve::resolve`): a handle, else the conversation key when sent,
    // else the MCP-session link.
    let found = if query.handle.is_some() {
        Found {
            handle: Some(found.handle.clone()?),
            ..Found::default()
        }
    } else if query.conversation.is_some() {
        Found {
            conversation: Some(found.conversation.clone()?),
            ..Found::default()
        }
    } else if query.mcp.is_some() {
        Found {
            linked: Some(found.linked.clone()?),
            ..Found::default()
        }
    } else {
        return None;
    };
    Some(Answer {
        found,
        mcp: answer.mcp.clone(),
        live_count: 0,
        recorded: false,
    })
}

/// The work session a kept answer settles on.
fn settling(answer: &Answer) -> Option<&WorkSession> {
    let found = &answer.found;
    found
        .handle
        .as_ref()
        .or(found.conversation.as_ref())
        .or(found.linked.as_ref())
}

/// How long entries live, from the store's lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The idle TTL (ms).
    pub idle_ms: u64,
    /// The refresh interval (ms): the most an entry is served after it was read, and the margin
    /// kept before its work session goes idle.
    pub refresh_ms: u64,
}

/// May an entry read at `read_ms`, whose work session had its last activity at `last_ms`, be
/// served at `now_ms`?
pub fn fresh(rules: Rules, read_ms: u64, last_ms: u64, now_ms: u64) -> bool {
    now_ms < read_ms.saturating_add(rules.refresh_ms)
        && now_ms.saturating_add(rules.refresh_ms) < last_ms.saturating_add(rules.idle_ms)
}

struct Entry {
    answer: Answer,
    read_ms: u64,
}

#[derive(Default)]
struct State {
    principals: HashMap<PrincipalId, HashMap<Query, Entry>>,
    entries: usize,
    /// Moves on every invalidation and every change of the feed's health.
    generation: u64,
    /// Until when the feed's last answered heartbeat keeps entries servable; `None`: feed down.
    lease: Option<Instant>,
}

/// Taken before a lookup reads Redis: its answer is kept only if nothing was invalidated meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The cache of one store (one per process).
pub struct LookupCache {
    rules: Rules,
    state: Mutex<State>,
    hits: AtomicU64,
}

impl LookupCache {
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kept answer for `query`, if it may be served now.
    pub fn get(&self, query: &Query, now_ms: u64) -> Option<Answer> {
        let state = self.lock();
        if state.lease.is_none_or(|until| Instant::now() >= until) {
            return None;
        }
        let entry = state.principals.get(&query.principal)?.get(query)?;
        let last = settling(&entry.answer)?.last_active_ms;
        let served = fresh(self.rules, entry.read_ms, last, now_ms).then(|| entry.answer.clone());
        if served.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        served
    }

    /// How many lookups were answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// A ticket for a lookup about to read, or `None` while the feed is down (nothing is kept).
    pub fn ticket(&self) -> Option<Ticket> {
        let state = self.lock();
        state.lease.map(|_| Ticket(state.generation))
    }

    /// Keeps what a lookup read at `read_ms` with `ticket`, if it is worth keeping ([`settled`]) and
    /// nothing was invalidated since the ticket was taken.
    pub fn put(&self, ticket: Ticket, query: &Query, answer: &Answer, read_ms: u64) {
        let Some(answer) = settled(query, answer) else {
            return;
        };
        let mut state = self.lock();
        if state.generation != ticket.0 || state.lease.is_none() {
            return;
        }
        if state.entries >= CAPACITY {
            state.principals.clear();
            state.entries = 0;
        }
        let entries = state.principals.entry(query.principal.clone()).or_default();
        let added = entries
            .insert(query.clone(), Entry { answer, read_ms })
            .is_none();
        if added {
            state.entries += 1;
        }
    }

    /// Drops what is kept for `principal` (a write announced it).
    pub fn invalidate(&self, principal: &PrincipalId) {
        let mut state = self.lock();
        state.generation += 1;
        if let Some(gone) = state.principals.remove(principal) {
            state.entries -= gone.len();
        }
    }

    /// The feed answered a heartbeat (or subscribed): entries are servable until `until`.
    pub fn renew(&self, until: Instant) {
        let mut state = self.lock();
        if state.lease.is_none() {
            // Subscribed again: what was read before is not known to be current.
            state.generation += 1;
            state.principals.clear();
            state.entries = 0;
        }
        state.lease = Some(until);
    }

    /// The feed broke: drop everything, keep nothing until it is subscribed again.
    pub fn drop_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.lease = None;
        state.principals.clear();
        state.entries = 0;
    }

    /// How many answers are kept (for tests).
    pub fn len(&self) -> usize {
        self.lock().entries
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
