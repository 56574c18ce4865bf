//! The memory store's finalization and operator views: idle work sessions claimed once, their events
//! queued and handed out until acknowledged (stale ones handed out again), and the status of one work
//! session as an operator sees it.

use std::time::{Duration, Instant};

use super::{Maps, wall_clock_ms};
use crate::finalize::{Delivery, Finalized};
use crate::store::Status;

impl Maps {
    /// Marks idle work sessions finalized and queues their events; returns how many.
    pub(super) fn claim_expired(&mut self, limit: usize, now: Instant) -> usize {
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|(key, e)| !e.live(now) && !self.finalized.contains(*key))
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
                finalized_ms: wall_clock_ms(),
                calls: session.calls,
            };
            self.next_event += 1;
            self.pending.push_back(Delivery {
                id: format!("{}-0", self.next_event),
                event,
                redeliveries: 0,
            });
            self.finalized.insert(key.clone());
        }
        due.len()
    }

    pub(super) fn status(&self, key: &str, now: Instant) -> Option<Status> {
        let entry = self.sessions.get(key)?;
        let finalized = self.finalized.contains(key);
        Some(Status {
            session: entry.value.clone(),
            live: entry.live(now) && !finalized,
            finalized,
            mcp_sessions: self.mcp_seen.get(key).copied().unwrap_or(0),
        })
    }

    /// Hands out up to `count` events: stale in-flight ones first, then new ones.
    pub(super) fn take_events(
        &mut self,
        count: usize,
        stale: Duration,
        now: Instant,
    ) -> Vec<Delivery> {
        let stale_ids: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, (_, taken))| now.duration_since(*taken) >= stale)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale_ids {
            if let Some((mut delivery, _)) = self.in_flight.remove(&id) {
                delivery.redeliveries += 1;
                self.pending.push_front(delivery);
            }
        }
        let mut out = Vec::new();
        while out.len() < count {
            let Some(delivery) = self.pending.pop_front() else {
                break;
            };
            self.in_flight
                .insert(delivery.id.clone(), (delivery.clone(), now));
            out.push(delivery);
        }
        out
    }
}
