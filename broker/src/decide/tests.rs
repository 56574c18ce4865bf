//! The decision table: each row is a situation a client can put the broker in, and what it must do.

use serde_json::json;

use super::*;
use crate::ids::{PrincipalId, Surface, WorkSessionId};
use crate::resolve::{Found, UnkeyedPolicy};
use crate::store::McpState;

const NOW: u64 = 50_000_000;

fn ws(project: &str) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: PrincipalId::parse("ab".repeat(16)).expect("p"),
        surface: Surface::parse("claude-ai").expect("s"),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: 0,
        last_active_ms: NOW - 1_000,
        calls: 0,
        backends: Default::default(),
    }
}

fn select(project: &str) -> Tool {
    Tool::Select(SelectArg::Project(Project::parse(project).expect("p")))
}

fn facts<'a>(tool: Tool, answer: Option<&'a Answer>) -> Facts<'a> {
    Facts {
        tool,
        handle: HandleFact::Absent,
        keyed: false,
        answer,
        unkeyed: Unkeyed {
            policy: UnkeyedPolicy::Guarded,
            window_ms: 600_000,
            now_ms: NOW,
        },
        cap: 2,
        backend: Backend::Stateful,
        selector: Selector {
            principal: PrincipalId::parse("ab".repeat(16)).expect("p"),
            surface: Surface::parse("claude-ai").expect("s"),
            conversation: None,
            now_ms: NOW,
        },
    }
}

/// A decision in a few words, for the table.
fn summary(decision: &Decision) -> String {
    match decision {
        Decision::Refuse(refusal) => format!("refuse {}", refusal.label()),
        Decision::UnknownSession => "404".into(),
        Decision::Forward(f) => {
            let bound = f
                .bound
                .as_ref()
                .map(|b| b.project.to_string())
                .unwrap_or_else(|| "-".into());
            let route = match f.route {
                Route::Own => "own",
                Route::Work { replay: true } => "work+replay",
                Route::Work { replay: false } => "work",
                Route::None => "none",
            };
            let mut text = format!("forward {bound} {route}");
            if f.touch {
                text.push_str(" touch");
            }
            if let Some(plan) = &f.select {
                text.push_str(if plan.created {
                    " bind-new"
                } else {
                    " bind-same"
                });
            }
            text
        }
    }
}

fn answer(found: Found) -> Answer {
    Answer {
        found,
        mcp: McpState::default(),
        live_count: 0,
        recorded: false,
    }
}

#[test]
fn the_decision_table() {
    let alpha = ws("alpha");
    let linked = answer(Found {
        linked: Some(alpha.clone()),
        ..Default::default()
    });
    let nothing = answer(Found::default());
    let two_live = answer(Found {
        surface_live: vec![ws("alpha"), ws("beta")],
        ..Default::default()
    });
    let ended = Answer {
        mcp: McpState {
            ended: true,
            ..Default::default()
        },
        ..linked.clone()
    };
    let full = Answer {
        live_count: 2,
        ..nothing.clone()
    };
    let full_but_linked = Answer {
        live_count: 2,
        ..linked.clone()
    };
    let keyed_elsewhere = Facts {
        keyed: true,
        ..facts(Tool::NeedsProject, Some(&linked))
    };
    let refused_handle = Facts {
        handle: HandleFact::Refused("it belongs to another credential".into()),
        ..facts(Tool::NeedsProject, Some(&linked))
    };
    let stateless = Facts {
        backend: Backend::Sessionless,
        ..facts(Tool::NeedsProject, Some(&linked))
    };
    let stateless_select = Facts {
        backend: Backend::Sessionless,
        ..facts(select("beta"), Some(&linked))
    };
    let refused_scoped = Facts {
        handle: HandleFact::Refused("it belongs to another credential".into()),
        ..facts(Tool::Scoped, Some(&linked))
    };
    let bad = Tool::Select(SelectArg::Unusable(
        "the name argument must be a string".into(),
    ));
    #[rustfmt::skip]
    let rows: Vec<(&str, Facts<'_>, &str)> = vec![
        ("store down: a project tool is refused", facts(Tool::NeedsProject, None), "refuse store_unavailable"),
        ("store down: a select is refused", facts(select("alpha"), None), "refuse store_unavailable"),
        ("store down: an exempt tool goes through unbound", facts(Tool::Exempt, None), "forward - own"),
        ("an ended MCP session is unknown", facts(Tool::NeedsProject, Some(&ended)), "404"),
        ("resolved: touch, then its own backend session, replayed if new", facts(Tool::NeedsProject, Some(&linked)), "forward alpha work+replay touch"),
        ("resolved exempt: touch, on the project-less own session", facts(Tool::Exempt, Some(&linked)), "forward alpha own touch"),
        ("nothing selected: asked", facts(Tool::NeedsProject, Some(&nothing)), "refuse no_project"),
        ("nothing selected, exempt: unbound", facts(Tool::Exempt, Some(&nothing)), "forward - own"),
        ("two live projects: ambiguous", facts(Tool::NeedsProject, Some(&two_live)), "refuse ambiguous"),
        ("a new key is asked, not given the MCP session's project", keyed_elsewhere, "refuse no_project"),
        ("a refused handle", refused_handle, "refuse handle_refused"),
        ("select, nothing resolved: a new work session", facts(select("beta"), Some(&nothing)), "forward beta work bind-new"),
        ("select of the resolved project: the work session goes on", facts(select("alpha"), Some(&linked)), "forward alpha work bind-same"),
        ("select of another project: a new work session", facts(select("beta"), Some(&linked)), "forward beta work bind-new"),
        ("select past the cap is refused before the backend", facts(select("beta"), Some(&full)), "refuse too_many"),
        ("select continuing a work session at the cap is fine", facts(select("alpha"), Some(&full_but_linked)), "forward alpha work bind-same"),
        ("select that cannot be bound as sent is not run", facts(bad, Some(&nothing)), "refuse bad_select"),
        ("stateless backend: bound, headers, no backend session", stateless, "forward alpha none touch"),
        ("stateless backend: a select binds, no backend session", stateless_select, "forward beta none bind-new"),
        ("a scoped request, resolved: on the work session's backend session", facts(Tool::Scoped, Some(&linked)), "forward alpha work+replay touch"),
        ("a scoped request, nothing selected: unbound, on the own session", facts(Tool::Scoped, Some(&nothing)), "forward - own"),
        ("a scoped request, ambiguous: unbound, on the own session", facts(Tool::Scoped, Some(&two_live)), "forward - own"),
        ("a scoped request, store down: unbound, on the own session", facts(Tool::Scoped, None), "forward - own"),
        ("a scoped request with a refused handle is refused", refused_scoped, "refuse handle_refused"),
    ];
    for (what, facts, want) in rows {
        assert_eq!(summary(&decide(&facts)), want, "{what}");
    }
}

