//! Finalization: what is recorded when a work session idles out, and what its consumers receive.
//!
//! A work session is finalized exactly once, by whichever replica's sweeper claims it first (the
//! claim is one atomic store operation). Its event is then delivered at least once to the configured
//! actions (webhook, backend tool); the work-session id is the idempotency key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{PrincipalId, Project, Surface, WorkSessionId};

/// A finalized work session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalized {
    pub work_session: WorkSessionId,
    /// The principal hash, never the credential.
    pub principal: PrincipalId,
    pub surface: Surface,
    pub project: Project,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub last_active_ms: u64,
    pub finalized_ms: u64,
    pub calls: u64,
}

/// One event handed to a consumer; acknowledge it by `id` once every action succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event: Finalized,
    /// How many times it was handed out before (0 the first time).
    pub redeliveries: u64,
}

/// An event whose actions failed every attempt, kept for an operator to replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// What `replay` takes.
    pub id: String,
    pub event: Finalized,
    /// The last failure.
    pub reason: String,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// Unix milliseconds when it was given up.
    pub dead_ms: u64,
}

/// How unacknowledged events are delivered again: after `after`, doubling with each delivery (at
/// most [`Redelivery::MAX_BACKOFF`]), `attempts` deliveries in all before the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redelivery {
    pub after: Duration,
    pub attempts: u32,
}

impl Redelivery {
    /// The longest wait between two deliveries of one event.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

    /// How long an event delivered `deliveries` times waits, unacknowledged, before the next.
    pub fn backoff(&self, deliveries: u64) -> Duration {
        let doublings = u32::try_from(deliveries.saturating_sub(1).min(20)).unwrap_or(20);
        self.after
            .saturating_mul(1 << doublings)
            .min(Self::MAX_BACKOFF.max(self.after))
    }
}

/// The JSON body a webhook receives.
pub fn webhook_payload(event: &Finalized) -> serde_json::Value {
    serde_json::json!({
        "type": "work_session.finalized",
        "idempotency_key": event.work_session,
        "work_session": event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_backs_off_exponentially_up_to_a_bound() {
        let policy = Redelivery {
            after: Duration::from_secs(30),
            attempts: 8,
        };
        assert_eq!(policy.backoff(0), Duration::from_secs(30));
        assert_eq!(policy.backoff(1), Duration::from_secs(30));
        assert_eq!(policy.backoff(2), Duration::from_secs(60));
        assert_eq!(policy.backoff(4), Duration::from_secs(240));
        assert_eq!(policy.backoff(9), Redelivery::MAX_BACKOFF);
        assert_eq!(policy.backoff(u64::MAX), Redelivery::MAX_BACKOFF);
        let long = Redelivery {
            after: Duration::from_secs(7200),
            attempts: 2,
        };
        assert_eq!(long.backoff(3), Duration::from_secs(7200));
    }

    #[test]
    fn payload_carries_the_idempotency_key_and_no_secret() {
        let event = Finalized {
            work_session: WorkSessionId::random(),
            principal: PrincipalId::parse("ab".repeat(16)).expect("p"),
            surface: Surface::parse("claude-ai").expect("s"),
            project: Project::parse("linkedin").expect("p"),
            started_ms: 1,
            last_active_ms: 2,
            finalized_ms: 3,
            calls: 4,
        };
        let payload = webhook_payload(&event);
        assert_eq!(payload["idempotency_key"], event.work_session.as_str());
        assert_eq!(payload["work_session"]["project"], "linkedin");
        assert_eq!(payload["work_session"]["calls"], 4);
    }
}
