//! Listing and showing work sessions, by principal hash or by credential.

use super::*;

#[tokio::test]
async fn list_and_show_by_hash_or_by_credential() {
    let h = start(settings()).await;
    assert_eq!(
        h.send(Method::GET, "/healthz", &[], None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let first = h.bind(CREDENTIAL, "linkedin").await;
    let second = h.bind(CREDENTIAL, "innkeeper").await;
    h.bind(OTHER, "atlas").await;

    let (status, by_credential) = h.get("/sessions", CREDENTIAL).await;
    assert_eq!(status, StatusCode::OK);
    let hash = h.principal(CREDENTIAL).to_string();
    assert_eq!(by_credential["principal"], hash.as_str());
    let sessions = by_credential["work_sessions"].as_array().expect("list");
    let mut projects: Vec<&str> = sessions
        .iter()
        .map(|s| s["project"].as_str().expect("project"))
        .collect();
    projects.sort_unstable();
    assert_eq!(projects, ["innkeeper", "linkedin"]);
    let by_hash = h
        .send(
            Method::GET,
            &format!("/sessions?principal={hash}"),
            &[],
            None,
        )
        .await;
    assert_eq!(by_hash, (StatusCode::OK, by_credential.clone()));

    let (status, shown) = h.get(&format!("/sessions/{first}"), CREDENTIAL).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["id"], first.as_str());
    assert_eq!(shown["project"], "linkedin");
    assert_eq!(shown["surface"], "claude-ai");
    assert_eq!(shown["conversation"], Value::Null);
    assert_eq!(shown["live"], true);
    assert_eq!(shown["finalized"], false);
    assert_eq!(shown["mcp_sessions"], 1);
    assert_eq!(shown["calls"], 1);
    assert!(shown["created_ms"].as_u64().is_some() && shown["last_active_ms"].as_u64().is_some());

    // Scoped to the principal: another's work session is unknown, so is a random id.
    let foreign = h.get(&format!("/sessions/{second}"), OTHER).await;
    assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{}", foreign.1);
    let unknown = h
        .get(
            &format!("/sessions/{}", WorkSessionId::random()),
            CREDENTIAL,
        )
        .await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.get("/sessions/not-an-id", CREDENTIAL).await.0,
        StatusCode::BAD_REQUEST
    );

    // The principal must be named exactly once, and well.
    let none = h.send(Method::GET, "/sessions", &[], None).await;
    assert_eq!(none.0, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&none).contains("X-Principal-Credential"),
        "{}",
        none.1
    );
    let both = h
        .send(
            Method::GET,
            &format!("/sessions?principal={hash}"),
            &[("x-principal-credential", CREDENTIAL)],
            None,
        )
        .await;
    assert_eq!(both.0, StatusCode::BAD_REQUEST);
    let bad = h
        .send(Method::GET, "/sessions?principal=NOT-HEX", &[], None)
        .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    let other = h.principal(OTHER);
    for query in [
        format!("principal={hash}&principal={other}"),
        format!("principal={hash}&principal={hash}"),
        format!("principal={other}&%70rincipal={hash}"),
    ] {
        let twice = h
            .send(Method::GET, &format!("/sessions?{query}"), &[], None)
            .await;
        assert_eq!(twice.0, StatusCode::BAD_REQUEST, "{query}: {}", twice.1);
        assert!(error_of(&twice).contains("more than once"), "{}", twice.1);
    }
    let twice = h
        .send(
            Method::GET,
            &format!("/sessions/{second}?x=1&x=2"),
            &[("x-principal-credential", CREDENTIAL)],
            None,
        )
        .await;
    assert_eq!(
        twice.0,
        StatusCode::BAD_REQUEST,
        "any parameter, on any endpoint"
    );

    let doubled = h
        .send(
            Method::GET,
            "/sessions",
            &[
                ("x-principal-credential", CREDENTIAL),
                ("x-principal-credential", OTHER),
            ],
            None,
        )
        .await;
    assert_eq!(doubled.0, StatusCode::BAD_REQUEST, "{}", doubled.1);
    assert!(
        error_of(&doubled).contains("more than once"),
        "{}",
        doubled.1
    );

    // A rebind the backend cannot be asked about (nothing listens upstream) binds nothing.
    let unchecked = h
        .post(
            &format!("/sessions/{first}/rebind"),
            CREDENTIAL,
            Some(json!({"project": "atlas"})),
        )
        .await;
    assert_eq!(unchecked.0, StatusCode::BAD_GATEWAY, "{}", unchecked.1);
    let (_, shown) = h.get(&format!("/sessions/{first}"), CREDENTIAL).await;
    assert_eq!(shown["project"], "linkedin");

    // A browser's request: a rebound Host, a foreign Origin, a text/plain POST.
    let rebound = h
        .send(
            Method::GET,
            "/sessions",
            &[
                ("x-principal-credential", CREDENTIAL),
                ("host", "rebound.attacker.example"),
            ],
            None,
        )
        .await;
    assert_eq!(rebound.0, StatusCode::FORBIDDEN, "{}", rebound.1);
    let foreign = h
        .send(
            Method::GET,
            "/sessions",
            &[
                ("x-principal-credential", CREDENTIAL),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
    assert_eq!(foreign.0, StatusCode::FORBIDDEN, "{}", foreign.1);
    let plain = h
        .send(
            Method::POST,
            &format!("/sessions/{first}/end"),
            &[
                ("x-principal-credential", CREDENTIAL),
                ("content-type", "text/plain"),
            ],
            None,
        )
        .await;
    assert_eq!(plain.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", plain.1);
    assert_eq!(
        h.get(&format!("/sessions/{first}"), CREDENTIAL).await.1["live"],
        true
    );

    // Unknown paths and methods.
    assert_eq!(h.get("/nope", CREDENTIAL).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        h.post("/sessions", CREDENTIAL, None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    h.shutdown().await;
}