#[test]
fn select_arguments_are_bound_exactly_as_sent() {
    let read = |v: serde_json::Value| SelectArg::read(Some(&v), "name");
    assert_eq!(
        read(json!("beta")),
        SelectArg::Project(Project::parse("beta").expect("p"))
    );
    for unusable in [
        json!("beta\u{1f}"),
        json!(" beta"),
        json!(7),
        json!(null),
        json!(""),
    ] {
        assert!(
            matches!(read(unusable.clone()), SelectArg::Unusable(_)),
            "{unusable}"
        );
    }
    assert!(matches!(
        SelectArg::read(None, "name"),
        SelectArg::Unusable(_)
    ));
}

#[test]
fn project_scoped_methods() {
    for method in [
        "resources/read",
        "prompts/get",
        "completion/complete",
        "tools/list",
    ] {
        assert!(is_project_scoped(method), "{method}");
    }
    for method in [
        "tools/call",
        "initialize",
        "ping",
        "notifications/cancelled",
        "logging/setLevel",
    ] {
        assert!(!is_project_scoped(method), "{method}");
    }
}

#[test]
fn protocol_eras() {
    assert!(is_sessionless(Some("2026-07-28")));
    assert!(!is_sessionless(Some("2025-11-25")));
    assert!(!is_sessionless(None));
}

/// A store may record a call in the work session its lookup settles on only when the decision then
/// forwards it bound to that work session with `touch`: checked for every tool and handle, with the
/// work session found by each pointer the lookup settles on, whatever else the store found.
#[test]
fn a_call_recorded_with_its_lookup_is_always_forwarded_bound_and_touched() {
    let alpha = ws("alpha");
    let others = Found {
        surface_live: vec![ws("beta"), ws("gamma")],
        ..Default::default()
    };
    let tools = [
        Tool::NeedsProject,
        Tool::Exempt,
        Tool::Scoped,
        select("alpha"),
        Tool::Select(SelectArg::Unusable("x".into())),
    ];
    let handles = [
        HandleFact::Absent,
        HandleFact::Verified,
        HandleFact::Refused("bad".into()),
    ];
    for tool in &tools {
        for handle in &handles {
            if !record_with_lookup(tool, handle) {
                continue;
            }
            // The pointer the lookup settles on, as the store would: the handle's work session,
            // else the conversation's when keyed, else the link's.
            for keyed in [false, true] {
                let found = match (handle, keyed) {
                    (HandleFact::Verified, _) => Found {
                        handle: Some(alpha.clone()),
                        ..others.clone()
                    },
                    (_, true) => Found {
                        conversation: Some(alpha.clone()),
                        ..others.clone()
                    },
                    (_, false) => Found {
                        linked: Some(alpha.clone()),
                        ..others.clone()
                    },
                };
                let found = answer(found);
                let mut facts = facts(tool.clone(), Some(&found));
                facts.handle = handle.clone();
                facts.keyed = keyed;
                let case = format!("{tool:?} {handle:?} keyed={keyed}");
                match decide(&facts) {
                    Decision::Forward(f) => {
                        assert!(f.touch, "{case}");
                        assert_eq!(f.bound.map(|b| b.id), Some(alpha.id.clone()), "{case}");
                    }
                    other => panic!("{case}: {}", summary(&other)),
                }
            }
        }
    }
    assert!(!record_with_lookup(&select("alpha"), &HandleFact::Absent));
    assert!(!record_with_lookup(
        &Tool::NeedsProject,
        &HandleFact::Refused("x".into())
    ));
}
