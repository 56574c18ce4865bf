//! Finalization: what is recorded when a work session idles out, and what its consumers receive.
//!
//! A work session is finalized exactly once, by whichever replica's sweeper claims it first (the
//! claim is one atomic store operation). Its event is then delivered at least once to the configured
//! actions (webhook, backend tool); the work-session id is the idempotency key.

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
