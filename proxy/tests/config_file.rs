//! The config file (`--config`): precedence against the environment and the command line, errors,
//! value types, and the documented example in `docs/broker.example.toml`.
//!
//! The environment is passed to the loader as a function; the process environment is never changed.
//! clap still reads the real one, so the variables used here must not be set when tests run
//! ([`assert_really_unset`] checks).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use clap::error::ErrorKind;
use proxy::config::cli::Args;
use proxy::config::file::{ConfigError, load_from};

const UPSTREAM: &str = "http://127.0.0.1:8001/mcp";

/// Writes `text` to a file of this test's own.
fn config(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_file");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// An environment holding only `vars`.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// clap reads these itself: a test that fakes them must know the real ones are unset.
fn assert_really_unset(names: &[&str]) {
    for name in names {
        assert!(
            std::env::var_os(name).is_none(),
            "{name} is set in the test environment; unset it to run this test"
        );
    }
}

fn argv(path: &Path, extra: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "session-broker".to_owned(),
        "--config".to_owned(),
        path.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv
}

fn load_error(path: &Path) -> String {
    load_from(argv(path, &[]), &no_env)
        .expect_err("must refuse")
        .to_string()
}

#[test]
fn the_file_alone_sets_flags_and_satisfies_required_ones() {
    assert_really_unset(&["BROKER_UPSTREAM", "BROKER_IDLE_TTL", "BROKER_SELECT_ARG"]);
    let path = config(
        "file_only",
        &format!(
            "upstream = \"{UPSTREAM}\"\nidle-ttl = \"90s\"\nselect-arg = \"project\"\nmax-body = 1024\n"
        ),
    );
    let args = load_from(argv(&path, &[]), &no_env).expect("loads");
    assert_eq!(args.upstream.to_string(), UPSTREAM);
    assert_eq!(args.idle_ttl, Duration::from_secs(90));
    assert_eq!(args.select_arg, "project");
    assert_eq!(args.max_body, 1024);
    // Untouched flags keep their built-in defaults.
    assert_eq!(args.select_tool, "select_project_for_session");
    assert_eq!(args.exempt_tools, ["list_projects"]);
    assert!(!args.log_json);
    // `--config=PATH` works the same.
    let args = load_from(
        [
            "session-broker".to_owned(),
            format!("--config={}", path.display()),
        ],
        &no_env,
    )
    .expect("loads");
    assert_eq!(args.idle_ttl, Duration::from_secs(90));
}

#[test]
fn the_environment_overrides_the_file_and_can_name_it() {
    assert_really_unset(&["BROKER_CONFIG", "BROKER_IDLE_TTL", "BROKER_SELECT_ARG"]);
    let path = config(
        "env_over_file",
        &format!("upstream = \"{UPSTREAM}\"\nidle-ttl = \"90s\"\nselect-arg = \"project\"\n"),
    );
    let path_text = path.display().to_string();
    let env = env_of(&[("BROKER_CONFIG", &path_text), ("BROKER_IDLE_TTL", "5m")]);
    let args = load_from(["session-broker"], &env).expect("loads");
    assert_eq!(args.idle_ttl, Duration::from_secs(300), "env beats file");
    assert_eq!(args.select_arg, "project", "file beats default");
}

#[test]
fn a_flag_overrides_the_environment_and_the_file() {
    assert_really_unset(&["BROKER_IDLE_TTL", "BROKER_EXEMPT_TOOLS"]);
    let path = config(
        "flag_over_all",
        &format!("upstream = \"{UPSTREAM}\"\nidle-ttl = \"90s\"\nexempt-tool = [\"a\", \"b\"]\n"),
    );
    let env = env_of(&[("BROKER_IDLE_TTL", "5m")]);
    let args = load_from(
        argv(&path, &["--idle-ttl", "7s", "--exempt-tool", "c"]),
        &env,
    )
    .expect("loads");
    assert_eq!(args.idle_ttl, Duration::from_secs(7));
    assert_eq!(args.exempt_tools, ["c"], "a flag replaces the file's list");
    let args = load_from(argv(&path, &["--upstream", "http://10.0.0.1:1/x"]), &env).expect("loads");
    assert_eq!(args.upstream.to_string(), "http://10.0.0.1:1/x");
}

#[test]
fn a_file_value_gives_way_to_a_conflicting_flag_or_variable() {
    assert_really_unset(&["BROKER_SIGNING_KEY", "BROKER_SIGNING_KEY_FILE"]);
    let path = config(
        "conflict_env",
        &format!("upstream = \"{UPSTREAM}\"\nsigning-key-file = \"/nonexistent/key\"\n"),
    );
    let secret = "0123456789abcdef0123456789abcdef";
    let env = env_of(&[("BROKER_SIGNING_KEY", secret)]);
    let args = load_from(argv(&path, &[]), &env).expect("loads");
    assert_eq!(args.signing_key.as_deref(), Some(secret));
    assert_eq!(args.signing_key_file, None, "env's signing key wins");

    let path = config(
        "conflict_flag",
        &format!("upstream = \"{UPSTREAM}\"\nsigning-key = \"{secret}\"\n"),
    );
    let args = load_from(argv(&path, &["--signing-key-file", "/k"]), &no_env).expect("loads");
    assert_eq!(args.signing_key_file.as_deref(), Some(Path::new("/k")));
    assert_eq!(args.signing_key, None, "the flag's key file wins");

    let path = config(
        "conflict_file",
        &format!(
            "upstream = \"{UPSTREAM}\"\nsigning-key = \"{secret}\"\nsigning-key-file = \"/k\"\n"
        ),
    );
    let error = load_error(&path);
    assert!(
        error.contains("`signing-key-file` and `signing-key`")
            || error.contains("`signing-key` and `signing-key-file`"),
        "{error}"
    );
}

#[test]
fn arrays_and_booleans() {
    assert_really_unset(&[
        "BROKER_LOG_JSON",
        "BROKER_ALLOW_ANONYMOUS",
        "BROKER_ALLOWED_ORIGINS",
    ]);
    let path = config(
        "types",
        &format!(
            "upstream = \"{UPSTREAM}\"\nlog-json = true\nallow-anonymous = false\n\
             allowed-origin = [\"https://a.example\", \"https://b.example\"]\nexempt-tool = []\n\
             surface-rule = [\"client:claude-*=claude\"]\nverify-key-file = \"/k1,/k2\"\n"
        ),
    );
    let args = load_from(argv(&path, &[]), &no_env).expect("loads");
    assert!(args.log_json);
    assert!(!args.allow_anonymous);
    assert_eq!(
        args.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert!(args.exempt_tools.is_empty(), "[] clears the default list");
    assert_eq!(args.surface_rules.len(), 1);
    assert_eq!(
        args.verify_key_file,
        [PathBuf::from("/k1"), PathBuf::from("/k2")],
        "a string splits like the flag"
    );
    // A switch set in the file stays set: there is no `--no-log-json`, as without a file.
    let args = load_from(argv(&path, &["--allow-anonymous"]), &no_env).expect("loads");
    assert!(args.log_json && args.allow_anonymous);
}

#[test]
fn unknown_keys_are_errors_naming_them() {
    let path = config(
        "unknown",
        &format!("upstream = \"{UPSTREAM}\"\nredis_url = \"redis://x\"\nbogus = 1\n"),
    );
    let error = load_from(argv(&path, &[]), &no_env).expect_err("must refuse");
    assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("`bogus`"), "{text}");
    assert!(
        text.contains("`redis_url` (did you mean `redis-url`?)"),
        "{text}"
    );
    assert!(text.contains("valid keys: "), "{text}");
    assert!(
        text.contains("idle-ttl") && text.contains("exempt-tool"),
        "{text}"
    );

    let path = config("nested", "[upstream]\nurl = \"x\"\n");
    assert!(load_error(&path).contains("`upstream`"));
    let path = config("recursive", "config = \"other.toml\"\n");
    assert!(load_error(&path).contains("another config file"));
}

#[test]
fn bad_toml_is_an_error_with_its_line() {
    let path = config(
        "bad_toml",
        &format!("upstream = \"{UPSTREAM}\"\n\nlisten = 127.0.0.1:8080\n"),
    );
    let error = load_from(argv(&path, &[]), &no_env).expect_err("must refuse");
    assert!(matches!(error, ConfigError::Toml { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    for (name, line, key) in [
        ("bad_duration", "idle-ttl = \"soon\"", "idle-ttl"),
        ("bad_switch", "log-json = \"yes\"", "log-json"),
        ("bad_array", "listen = [\"127.0.0.1:1\"]", "listen"),
        (
            "bad_enum",
            "unkeyed-policy = \"sometimes\"",
            "unkeyed-policy",
        ),
        ("bad_number", "max-body = -1", "max-body"),
        ("bad_rule", "surface-rule = [\"nonsense\"]", "surface-rule"),
    ] {
        let path = config(name, &format!("upstream = \"{UPSTREAM}\"\n{line}\n"));
        let error = load_from(argv(&path, &[]), &no_env).expect_err(name);
        assert!(matches!(error, ConfigError::BadValue { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains(&format!("`{key}`")), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_file/does-not-exist.toml");
    let error = load_error(&path);
    assert!(error.contains("cannot read config file"), "{error}");
    assert!(error.contains("does-not-exist.toml"), "{error}");
}

#[test]
fn without_a_file_clap_rules_as_before() {
    assert_really_unset(&["BROKER_UPSTREAM", "BROKER_CONFIG"]);
    match load_from(["session-broker"], &no_env) {
        Err(ConfigError::Cli(error)) => {
            assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        }
        other => panic!("expected a missing --upstream, got {other:?}"),
    }
    let args = load_from(["session-broker", "--upstream", UPSTREAM], &no_env).expect("loads");
    assert_eq!(args.idle_ttl, Duration::from_secs(120 * 60));
}

#[test]
fn help_shows_config_and_hides_secrets_from_the_file() {
    let secret = "do-not-print-me-0123456789abcdef0123";
    let path = config(
        "help",
        &format!("upstream = \"{UPSTREAM}\"\nsigning-key = \"{secret}\"\nidle-ttl = \"90s\"\n"),
    );
    let Err(ConfigError::Cli(error)) = load_from(argv(&path, &["--help"]), &no_env) else {
        panic!("--help must stop with the help text");
    };
    assert_eq!(error.kind(), ErrorKind::DisplayHelp);
    let help = error.to_string();
    assert!(help.contains("--config <PATH>"), "{help}");
    assert!(help.contains("BROKER_CONFIG"), "{help}");
    assert!(
        help.contains("[default: 90s]"),
        "file values show as defaults: {help}"
    );
    assert!(!help.contains(secret), "{help}");
}

// --- docs/broker.example.toml -------------------------------------------------------------------

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/broker.example.toml")
}

/// The example's settings: its live keys, then each commented-out `# key = value` line.
fn example_settings() -> (toml::Table, toml::Table) {
    let text = std::fs::read_to_string(example_path()).expect("docs/broker.example.toml");
    let live: toml::Table = text.parse().expect("the example is valid TOML");
    let mut commented = toml::Table::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        // Prose does not parse as one `key = value`; settings do.
        if let Ok(one) = rest.trim().parse::<toml::Table>()
            && one.len() == 1
        {
            for (key, value) in one {
                commented.entry(key).or_insert(value);
            }
        }
    }
    (live, commented)
}

#[test]
fn the_example_loads() {
    assert_really_unset(&["BROKER_UPSTREAM"]);
    let args = load_from(argv(&example_path(), &[]), &no_env).expect("the example loads");
    assert_eq!(args.upstream.to_string(), UPSTREAM);
    // And with the required flag on the command line instead.
    let args = load_from(
        argv(&example_path(), &["--upstream", "http://127.0.0.1:9/mcp"]),
        &no_env,
    )
    .expect("the example loads");
    assert_eq!(args.upstream.to_string(), "http://127.0.0.1:9/mcp");
}

#[test]
fn every_commented_example_value_is_accepted() {
    let (live, commented) = example_settings();
    let mut all = live;
    for (key, value) in commented {
        // Cannot be used with signing-key-file / jwt-jwks-url: the example shows both forms.
        if key != "signing-key" && key != "jwt-jwks-file" {
            all.entry(key).or_insert(value);
        }
    }
    let path = config(
        "example_uncommented",
        &toml::to_string(&all).expect("serializes"),
    );
    let args = load_from(argv(&path, &[]), &no_env).expect("every documented value loads");
    assert!(args.redis_url.is_some() && args.signing_key_file.is_some());
}

#[test]
fn the_example_documents_every_flag() {
    let (live, commented) = example_settings();
    let missing: Vec<String> = Args::command()
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !live.contains_key(*long) && !commented.contains_key(*long))
        .map(|long| format!("--{long}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/broker.example.toml does not show {missing:?}: add each (commented out) with what it \
         does, its env variable and its default"
    );
}
