//! Who owns the ids, tested: in-flight registrations released with their map, replies given the
//! client's id back once answered.

use serde_json::json;

use super::*;

fn key(id: i64) -> Key {
    let p = PrincipalId::parse("a".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
    let s = McpSessionId::parse("b".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
    (p, s, RequestId::Number(id))
}

fn running() -> Running {
    Running {
        backend: BackendSessionId::parse("backend").unwrap_or_else(|e| panic!("{e}")),
        upstream_id: RequestId::Text("msb-c-1".into()),
    }
}

#[test]
fn an_entry_in_flight_is_never_overwritten_and_leaves_with_its_map() {
    let in_flight = Arc::new(InFlight::default());
    assert!(in_flight.register(key(1), running()));
    assert!(
        !in_flight.register(key(1), running()),
        "a reused id is not registered twice"
    );
    let ids = IdMap {
        pairs: Vec::new(),
        registered: vec![key(1)],
        in_flight: Some(in_flight.clone()),
    };
    assert_eq!(in_flight.len(), 1);
    drop(ids);
    assert_eq!(in_flight.len(), 0);
}

#[test]
fn replies_get_the_client_id_back_once_answered() {
    let mut ids = IdMap::default();
    ids.pairs.push(Pair {
        upstream: RequestId::Text("msb-c-x".into()),
        client: RequestId::Number(1),
        answered: false,
    });
    let mut progress =
        json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1}});
    assert!(!ids.to_client(None, &mut progress));
    let mut other = json!({"jsonrpc":"2.0","id":"msb-c-y","result":{}});
    assert!(!ids.to_client(None, &mut other));
    assert_eq!(ids.unanswered(), vec![RequestId::Text("msb-c-x".into())]);
    let mut reply = json!({"jsonrpc":"2.0","id":"msb-c-x","result":{}});
    assert!(ids.to_client(None, &mut reply));
    assert_eq!(reply["id"], json!(1));
    assert!(ids.unanswered().is_empty());
}
