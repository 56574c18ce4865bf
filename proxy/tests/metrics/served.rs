//! The registry as served: its declared metrics and the `/metrics` endpoint.

use super::*;

#[tokio::test]
async fn a_fresh_registry_declares_its_unlabelled_metrics() {
    let out = Exposition::of(&app());
    assert_eq!(
        out.kind("session_broker_broker_overhead_seconds"),
        "histogram"
    );
    assert_eq!(
        out.value("session_broker_broker_overhead_seconds_count"),
        0.0
    );
    assert_eq!(
        out.value("session_broker_work_sessions_finalized_total"),
        0.0
    );
    assert_eq!(out.value("session_broker_work_sessions_live"), 0.0);
    assert!(
        out.types
            .keys()
            .all(|name| name.starts_with("session_broker_")),
        "{:?}",
        out.types
    );
}

/// One HTTP/1.1 request on a fresh connection; returns the raw response.
async fn http(address: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8(response).expect("utf-8")
}

#[tokio::test]
async fn the_server_serves_metrics_and_counts_mcp_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy::run(settings(), listener, async {
        let _ = stopped.await;
    }));

    // No credential: 401 before the body is read, counted under `other`.
    let refused = http(
        address,
        "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // Not JSON: 400, also `other`.
    let bad = http(
        address,
        "POST /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{x}",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    let scraped = http(
        address,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = scraped.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {}", metrics::CONTENT_TYPE)),
        "{head}"
    );
    let out = Exposition::parse(body);
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="other",status="401"}"#),
        1.0
    );
    assert_eq!(
        out.value(r#"session_broker_requests_total{method="other",status="400"}"#),
        1.0
    );
    assert!(
        !out.samples.keys().any(|k| k.contains(r#"method="GET""#)),
        "scrapes are not MCP requests"
    );

    let _ = stop.send(());
    server.await.expect("join").expect("server");
}
