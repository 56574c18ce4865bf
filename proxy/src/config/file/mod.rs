//! The config file: `--config broker.toml` (or `BROKER_CONFIG`) gives any flag of [`Args`] a value.
//!
//! Keys are the long flag names (`redis-url`, `idle-ttl`, `exempt-tool`, ...); see
//! `docs/broker.example.toml`. Nothing here names a flag: the file is matched against the clap
//! command built from [`Args`], so a flag added there is a valid key at once.
//!
//! # Precedence
//! Highest first: **command line > environment variable > config file > built-in default**. The
//! path is found by a small pre-scan of argv (`--config PATH`, `--config=PATH`, else
//! `BROKER_CONFIG`) before clap parses; each value in the file then becomes its argument's clap
//! default (and a required argument given by the file is no longer required), so clap itself lets
//! the command line and the environment win. A file value also yields to a *conflicting* flag set on
//! the command line or in the environment: a file's `signing-key-file` does not beat
//! `BROKER_SIGNING_KEY`. Two conflicting keys in one file are an error.
//!
//! # Values
//! Strings, integers and floats as the flag's text; booleans for switches (`true` = present,
//! `false` = absent); arrays for repeatable flags (`exempt-tool = ["a", "b"]`, `[]` for none).
//! Unknown keys, values of the wrong type, values the flag refuses and bad TOML (with its line) are
//! errors naming the file.
//!
//! # Environment
//! [`load_from`] takes the environment as a lookup function, so tests can pass a fake one: it
//! finds `BROKER_CONFIG` there, and a value the process environment does not hold (a test's) is
//! applied above the file by the loader itself. clap reads the process environment on its own for
//! every `env = ...` argument, so [`load`] leaves those to clap (and `--help` shows them as usual),
//! and tests must fake only variables that are not really set.

mod toml_keys;

use toml_keys::read_file;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::config::cli::Args;

/// The flag naming the config file (also its id in the clap command).
pub const CONFIG_FLAG: &str = "config";
/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "BROKER_CONFIG";

/// Why the command line, environment and config file cannot be read into [`Args`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {}", path.display(), source.to_string().trim_end())]
    Toml {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {}: unknown {keys}; valid keys: {valid}", path.display())]
    UnknownKey {
        path: PathBuf,
        /// "key `x`" or "keys `x`, `y`", each with a suggestion when one is obvious.
        keys: String,
        /// Every key the file may use.
        valid: String,
    },
    #[error("config file {}: `{key}`: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("config file {}: `{first}` and `{second}` cannot be used together", path.display())]
    Conflict {
        path: PathBuf,
        first: String,
        second: String,
    },
    /// A command-line error, `--help` or `--version`: show it with [`clap::Error::exit`].
    #[error("{0}")]
    Cli(#[from] clap::Error),
}

/// Reads [`Args`] from the process's argv, environment and config file.
pub fn load() -> Result<Args, ConfigError> {
    load_from(std::env::args_os(), &|name| std::env::var(name).ok())
}

/// The command [`Args`] derives, plus `--config PATH` (env `BROKER_CONFIG`) for `--help`.
///
/// `--config` is not a field of [`Args`]: [`Args::from_arg_matches`] ignores it.
pub fn command() -> Command {
    let command = Args::command();
    if command
        .get_arguments()
        .any(|arg| arg.get_id() == CONFIG_FLAG || arg.get_long() == Some(CONFIG_FLAG))
    {
        return command;
    }
    command.arg(
        Arg::new(CONFIG_FLAG)
            .long(CONFIG_FLAG)
            .env(CONFIG_ENV)
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help(
                "TOML file setting any flag by its long name (see docs/broker.example.toml); \
                 flags and environment variables override it",
            ),
    )
}

/// Reads [`Args`] from `argv` (program name first), the environment `env` and the config file
/// they name.
pub fn load_from<I, T>(argv: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Args, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let base = command();
    let mut known = base.clone();
    known.build();

    let mut fallbacks: BTreeMap<String, Fallback> = BTreeMap::new();
    if let Some(path) = config_path(&argv, env) {
        let file = read_file(&path, &base, &known)?;
        if let Some((first, second)) = conflicting_pairs(&known, file.keys()).into_iter().next() {
            return Err(ConfigError::Conflict {
                path,
                first: long_name(&known, &first),
                second: long_name(&known, &second),
            });
        }
        for (id, values) in file {
            fallbacks.insert(
                id,
                Fallback {
                    values,
                    from_env: false,
                },
            );
        }
    }
    for arg in known.get_arguments() {
        if arg.get_id() == CONFIG_FLAG {
            continue;
        }
        let Some(name) = arg.get_env().and_then(OsStr::to_str) else {
            continue;
        };
        let Some(value) = env(name) else {
            continue;
        };
        // clap reads the process environment itself (and shows it in `--help`): only a value it
        // would not see (a test's) needs to stand in as a default.
        if std::env::var(name).is_ok_and(|real| real == value) {
            continue;
        }
        fallbacks.insert(
            arg.get_id().to_string(),
            Fallback {
                values: vec![leak(value)],
                from_env: true,
            },
        );
    }
    let from_env: Vec<String> = fallbacks
        .iter()
        .filter(|(_, fallback)| fallback.from_env)
        .map(|(id, _)| id.clone())
        .collect();
    yield_to(&known, &mut fallbacks, |id| {
        from_env.iter().any(|e| e == id)
    });

    let matches = with_fallbacks(&base, &known, &fallbacks).try_get_matches_from(&argv)?;
    let matches = if yield_to(&known, &mut fallbacks, |id| is_explicit(&matches, id)) {
        with_fallbacks(&base, &known, &fallbacks).try_get_matches_from(&argv)?
    } else {
        matches
    };
    Ok(Args::from_arg_matches(&matches)?)
}

/// Values standing in for an argument's built-in default.
struct Fallback {
    values: Vec<&'static str>,
    /// From the environment (else from the file).
    from_env: bool,
}

/// clap keeps defaults as `&'static str` unless its `string` feature is on: the few values of one
/// start are leaked, once.
fn leak(value: String) -> &'static str {
    Box::leak(value.into_boxed_str())
}

