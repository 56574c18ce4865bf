//! What a select's reply settles. The relay hands the reply of a watched select to its hook; the
//! hook asks here whether to bind, what to bind, and what the client then reads. Pure, table-tested.
//!
//! 1. The backend refused the select (an error, or a result with `isError`): nothing is bound, the
//!    reply reaches the client as the backend wrote it.
//! 2. It succeeded: the planned work session is bound, holding only the backend session that ran
//!    the select (the plan's other backend sessions are a copy that calls may have replaced since;
//!    the store keeps what it holds for them).
//! 3. The bind's outcome: bound, the reply gains the handle for the model; refused by the cap (a
//!    concurrent select took the last work session), or not recorded (the store failed), the reply
//!    becomes a tool error that says so, since the backend selected but the broker did not record it.

use serde_json::Value;

use crate::guidance;
use crate::session::{BackendSessions, WorkSession};
use crate::store::{BackendRef, StoreError};

/// Whether the backend ran the select: bind only then.
pub fn succeeded(reply: &Value) -> bool {
    crate::mcp::call_succeeded(reply)
}

/// The work session to bind after the select ran on `backend`.
pub fn to_bind(plan: &WorkSession, backend: Option<&BackendRef>) -> WorkSession {
    let mut bound = plan.clone();
    bound.backends = BackendSessions::default();
    if let Some(backend) = backend {
        let field = BackendSessions::field(&backend.upstream, &plan.project);
        bound.backends.insert_field(field, backend.session.clone());
    }
    bound
}

/// What the client reads after the bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Bound: this text item is appended to the reply (the handle for the model).
    Bound { append: String },
    /// The cap refused it: the reply becomes a tool error with this text.
    TooMany { cap: u64, text: String },
    /// The store failed: the reply becomes a tool error with this text.
    NotRecorded { text: String },
}

/// Settles a select whose bind of `plan` ended in `bind`; `handle`: the model's handle for it.
pub fn after_bind(bind: Result<(), &StoreError>, plan: &WorkSession, handle: &str) -> Settlement {
    match bind {
        Ok(()) => Settlement::Bound {
            append: guidance::handle_item(handle),
        },
        Err(StoreError::TooMany(cap)) => Settlement::TooMany {
            cap: *cap,
            text: guidance::too_many_unbound(*cap),
        },
        Err(_) => Settlement::NotRecorded {
            text: guidance::select_not_recorded(&plan.project),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::ids::{BackendSessionId, PrincipalId, Project, Surface, UpstreamId, WorkSessionId};

    fn plan() -> WorkSession {
        let mut plan = WorkSession {
            id: WorkSessionId::random(),
            principal: PrincipalId::parse("ab".repeat(16)).expect("p"),
            surface: Surface::parse("claude-ai").expect("s"),
            conversation: None,
            project: Project::parse("atlas").expect("project"),
            created_ms: 0,
            last_active_ms: 0,
            calls: 0,
            backends: Default::default(),
        };
        // A copy of a backend session for another project, which a call may have replaced since.
        let other = BackendSessions::field(
            &UpstreamId::parse("a1").expect("u"),
            &Project::parse("other").expect("p"),
        );
        plan.backends
            .insert_field(other, BackendSessionId::parse("old").expect("b"));
        plan
    }

    #[test]
    fn bind_only_what_the_backend_selected() {
        let rows = [
            (
                json!({"result":{"content":[{"type":"text","text":"ok"}]}}),
                true,
            ),
            (json!({"result":{"content":[],"isError":true}}), false),
            (
                json!({"error":{"code":-32602,"message":"no such project"}}),
                false,
            ),
        ];
        for (reply, bind) in rows {
            assert_eq!(succeeded(&reply), bind, "{reply}");
        }
    }

    #[test]
    fn the_bound_work_session_holds_only_the_backend_session_that_selected() {
        let plan = plan();
        let ran_on = BackendRef {
            upstream: UpstreamId::parse("a1").expect("u"),
            session: BackendSessionId::parse("s1").expect("b"),
        };
        let bound = to_bind(&plan, Some(&ran_on));
        let fields: Vec<(String, String)> = bound
            .backends
            .fields()
            .map(|(f, s)| (f.to_owned(), s.as_str().to_owned()))
            .collect();
        let expected = BackendSessions::field(&ran_on.upstream, &plan.project);
        assert_eq!(fields, vec![(expected, "s1".to_owned())]);
        assert_eq!(
            (bound.id, bound.project),
            (plan.id.clone(), plan.project.clone())
        );
        assert!(to_bind(&plan, None).backends.fields().next().is_none());
    }

    #[test]
    fn what_the_client_reads_after_the_bind() {
        let plan = plan();
        let rows = [
            (Ok(()), "Bound"),
            (Err(StoreError::TooMany(3)), "TooMany"),
            (Err(StoreError::Unavailable("down".into())), "NotRecorded"),
            (
                Err(StoreError::Timeout(Duration::from_millis(5))),
                "NotRecorded",
            ),
            (Err(StoreError::Ended), "NotRecorded"),
        ];
        for (bind, kind) in rows {
            let settled = after_bind(bind.as_ref().map(|_| ()), &plan, "h.1");
            let got = match &settled {
                Settlement::Bound { append } => {
                    assert!(append.contains("h.1"));
                    "Bound"
                }
                Settlement::TooMany { cap, text } => {
                    assert_eq!(*cap, 3);
                    assert!(text.contains('3'));
                    "TooMany"
                }
                Settlement::NotRecorded { text } => {
                    assert!(text.contains("atlas"));
                    "NotRecorded"
                }
            };
            assert_eq!(got, kind, "{bind:?}");
        }
    }
}
