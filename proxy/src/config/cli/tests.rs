//! The command line turned into settings: defaults, refusals, every flag.
use super::*;

fn parse(args: &[&str]) -> Result<Settings, CliError> {
    let mut argv = vec!["session-broker", "--upstream", "http://127.0.0.1:8001/mcp"];
    argv.extend_from_slice(args);
    Args::try_parse_from(argv).expect("parses").into_settings()
}

#[test]
fn redis_without_a_key_refuses_to_start() {
    let error = parse(&["--redis-url", "redis://127.0.0.1:1/0"]).expect_err("must refuse");
    assert!(error.to_string().contains("--signing-key-file"));
}

#[test]
fn defaults_and_flags() {
    let settings = parse(&[
        "--idle-ttl",
        "90s",
        "--unkeyed-policy",
        "strict",
        "--exempt-tool",
        "a,b",
    ])
    .expect("ok");
    assert_eq!(settings.idle_ttl, Duration::from_secs(90));
    assert_eq!(settings.unkeyed_policy, UnkeyedPolicy::Strict);
    assert_eq!(settings.exempt_tools, ["a", "b"]);
    assert_eq!(settings.mcp_path(), "/mcp");
    assert!(settings.needs_project("lock_context"));
    assert!(!settings.needs_project("select_project_for_session"));
    assert!(!settings.needs_project("a"));
    assert!(matches!(
        parse(&["--signing-key", "short"]),
        Err(CliError::WeakKey(_))
    ));
}

#[test]
fn admin_listener_defaults_to_loopback_and_needs_a_token_elsewhere() {
    let settings = parse(&[]).expect("ok");
    assert_eq!(
        settings.admin_listen,
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9091)))
    );
    assert!(settings.admin_token.is_none());
    assert_eq!(
        parse(&["--admin-listen", "off"]).expect("ok").admin_listen,
        None
    );
    let error = parse(&["--admin-listen", "0.0.0.0:9091"]).expect_err("must refuse");
    assert!(error.to_string().contains("--admin-token-file"), "{error}");
}

#[test]
fn resource_bounds() {
    let settings = parse(&[]).expect("ok");
    assert_eq!(settings.body_timeout, Duration::from_secs(30));
    assert_eq!(settings.max_connections, 4096);
    assert_eq!(settings.max_inflight_body_bytes, 32 * 1024 * 1024);
    let settings = parse(&[
        "--body-timeout",
        "2s",
        "--max-connections",
        "10",
        "--max-inflight-body-bytes",
        "8388608",
    ])
    .expect("ok");
    assert_eq!(settings.body_timeout, Duration::from_secs(2));
    assert_eq!(settings.max_connections, 10);
    assert_eq!(settings.max_inflight_body_bytes, 8 * 1024 * 1024);
    assert!(matches!(
        parse(&["--max-inflight-body-bytes", "1000"]),
        Err(CliError::InflightBelowMaxBody { .. })
    ));
    assert!(
        Args::try_parse_from([
            "session-broker",
            "--upstream",
            "http://127.0.0.1:8001/mcp",
            "--max-connections",
            "0"
        ])
        .is_err()
    );
}

#[test]
fn upstream_must_be_plain_http() {
    let args =
        Args::try_parse_from(["session-broker", "--upstream", "https://x/mcp"]).expect("parses");
    assert!(matches!(args.into_settings(), Err(CliError::BadUpstream)));
}
