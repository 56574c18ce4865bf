//! Deciding one `tools/call` (`broker::decide::decide`) from realistic facts: the steady call of a
//! bound MCP session, a connector's call resolved through its surface, and a select.
//!
//! Run: `cargo bench -p broker --bench decide` (see docs/performance.md).

use std::hint::black_box;

use broker::decide::{self, Backend, Decision, Facts, HandleFact, SelectArg, Tool};
use broker::ids::{PrincipalId, Project, Surface, WorkSessionId};
use broker::resolve::{Found, Selector, Unkeyed, UnkeyedPolicy};
use broker::session::WorkSession;
use broker::store::{Answer, McpState};
use criterion::{Criterion, criterion_group, criterion_main};

const NOW_MS: u64 = 1_800_000_000_000;

fn principal() -> PrincipalId {
    PrincipalId::parse("3f".repeat(16)).expect("a principal")
}

fn surface() -> Surface {
    Surface::parse("claude-ai").expect("a surface")
}

fn work_session(project: &str, idle_ms: u64) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: principal(),
        surface: surface(),
        conversation: None,
        project: Project::parse(project).expect("a project"),
        created_ms: NOW_MS - 3_600_000,
        last_active_ms: NOW_MS - idle_ms,
        calls: 120,
        backends: Default::default(),
    }
}

fn recent() -> Vec<Project> {
    ["linkedin", "innkeeper", "atlas"]
        .iter()
        .map(|p| Project::parse(*p).expect("a project"))
        .collect()
}

fn facts(tool: Tool, answer: &Answer) -> Facts<'_> {
    Facts {
        tool,
        handle: HandleFact::Absent,
        keyed: false,
        answer: Some(answer),
        unkeyed: Unkeyed {
            policy: UnkeyedPolicy::Guarded,
            window_ms: 600_000,
            now_ms: NOW_MS,
        },
        cap: 50,
        backend: Backend::Stateful,
        selector: Selector {
            principal: principal(),
            surface: surface(),
            conversation: None,
            now_ms: NOW_MS,
        },
    }
}

fn bench(c: &mut Criterion) {
    let linked = Answer {
        found: Found {
            linked: Some(work_session("linkedin", 5_000)),
            surface_live: vec![work_session("linkedin", 5_000)],
            recent_projects: recent(),
            ..Found::default()
        },
        mcp: McpState::default(),
        live_count: 1,
        recorded: false,
    };
    let by_surface = Answer {
        found: Found {
            surface_live: vec![
                work_session("linkedin", 20_000),
                work_session("linkedin", 900_000),
            ],
            recent_projects: recent(),
            ..Found::default()
        },
        mcp: McpState::default(),
        live_count: 2,
        recorded: false,
    };
    let select = Tool::Select(SelectArg::Project(
        Project::parse("linkedin").expect("a project"),
    ));
    let mut group = c.benchmark_group("decide");
    for (name, facts) in [
        ("steady_call_linked", facts(Tool::NeedsProject, &linked)),
        (
            "connector_call_surface",
            facts(Tool::NeedsProject, &by_surface),
        ),
        ("select_same_project", facts(select, &linked)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let decision = decide::decide(black_box(&facts));
                assert!(matches!(decision, Decision::Forward(_)));
                decision
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
