//! The words a model reads when a call cannot go through: what happened and what to do next.
//!
//! Every text starts with `session-broker: ` so a reader can tell the broker's refusals from the
//! backend's own errors.

use crate::ids::Project;

fn list(projects: &[Project]) -> String {
    projects
        .iter()
        .map(Project::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// No work session: tell the model how to select one.
pub fn no_project(select_tool: &str, select_arg: &str, recent: &[Project]) -> String {
    let mut text = format!(
        "session-broker: no project is selected for this conversation. Call {select_tool} with {select_arg}=<project> first."
    );
    if !recent.is_empty() {
        text.push_str(&format!(" Recent projects: {}.", list(recent)));
    }
    text
}

/// Several projects live on the surface and the call names none.
pub fn ambiguous(select_tool: &str, projects: &[Project]) -> String {
    format!(
        "session-broker: several projects are live for this client ({}) and this call names no work session. \
         Pass the work_session value from your {select_tool} reply, or call {select_tool} again.",
        list(projects)
    )
}

/// The `work_session` handle could not be used.
pub fn handle_refused(select_tool: &str, reason: &str) -> String {
    format!(
        "session-broker: the work_session handle was refused: {reason}. Call {select_tool} again."
    )
}

/// The credential already has as many live work sessions as allowed.
pub fn too_many(limit: u64) -> String {
    format!(
        "session-broker: this credential already has {limit} live work sessions, the most allowed; nothing was run. \
         Continue one of them by passing its work_session value, or wait until one goes idle."
    )
}

/// The select's project argument cannot be bound as sent, so it was not run.
pub fn bad_select(select_tool: &str, reason: &str) -> String {
    format!(
        "session-broker: {select_tool} was not run: {reason}. Call it again with the project's name exactly as listed."
    )
}

/// The backend ran the select but the broker could not record it: say so, honestly.
pub fn select_not_recorded(project: &Project) -> String {
    format!(
        "session-broker: the server selected {project}, but the session store could not record it, so later \
         calls cannot be tied to it. Call the select tool again in a moment."
    )
}

/// The select ran at the server, but the credential reached its cap of live work sessions meanwhile
/// (a concurrent select took the last one), so the broker started no work session for it.
pub fn too_many_unbound(limit: u64) -> String {
    format!(
        "session-broker: this credential already has {limit} live work sessions, the most allowed, so this \
         selection was not recorded and no work session was started. Continue one of them by passing its \
         work_session value, or wait until one goes idle."
    )
}

/// The store could not be reached, so nothing was decided.
pub fn store_unavailable() -> String {
    "session-broker: the session store is unavailable, so the project of this conversation cannot be \
     confirmed; nothing was run. Try again in a moment."
        .to_owned()
}

/// The backend refused to restore the project on a new backend session.
pub fn replay_failed(project: &Project, detail: &str) -> String {
    format!(
        "session-broker: the project {project} could not be restored on the server ({detail}); nothing was run."
    )
}

/// The text item appended to a successful select reply.
pub fn handle_item(handle: &str) -> String {
    format!("work_session: {handle}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_the_way_out() {
        let p = |s| Project::parse(s).expect("p");
        assert_eq!(
            no_project("select_project_for_session", "name", &[p("a"), p("b")]),
            "session-broker: no project is selected for this conversation. Call select_project_for_session with name=<project> first. Recent projects: a, b."
        );
        assert!(
            ambiguous("sel", &[p("innkeeper"), p("linkedin")]).starts_with(
                "session-broker: several projects are live for this client (innkeeper, linkedin)"
            )
        );
        assert!(handle_refused("sel", "it has ended").contains("refused: it has ended."));
    }
}
