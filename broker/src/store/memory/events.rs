//! The memory store's finalization and operator views: idle work sessions claimed once, their events
//! queued and handed out until acknowledged (unacknowledged ones again after their backoff, until
//! their attempts are spent: then they become dead letters), the status of one work session as
//! an operator sees it, and an operator's rebind and end.

use std::num::NonZeroU64;

use super::Maps;
use super::packed::Packed;
use crate::finalize::{DeadLetter, Delivery, Finalized, Redelivery};
use crate::ids::{PrincipalId, WorkSessionId};
use crate::store::clock::ms;
use crate::store::{AdminAction, Lifetimes, Status};

impl Maps {
    /// Marks idle work sessions finalized and queues their events; returns how many. `now` is the
    /// store clock's (ms), as every time below. A work session is due `refresh` after its idle TTL
    /// ran out (Lifetimes::refresh: as its deadline in Redis).
    ///
    /// It visits only the entries of the deadline index whose time has passed ([`Deadlines`]), and
    /// judges each work session by its own record: an entry written before a touch moved the
    /// deadline later is pushed again at the new deadline, never finalized early; one whose work
    /// session is gone or already finalized is let go, so each is finalized once.
    ///
    /// [`Deadlines`]: super::deadlines::Deadlines
    pub(super) fn claim_expired(&mut self, limit: usize, now: u64, refresh: u64) -> usize {
        let mut events = Vec::new();
        // Entries to push again once the popping is over (one pushed back at or before `now`
        // would be popped again by this sweep).
        let mut again = Vec::new();
        while events.len() < limit {
            let Some((at, principal, id)) = self.deadlines.pop_due(now) else {
                break;
            };
            #[cfg(test)]
            {
                self.visited += 1;
            }
            let Some(session) = self
                .principals
                .get_mut(&principal)
                .and_then(|record| record.sessions.get_mut(&id))
                .filter(|session| session.finalized.is_none())
            else {
                continue;
            };
            let due = session.expires <= now && session.expires.saturating_add(refresh) <= now;
            if !due {
                again.push((session.expires.saturating_add(refresh), principal, id));
                continue;
            }
            // Restored only for a work session that is due. A validated id always restores; were
            // one not to, its entry stays and it is tried again at the next sweep, as before.
            let (Some(work_session), Some(principal_id)) =
                (id.restore(), principal.restore::<PrincipalId>())
            else {
                again.push((at, principal, id));
                continue;
            };
            events.push(Finalized {
                work_session,
                principal: principal_id,
                surface: session.surface.as_ref().clone(),
                project: session.project.as_ref().clone(),
                started_ms: session.created_ms,
                last_active_ms: session.last_active_ms,
                finalized_ms: now,
                calls: session.calls,
            });
            session.finalized = NonZeroU64::new(now.max(1));
        }
        for (at, principal, id) in again {
            self.deadlines.push(at, &principal, &id);
        }
        let claimed = events.len();
        for event in events {
            self.push_event(event);
        }
        claimed
    }

    fn push_event(&mut self, event: Finalized) {
        self.next_event += 1;
        self.pending.push_back(Delivery {
            id: format!("{}-0", self.next_event),
            event,
            redeliveries: 0,
        });
    }

    /// A work session of the principal as an operator sees it.
    pub(super) fn status(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
        now: u64,
    ) -> Option<Status> {
        let id = Packed::new(id.as_str());
        let record = self.principal(principal)?.sessions.get(&id)?;
        Some(Status {
            session: record.session(&id, principal)?,
            live: record.live(now),
            finalized: record.finalized.is_some(),
            mcp_sessions: record.mcp_sessions,
        })
    }

    /// Every work session of the principal as an operator sees it, newest first (as Redis's index
    /// lists them: equal times in reverse id order).
    pub(super) fn statuses(&self, principal: &PrincipalId, now: u64) -> Vec<Status> {
        let Some(record) = self.principal(principal) else {
            return Vec::new();
        };
        let mut all: Vec<Status> = record
            .sessions
            .iter()
            .filter_map(|(id, record)| {
                Some(Status {
                    session: record.session(id, principal)?,
                    live: record.live(now),
                    finalized: record.finalized.is_some(),
                    mcp_sessions: record.mcp_sessions,
                })
            })
            .collect();
        all.sort_by(|a, b| {
            (b.session.last_active_ms, &b.session.id)
                .cmp(&(a.session.last_active_ms, &a.session.id))
        });
        all
    }

    /// An operator's action on a live work session (as admin.lua does it); `false` when it is not
    /// live.
    pub(super) fn act(
        &mut self,
        principal: &PrincipalId,
        id: &WorkSessionId,
        action: &AdminAction,
        lifetimes: &Lifetimes,
        now: u64,
    ) -> bool {
        let project = match action {
            AdminAction::Rebind(project) => Some(self.names.projects.share(project)),
            AdminAction::End => None,
        };
        let Some(record) = self.principal_mut(principal) else {
            return false;
        };
        let Some(session) = record
            .sessions
            .get_mut(&Packed::new(id.as_str()))
            .filter(|session| session.live(now))
        else {
            return false;
        };
        match project {
            Some(project) => {
                // The newest of the recent projects now, as admin.lua scores it.
                session.project = project.clone();
                record.add_recent(project, now, lifetimes.recent_projects, now);
            }
            // Due now, and its last activity an idle TTL ago, as admin.lua writes it: the one
            // liveness rule (last activity + idle TTL > now) says it is over. Its entry in the
            // deadline index may be later: a new one makes it due at the next sweep (the old one
            // goes when it comes, finding it finalized).
            None => {
                let refresh = ms(lifetimes.refresh);
                let expires = now.saturating_sub(refresh);
                let earlier = expires < session.expires;
                session.expires = expires;
                session.last_active_ms = now.saturating_sub(ms(lifetimes.idle));
                if earlier {
                    let (principal, id) =
                        (Packed::new(principal.as_str()), Packed::new(id.as_str()));
                    self.deadlines
                        .push(expires.saturating_add(refresh), &principal, &id);
                }
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