/// The config file named on the command line (last one wins), else by `BROKER_CONFIG`.
fn config_path(argv: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let with_value = format!("--{CONFIG_FLAG}=");
    let mut found = None;
    let mut args = argv.iter().skip(1).peekable();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if *arg == *flag {
            // `--config --other` is clap's error to report, not a path.
            if let Some(value) = args.next_if(|v| !v.to_string_lossy().starts_with("--")) {
                found = Some(PathBuf::from(value));
            }
        } else if let Some(value) = arg.to_string_lossy().strip_prefix(&with_value) {
            found = Some(PathBuf::from(value));
        }
    }
    found.or_else(|| {
        env(CONFIG_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    })
}

/// Whether `a` and `b` cannot be used together (clap records a conflict on one side only).
fn conflict(known: &Command, a: &str, b: &str) -> bool {
    let find = |id: &str| known.get_arguments().find(|arg| arg.get_id() == id);
    let (Some(arg_a), Some(arg_b)) = (find(a), find(b)) else {
        return false;
    };
    known
        .get_arg_conflicts_with(arg_a)
        .iter()
        .any(|other| other.get_id() == b)
        || known
            .get_arg_conflicts_with(arg_b)
            .iter()
            .any(|other| other.get_id() == a)
}

fn conflicting_pairs<'a>(
    known: &Command,
    ids: impl Iterator<Item = &'a String> + Clone,
) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (i, a) in ids.clone().enumerate() {
        for b in ids.clone().skip(i + 1) {
            if conflict(known, a, b) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

fn long_name(known: &Command, id: &str) -> String {
    known
        .get_arguments()
        .find(|arg| arg.get_id() == id)
        .and_then(Arg::get_long)
        .unwrap_or(id)
        .to_owned()
}

/// Drops file values that conflict with an argument `explicit` says was given; true if any.
fn yield_to(
    known: &Command,
    fallbacks: &mut BTreeMap<String, Fallback>,
    explicit: impl Fn(&str) -> bool,
) -> bool {
    let losers: Vec<String> = fallbacks
        .iter()
        .filter(|(_, fallback)| !fallback.from_env)
        .filter(|(id, _)| {
            known.get_arguments().any(|other| {
                explicit(other.get_id().as_str()) && conflict(known, id, other.get_id().as_str())
            })
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in &losers {
        fallbacks.remove(id);
    }
    !losers.is_empty()
}

fn is_explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The command with each fallback as its argument's default.
fn with_fallbacks(
    base: &Command,
    known: &Command,
    fallbacks: &BTreeMap<String, Fallback>,
) -> Command {
    let mut command = base.clone();
    for (id, fallback) in fallbacks {
        let Some(arg) = known
            .get_arguments()
            .find(|arg| arg.get_id() == id.as_str())
        else {
            continue;
        };
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        // `--help` shows defaults: not secrets, nor what it already shows as `[env: ...]`.
        let hide = takes_value && (fallback.from_env || arg.is_hide_env_values_set());
        let values = fallback.values.clone();
        command = command.mut_arg(id, |a| {
            let a = a.default_values(values).required(false);
            if hide { a.hide_default_value(true) } else { a }
        });
    }
    command
}
