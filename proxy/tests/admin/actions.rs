//! Rebinding and ending work sessions, the admin token, and the start checks.

use super::*;

#[tokio::test]
async fn rebind_and_end_act_on_live_work_sessions_only() {
    let backend = SelectTool::default();
    let mut settings = settings();
    settings.upstream = format!("http://{}/mcp", backend.start().await)
        .parse()
        .expect("uri");
    let h = start(settings).await;
    let ws = h.bind(CREDENTIAL, "linkedin").await;

    // A project the backend's select tool refuses is not bound; the check's session is closed.
    let refused = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            CREDENTIAL,
            Some(json!({"project": REFUSED})),
        )
        .await;
    assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.1);
    assert!(error_of(&refused).contains(REFUSED), "{}", refused.1);
    let (_, shown) = h.get(&format!("/sessions/{ws}"), CREDENTIAL).await;
    assert_eq!(shown["project"], "linkedin");
    let seen = backend.seen();
    assert!(
        seen.iter()
            .any(|s| s == &format!("POST tools/call {REFUSED}"))
            && seen.last().is_some_and(|s| s.starts_with("DELETE")),
        "{seen:?}"
    );

    let (status, rebound) = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            CREDENTIAL,
            Some(json!({"project": "dementia"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rebound}");
    assert_eq!(rebound["project"], "dementia");
    assert_eq!(rebound["live"], true);
    let (_, shown) = h.get(&format!("/sessions/{ws}"), CREDENTIAL).await;
    assert_eq!(shown["project"], "dementia");

    for bad in [json!({"project": "a\nb"}), json!({"name": "x"}), json!("x")] {
        let answer = h
            .post(&format!("/sessions/{ws}/rebind"), CREDENTIAL, Some(bad))
            .await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    }
    let foreign = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            OTHER,
            Some(json!({"project": "x"})),
        )
        .await;
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);

    let (status, ended) = h
        .post(&format!("/sessions/{ws}/end"), CREDENTIAL, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ended}");
    assert_eq!(ended["live"], false);
    assert_eq!(ended["finalized"], false);

    // Not live any more: both actions conflict.
    let again = h
        .post(&format!("/sessions/{ws}/end"), CREDENTIAL, None)
        .await;
    assert_eq!(again.0, StatusCode::CONFLICT);
    assert!(error_of(&again).contains("not live"));
    let late = h
        .post(
            &format!("/sessions/{ws}/rebind"),
            CREDENTIAL,
            Some(json!({"project": "atlas"})),
        )
        .await;
    assert_eq!(late.0, StatusCode::CONFLICT);

    // The next sweep finalizes it.
    assert_eq!(
        h.app
            .store
            .claim_expired(10)
            .await
            .expect("sweep")
            .finalized,
        1
    );
    let (_, shown) = h.get(&format!("/sessions/{ws}"), CREDENTIAL).await;
    assert_eq!(shown["finalized"], true);
    assert_eq!(shown["project"], "dementia");
    h.shutdown().await;
}

#[tokio::test]
async fn with_a_token_every_request_needs_it() {
    let mut settings = settings();
    settings.admin_token = AdminToken::new(TOKEN.as_bytes());
    let mut h = start(settings).await;
    h.bind(CREDENTIAL, "linkedin").await;
    assert_eq!(h.get("/sessions", CREDENTIAL).await.0, StatusCode::OK);
    assert_eq!(
        h.send(Method::GET, "/healthz", &[], None).await.0,
        StatusCode::OK
    );

    h.token = None;
    let missing = h.get("/sessions", CREDENTIAL).await;
    assert_eq!(missing.0, StatusCode::UNAUTHORIZED);
    assert!(error_of(&missing).contains("Bearer"));
    assert_eq!(
        h.send(Method::GET, "/healthz", &[], None).await.0,
        StatusCode::UNAUTHORIZED
    );
    for wrong in [
        "Bearer admin-test-token-0123456789abcdeF",
        "Bearer",
        TOKEN,
        "Basic YWRtaW46YWRtaW4=",
    ] {
        let answer = h
            .send(Method::GET, "/healthz", &[("authorization", wrong)], None)
            .await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let lower = h
        .send(
            Method::GET,
            "/healthz",
            &[("authorization", &format!("bearer {TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(lower.0, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn refuses_to_start_off_loopback_without_a_token_or_on_a_taken_port() {
    let mut open = settings();
    open.admin_listen = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
    let app = Arc::new(App::new(open.clone()).expect("app"));
    let (_stop, stopped) = watch::channel(false);
    let error = admin::start(app, stopped.clone())
        .await
        .expect_err("must refuse");
    assert!(matches!(error, AdminError::NeedsToken(_)));
    assert!(error.to_string().contains("--admin-token-file"), "{error}");

    // The whole broker refuses too, before serving anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = proxy::run(open.clone(), listener, std::future::pending()).await;
    assert!(matches!(
        result,
        Err(RunError::Admin(AdminError::NeedsToken(_)))
    ));

    // With a token it starts.
    open.admin_token = AdminToken::new(TOKEN.as_bytes());
    let app = Arc::new(App::new(open).expect("app"));
    let server = admin::start(app, stopped.clone())
        .await
        .expect("starts with a token")
        .expect("not off");
    assert!(server.address().ip().is_unspecified());

    // A taken port names the flag.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut clash = settings();
    clash.admin_listen = Some(taken.local_addr().expect("addr"));
    let app = Arc::new(App::new(clash).expect("app"));
    let error = admin::start(app, stopped.clone())
        .await
        .expect_err("port taken");
    assert!(matches!(error, AdminError::Bind { .. }));
    assert!(
        error.to_string().starts_with("--admin-listen 127.0.0.1:"),
        "{error}"
    );

    // Off is off.
    let mut off = settings();
    off.admin_listen = None;
    let app = Arc::new(App::new(off).expect("app"));
    assert!(admin::start(app, stopped).await.expect("ok").is_none());
}
