//! The id table: which ids go where, and what a forged or foreign id gets.

use serde_json::json;

use super::*;

fn principal(c: char) -> PrincipalId {
    PrincipalId::parse(c.to_string().repeat(32)).unwrap_or_else(|e| panic!("{e}"))
}

fn session(c: char) -> McpSessionId {
    McpSessionId::parse(c.to_string().repeat(32)).unwrap_or_else(|e| panic!("{e}"))
}

fn asked(p: char, backend: &str, id: RequestId) -> Asked {
    Asked {
        principal: principal(p),
        upstream: UpstreamId::parse("0123456789abcdef").unwrap_or_else(|e| panic!("{e}")),
        backend: BackendSessionId::parse(backend).unwrap_or_else(|e| panic!("{e}")),
        id,
    }
}

#[test]
fn client_ids_map_to_ids_no_other_session_or_request_gets() {
    let (a, b) = (principal('a'), principal('b'));
    let (s1, s2) = (session('1'), session('2'));
    let one = RequestId::Number(1);
    let on = |principal, session| Scope::Session { principal, session };
    // (scope, client id) -> upstream id: equal exactly when the scope and the id are equal.
    let rows = [
        (on(&a, &s1), one.clone()),
        (on(&a, &s2), one.clone()),
        (on(&b, &s1), one.clone()),
        (on(&a, &s1), RequestId::Number(2)),
        (on(&a, &s1), RequestId::Text("1".into())),
        (Scope::Request { nonce: "n1" }, one.clone()),
        (Scope::Request { nonce: "n2" }, one.clone()),
    ];
    let mapped: Vec<RequestId> = rows.iter().map(|(s, id)| upstream_id(*s, id)).collect();
    for (i, x) in mapped.iter().enumerate() {
        assert!(is_upstream_id(x), "{x:?}");
        for (j, y) in mapped.iter().enumerate() {
            assert_eq!(i == j, x == y, "rows {i} and {j}: {x:?} {y:?}");
        }
    }
    // The same client id on the same MCP session maps the same way again (a later cancellation).
    assert_eq!(upstream_id(on(&a, &s1), &one), mapped[0]);
    assert!(!is_upstream_id(&RequestId::Number(1)));
    assert!(!is_upstream_id(&RequestId::Text(
        "session-broker-replay-1".into()
    )));
}

/// (what, the sealer that opens, the id, the caller, what opening gives).
type Row<'a> = (
    &'a str,
    &'a Sealer,
    RequestId,
    PrincipalId,
    Result<Asked, Unsealed>,
);

#[test]
fn sealed_ids_open_only_for_their_principal_and_unaltered() {
    let sealer = Sealer::new(b"a signing secret of enough bytes!");
    let other_key = Sealer::new(b"another signing secret, same size");
    let asked_a = asked('a', "backend-session-1", RequestId::Number(0));
    let sealed = sealer.seal(&asked_a);
    let RequestId::Text(text) = &sealed else {
        panic!("a sealed id is text")
    };
    let tampered = {
        let mut payload = serde_json::to_value(&asked_a).unwrap_or_default();
        payload["b"] = json!("backend-session-2");
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
        let tag = text.rsplit('.').next().unwrap_or_default();
        RequestId::Text(format!("{SERVER_PREFIX}{forged}.{tag}"))
    };
    let no_tag = RequestId::Text(
        text.rsplit_once('.')
            .map(|(p, _)| format!("{p}."))
            .unwrap_or_default(),
    );
    let rows: Vec<Row<'_>> = vec![
        (
            "its own principal",
            &sealer,
            sealed.clone(),
            principal('a'),
            Ok(asked_a.clone()),
        ),
        (
            "another principal",
            &sealer,
            sealed.clone(),
            principal('b'),
            Err(Unsealed::Foreign),
        ),
        (
            "another broker's key",
            &other_key,
            sealed.clone(),
            principal('a'),
            Err(Unsealed::Forged),
        ),
        (
            "payload altered",
            &sealer,
            tampered,
            principal('a'),
            Err(Unsealed::Forged),
        ),
        (
            "tag removed",
            &sealer,
            no_tag,
            principal('a'),
            Err(Unsealed::Forged),
        ),
        (
            "garbage after the prefix",
            &sealer,
            RequestId::Text(format!("{SERVER_PREFIX}x.y")),
            principal('a'),
            Err(Unsealed::Forged),
        ),
        (
            "too long",
            &sealer,
            RequestId::Text(format!("{SERVER_PREFIX}{}", "a".repeat(MAX_SEALED))),
            principal('a'),
            Err(Unsealed::Forged),
        ),
        (
            "a client's own number",
            &sealer,
            RequestId::Number(7),
            principal('a'),
            Err(Unsealed::NotSealed),
        ),
        (
            "a client's own text",
            &sealer,
            RequestId::Text("abc".into()),
            principal('a'),
            Err(Unsealed::NotSealed),
        ),
        (
            "an upstream id",
            &sealer,
            upstream_id(Scope::Request { nonce: "n" }, &RequestId::Number(1)),
            principal('a'),
            Err(Unsealed::NotSealed),
        ),
    ];
    for (what, sealer, id, caller, expected) in rows {
        assert_eq!(sealer.open(&id, &caller), expected, "{what}");
    }
}

#[test]
fn sealed_ids_keep_text_and_number_ids_apart() {
    let sealer = Sealer::new(b"a signing secret of enough bytes!");
    for id in [RequestId::Number(3), RequestId::Text("3".into())] {
        let opened = sealer.open(&sealer.seal(&asked('a', "b", id.clone())), &principal('a'));
        assert_eq!(opened.map(|a| a.id), Ok(id));
    }
}

#[test]
fn messages_are_told_apart_by_shape() {
    let rows = [
        (
            json!({"jsonrpc":"2.0","id":1,"result":{}}),
            None,
            Some(RequestId::Number(1)),
            None,
        ),
        (
            json!({"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}),
            None,
            Some(RequestId::Text("x".into())),
            None,
        ),
        (
            json!({"jsonrpc":"2.0","id":0,"method":"elicitation/create","params":{}}),
            Some(RequestId::Number(0)),
            None,
            None,
        ),
        (
            json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}}),
            None,
            None,
            None,
        ),
        (
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}),
            None,
            None,
            Some(RequestId::Number(4)),
        ),
        (json!({"jsonrpc":"2.0","id":2}), None, None, None),
    ];
    for (message, server, response, cancelled) in rows {
        assert_eq!(request_id(&message), server, "{message}");
        assert_eq!(response_id(&message), response, "{message}");
        assert_eq!(cancelled_request_id(&message), cancelled, "{message}");
    }
}

#[test]
fn ids_are_set_in_place() {
    let mut reply = json!({"jsonrpc":"2.0","id":"msb-c-1","result":{}});
    set_id(&mut reply, &RequestId::Number(1));
    assert_eq!(reply["id"], json!(1));
    let mut cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}});
    set_cancelled_request_id(&mut cancel, &RequestId::Text("msb-c-2".into()));
    assert_eq!(cancel["params"]["requestId"], json!("msb-c-2"));
}
