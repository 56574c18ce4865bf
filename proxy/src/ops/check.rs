//! `session-broker check`: like `nginx -t`, it reads the same flags, environment and config file as
//! the server ([`crate::config::file::load_from`], then [`Args::into_settings`]) and says, one line
//! each, whether what the server needs holds:
//!
//! - `config`: the flags, environment and config file parse into settings;
//! - `signing key`: the key loads, and which kind ([`key`]); never the key itself;
//! - `store`: the store answers: for Redis, `PING`, its version and mode ([`store`]);
//! - `upstream`: the MCP server answers a real `initialize` (2025 era) and whether it offers the
//!   2026-07-28 era, as the bridge probes it ([`upstream`]); the backend session opened is closed;
//! - `identity`: the principal source is usable: the JWKS fetched for OAuth, what is configured
//!   otherwise ([`identity`]).
//!
//! Each line starts with `ok` or `FAIL`. Exit status: 0 when every check holds, 1 when one fails, 2
//! when the configuration does not parse (as the server exits). Every probe is bounded in time: the
//! store's own operation timeout, the upstream timeout at most [`PROBE_TIMEOUT`], the JWKS fetch at
//! most [`PROBE_TIMEOUT`]. The probes run at once, so the whole check takes about the slowest.

mod identity;
mod key;
mod store;
mod upstream;

use std::ffi::OsString;
use std::time::Duration;

use crate::config::cli::Args;
use crate::config::file::{self, ConfigError};

/// The first argument that selects this subcommand.
pub const SUBCOMMAND: &str = "check";

/// Longest any one network probe may take (the upstream's and the JWKS fetch).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `session-broker check --help` says.
pub const HELP: &str = "\
Checks a configuration, like `nginx -t`: reads the same flags, environment (BROKER_*) and config
file (--config) as the server, and says, one line each, whether the signing key loads, the store
answers (its version and mode), the upstream speaks MCP (and which protocol eras), and the
identity source is usable (the JWKS fetched). It serves nothing and binds no port.

Usage: session-broker check [SERVER FLAGS]...

Exit status: 0 when every line says ok, 1 when one says FAIL, 2 when the configuration does not
parse. The server's flags: session-broker --help; docs/operations.md.";

/// Whether `argv` (program name first) runs `check`.
pub fn is_subcommand(argv: &[OsString]) -> bool {
    argv.get(1).is_some_and(|first| first == SUBCOMMAND)
}

/// The result of one check: one line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    /// What was checked: `config`, `signing key`, `store`, `upstream`, `identity`.
    pub what: &'static str,
    /// What was found, or why it fails (never a secret).
    pub detail: String,
}

impl Line {
    pub fn ok(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            what,
            detail: detail.into(),
        }
    }

    pub fn fail(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            what,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = if self.ok { "ok" } else { "FAIL" };
        write!(f, "{status:<4} {}: {}", self.what, self.detail)
    }
}

/// Runs `check` with `argv` (program name first, then `check`); prints the lines and returns the
/// exit status.
pub async fn main(argv: Vec<OsString>) -> i32 {
    let rest: Vec<OsString> = argv.iter().skip(2).cloned().collect();
    let asks_help = rest
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--help" || arg == "-h");
    if asks_help {
        println!("{HELP}");
        return 0;
    }
    let server_argv = argv.iter().take(1).chain(rest.iter()).cloned();
    let args = match file::load_from(server_argv, &|name| std::env::var(name).ok()) {
        Ok(args) => args,
        Err(ConfigError::Cli(error)) => {
            let _ = error.print();
            return error.exit_code();
        }
        Err(error) => {
            println!("{}", Line::fail("config", error.to_string()));
            return 2;
        }
    };
    let lines = match run(args).await {
        Ok(lines) => lines,
        Err(line) => {
            println!("{line}");
            return 2;
        }
    };
    for line in &lines {
        println!("{line}");
    }
    if lines.iter().all(|line| line.ok) {
        0
    } else {
        1
    }
}

/// Checks the configuration `args` names: the lines in order, or the `config` line that says why
/// the settings cannot even be made.
pub async fn run(args: Args) -> Result<Vec<Line>, Line> {
    let key_source = key::Source::of(&args);
    let settings = args
        .into_settings()
        .map_err(|error| Line::fail("config", error.to_string()))?;
    let config = Line::ok(
        "config",
        format!(
            "parsed; upstream {}, {} store",
            settings.upstream,
            if settings.redis_url.is_some() {
                "redis"
            } else {
                "memory"
            }
        ),
    );
    let key = key::check(&settings, &key_source);
    let (store, upstream, identity) = tokio::join!(
        store::check(&settings),
        upstream::check(&settings),
        identity::check(&settings),
    );
    Ok(vec![config, key, store, upstream, identity])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_starts_with_its_status_in_one_column() {
        assert_eq!(
            Line::ok("store", "memory").to_string(),
            "ok   store: memory"
        );
        assert_eq!(
            Line::fail("upstream", "refused").to_string(),
            "FAIL upstream: refused"
        );
    }

    #[test]
    fn check_is_the_first_argument_only() {
        let argv = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_subcommand(&argv(&["session-broker", "check"])));
        assert!(!is_subcommand(&argv(&[
            "session-broker",
            "--upstream",
            "check"
        ])));
        assert!(!is_subcommand(&argv(&["session-broker"])));
    }
}
