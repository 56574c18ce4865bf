//! The memory store's finalization and operator views: idle work sessions claimed once, their events
//! queued and handed out until acknowledged (unacknowledged ones again after their backoff, until
//! their attempts are spent: then they become dead letters), the status of one work session as
//! an operator sees it, and an operator's rebind and end.

use super::Maps;
use crate::finalize::{DeadLetter, Delivery, Finalized, Redelivery};
use crate::ids::WorkSessionId;
use crate::store::clock::ms;
use crate::store::keys::Keys;
use crate::store::{AdminAction, Lifetimes, Status};

impl Maps {
    /// Marks idle work sessions finalized and queues their events; returns how many. `now` is the
    /// store clock's (ms), as every time below. A work session is due `refresh` after its idle TTL
    /// ran out (Lifetimes::refresh: as its deadline in Redis).
    pub(super) fn claim_expired(&mut self, limit: usize, now: u64, refresh: u64) -> usize {
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|(key, e)| {
                !e.live(now)
                    && e.expires.saturating_add(refresh) <= now
                    && !self.finalized.contains_key(*key)
            })
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect();
        for key in &due {
            let Some(entry) = self.sessions.get(key) else {
                continue;
            };
            let session = &entry.value;
            let event = Finalized {
                work_session: session.id.clone(),
                principal: session.principal.clone(),
                surface: session.surface.clone(),
                project: session.project.clone(),
                started_ms: session.created_ms,
                last_active_ms: session.last_active_ms,
                finalized_ms: now,
                calls: session.calls,
            };
            self.push_event(event);
            self.finalized.insert(key.clone(), now);
        }
        due.len()
    }

    fn push_event(&mut self, event: Finalized) {
        self.next_event += 1;
        self.pending.push_back(Delivery {
            id: format!("{}-0", self.next_event),
            event,
            redeliveries: 0,
        });
    }

    pub(super) fn status(&self, key: &str, now: u64) -> Option<Status> {
        let entry = self.sessions.get(key)?;
        let finalized = self.finalized.contains_key(key);
        Some(Status {
            session: entry.value.clone(),
            live: entry.live(now) && !finalized,
            finalized,
            mcp_sessions: self.mcp_seen.get(key).copied().unwrap_or(0),
        })
    }

    /// An operator's action on a live work session (as admin.lua does it); `false` when it is not
    /// live.
    pub(super) fn act(
        &mut self,
        keys: &Keys,
        id: &WorkSessionId,
        action: &AdminAction,
        lifetimes: &Lifetimes,
        now: u64,
    ) -> bool {
        let key = keys.work_session(id);
        if self.finalized.contains_key(&key) {
            return false;
        }
        let Some(entry) = self.sessions.get_mut(&key).filter(|e| e.live(now)) else {
            return false;
        };
        match action {
            AdminAction::Rebind(project) => {
                // The newest of the recent projects now, as admin.lua scores it.
                entry.value.project = project.clone();
                let recent = lifetimes.recent_projects;
                self.zadd(keys.recent(), project.to_string(), now, recent, now);
            }
            // Due now, and its last activity an idle TTL ago, as admin.lua writes it: the one
            // liveness rule (last activity + idle TTL > now) says it is over.
            AdminAction::End => {
                entry.expires = now.saturating_sub(ms(lifetimes.refresh));
                entry.value.last_active_ms = now.saturating_sub(ms(lifetimes.idle));
            }
        }
        true
    }

    /// Hands out up to `count` events: unacknowledged ones whose backoff has passed first (or to
    /// the dead letters when their attempts are spent), then new ones.
    pub(super) fn take_events(
        &mut self,
        count: usize,
        policy: &Redelivery,
        now: u64,
    ) -> Vec<Delivery> {
        let stale: Vec<(String, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, (_, taken, deliveries))| {
                now.saturating_sub(*taken) >= ms(policy.backoff(*deliveries))
            })
            .map(|(id, (_, _, deliveries))| (id.clone(), *deliveries))
            .collect();
        let mut out = Vec::new();
        for (id, deliveries) in stale {
            if deliveries >= u64::from(policy.attempts) {
                let why = format!("not acknowledged after {deliveries} deliveries");
                self.bury(&id, &why, now);
            } else if out.len() < count
                && let Some(entry) = self.in_flight.get_mut(&id)
            {
                entry.0.redeliveries = deliveries;
                entry.1 = now;
                entry.2 += 1;
                out.push(entry.0.clone());
            }
        }
        while out.len() < count {
            let Some(delivery) = self.pending.pop_front() else {
                break;
            };
            self.in_flight
                .insert(delivery.id.clone(), (delivery.clone(), now, 1));
            out.push(delivery);
        }
        out
    }

    /// Moves an unacknowledged event to the dead letters (at `now`, ms).
    pub(super) fn bury(&mut self, id: &str, reason: &str, now: u64) {
        if let Some((delivery, _, deliveries)) = self.in_flight.remove(id) {
            self.dead.push(DeadLetter {
                id: delivery.id,
                event: delivery.event,
                reason: reason.to_owned(),
                deliveries,
                dead_ms: now,
            });
        }
    }

    /// Queues a dead letter again as a new event.
    pub(super) fn replay(&mut self, id: &str) -> bool {
        let Some(index) = self.dead.iter().position(|d| d.id == id) else {
            return false;
        };
        let dead = self.dead.remove(index);
        self.push_event(dead.event);
        true
    }
}
