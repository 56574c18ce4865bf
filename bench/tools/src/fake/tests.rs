//! The fake upstream answers a whole session the way the broker expects.

use super::*;

fn post<'a>(session: Option<&'a str>, project: Option<&'a str>, body: &'a str) -> Request<'a> {
    Request {
        method: "POST",
        session,
        project_header: project,
        body: body.as_bytes(),
    }
}

fn text(reply: &Reply) -> String {
    String::from_utf8(reply.body.clone()).expect("utf-8 body")
}

#[test]
fn a_session_selects_then_calls() {
    let mut fake = Fake::new(false, 10);
    let init = fake.handle(post(
        None,
        None,
        r#"{"jsonrpc":"2.0","id":"i-1","method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
    ));
    assert_eq!(init.status, 200);
    assert!(text(&init).contains(r#""id":"i-1""#), "{}", text(&init));
    assert!(text(&init).contains(r#""protocolVersion":"2025-03-26""#));
    let sid = init.session.expect("a session id");

    let note = fake.handle(post(
        Some(&sid),
        None,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ));
    assert_eq!((note.status, note.body.len()), (202, 0));

    let before = fake.handle(post(
        Some(&sid),
        None,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_last_handover","arguments":{}}}"#,
    ));
    assert!(text(&before).contains("project=none header=none"));

    let select = fake.handle(post(
        Some(&sid),
        None,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"select_project_for_session","arguments":{"name":"linkedin"}}}"#,
    ));
    assert!(text(&select).contains("Selected project linkedin"));
    assert!(text(&select).contains(r#""isError":false"#));

    let call = fake.handle(post(
        Some(&sid),
        Some("linkedin"),
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_last_handover","arguments":{}}}"#,
    ));
    assert_eq!(call.content_type, Some("application/json"));
    let reply: Value = serde_json::from_slice(&call.body).expect("JSON reply");
    assert_eq!(reply["id"], 4);
    assert_eq!(
        reply["result"]["content"][0]["text"],
        "project=linkedin header=linkedin"
    );

    let counts = fake.counts();
    assert_eq!(
        (
            counts.initialize,
            counts.notifications,
            counts.select,
            counts.tools_call
        ),
        (1, 1, 1, 2)
    );
}

#[test]
fn sse_replies_are_one_event() {
    let mut fake = Fake::new(true, 10);
    let init = fake.handle(post(
        None,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    ));
    assert_eq!(init.content_type, Some("text/event-stream"));
    let body = text(&init);
    assert!(
        body.starts_with("event: message\r\ndata: {") && body.ends_with("}\r\n\r\n"),
        "{body:?}"
    );
}

#[test]
fn unknown_and_missing_sessions_are_refused_like_the_sdk() {
    let mut fake = Fake::new(false, 10);
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    assert_eq!(fake.handle(post(Some("nope"), None, list)).status, 404);
    assert_eq!(fake.handle(post(None, None, list)).status, 400);
    assert_eq!(fake.handle(post(None, None, "{not json")).status, 400);
    assert_eq!(fake.counts().refused, 3);
}

#[test]
fn the_oldest_session_is_forgotten_when_full() {
    let mut fake = Fake::new(false, 2);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    let ids: Vec<String> = (0..3)
        .map(|_| fake.handle(post(None, None, init)).session.expect("sid"))
        .collect();
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    assert_eq!(fake.handle(post(Some(&ids[0]), None, list)).status, 404);
    assert_eq!(fake.handle(post(Some(&ids[2]), None, list)).status, 200);
    assert_eq!(fake.counts().sessions, 2);
    let delete = Request {
        method: "DELETE",
        session: Some(&ids[2]),
        project_header: None,
        body: b"",
    };
    assert_eq!(fake.handle(delete).status, 200);
    assert_eq!(fake.counts().sessions, 1);
}
