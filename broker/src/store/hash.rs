//! A work session as the field/value pairs of a Redis hash, and back.

use std::collections::HashMap;

use super::StoreError;
use crate::ids::{BackendSessionId, ConversationKey, PrincipalId, Project, Surface, WorkSessionId};
use crate::session::{BackendSessions, WorkSession};

/// Field/value pairs of a work session's hash.
pub type Fields = Vec<(String, String)>;

/// What a bind writes into a work session's hash that may already hold one, as (fields it sets,
/// fields it sets only where absent). A bind carries the copy its select's lookup read, and calls
/// of the same work session go on meanwhile, so it merges:
/// - it sets what the select decides: id, principal, surface, project, conversation, and the
///   backend sessions it carries (the proxy sends only the one the select just ran on);
/// - it keeps the creation time, and every backend session it does not carry (one a call recorded
///   meanwhile is newer than the copy's);
/// - it never writes the last activity or the call count: the store stamps the one and adds its
///   call to the other, so touches that ran since the copy was read stay counted.
pub fn bind_fields(session: &WorkSession) -> (Fields, Fields) {
    let mut set = vec![
        ("id".to_owned(), session.id.to_string()),
        ("p".to_owned(), session.principal.to_string()),
        ("sf".to_owned(), session.surface.to_string()),
        ("pj".to_owned(), session.project.to_string()),
    ];
    if let Some(conversation) = &session.conversation {
        set.push(("cv".to_owned(), conversation.to_string()));
    }
    for (field, backend) in session.backends.fields() {
        set.push((field.to_owned(), backend.to_string()));
    }
    let keep = vec![("cr".to_owned(), session.created_ms.to_string())];
    (set, keep)
}

/// Reads the flat `HGETALL` array back.
pub fn from_flat(flat: Vec<String>) -> Result<WorkSession, StoreError> {
    from_map(&to_map(flat))
}

/// Reads the flat `HGETALL` array as an operator's view, judged at `now_ms` with `idle_ms`.
pub fn status_from_flat(
    flat: Vec<String>,
    idle_ms: u64,
    now_ms: u64,
) -> Result<super::Status, StoreError> {
    let map = to_map(flat);
    let session = from_map(&map)?;
    let finalized = map.contains_key("f");
    Ok(super::Status {
        live: !finalized && session.last_active_ms + idle_ms > now_ms,
        finalized,
        mcp_sessions: map.get("m").and_then(|m| m.parse().ok()).unwrap_or(0),
        session,
    })
}

fn to_map(flat: Vec<String>) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        map.insert(field, value);
    }
    map
}

fn from_map(map: &HashMap<String, String>) -> Result<WorkSession, StoreError> {
    let get = |name: &str| {
        map.get(name)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("work session without field {name}")))
    };
    let number = |name: &str| -> Result<u64, StoreError> {
        get(name)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("work session field {name} is not a number")))
    };
    let corrupt = |e: crate::ids::IdError| StoreError::Corrupt(e.to_string());
    let mut backends = BackendSessions::default();
    for (field, value) in map {
        if field.starts_with(BackendSessions::FIELD_PREFIX) {
            let session = BackendSessionId::parse(value.clone()).map_err(corrupt)?;
            backends.insert_field(field.clone(), session);
        }
    }
    Ok(WorkSession {
        id: WorkSessionId::parse(get("id")?).map_err(corrupt)?,
        principal: PrincipalId::parse(get("p")?).map_err(corrupt)?,
        surface: Surface::parse(get("sf")?).map_err(corrupt)?,
        conversation: map
            .get("cv")
            .map(|c| ConversationKey::parse(c.clone()))
            .transpose()
            .map_err(corrupt)?,
        project: Project::parse(get("pj")?).map_err(corrupt)?,
        created_ms: number("cr")?,
        last_active_ms: number("la")?,
        calls: number("n")?,
        backends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let session = WorkSession {
            id: WorkSessionId::random(),
            principal: PrincipalId::parse("ab".repeat(16)).expect("p"),
            surface: Surface::parse("claude-ai").expect("s"),
            conversation: Some(ConversationKey::parse("cd".repeat(16)).expect("c")),
            project: Project::parse("linkedin").expect("p"),
            created_ms: 1,
            last_active_ms: 2,
            calls: 3,
            backends: Default::default(),
        };
        let mut session = session;
        session.backends.insert_field(
            BackendSessions::field(
                &crate::ids::UpstreamId::parse("ab".repeat(8)).expect("u"),
                &session.project,
            ),
            BackendSessionId::parse("backend-1").expect("b"),
        );
        // What a bind writes, and what the store adds (its clock, the call count).
        let (set, keep) = bind_fields(&session);
        let stamped = [("la", "2"), ("n", "3")].map(|(f, v)| (f.to_owned(), v.to_owned()));
        let flat: Vec<String> = set
            .into_iter()
            .chain(keep)
            .chain(stamped)
            .flat_map(|(f, v)| [f, v])
            .collect();
        assert_eq!(from_flat(flat.clone()).expect("decodes"), session);
        let broken: Vec<String> = flat.into_iter().take(4).collect();
        assert!(from_flat(broken).is_err());
    }
}
