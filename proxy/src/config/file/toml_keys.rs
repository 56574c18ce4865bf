//! Reading the config file: TOML parsed with its line numbers, every key matched to a command-line
//! flag (unknown ones listed with a hint), every value turned into the flag's text form and checked by
//! the flag's own parser.

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, Command};
use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// Reads the file into argument ids and their values, checked against each argument.
pub(super) fn read_file(
    path: &Path,
    base: &Command,
    known: &Command,
) -> Result<BTreeMap<String, Vec<&'static str>>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    if table.contains_key(CONFIG_FLAG) {
        return Err(ConfigError::BadValue {
            path: path.to_owned(),
            key: CONFIG_FLAG.into(),
            reason: "a config file cannot name another config file".into(),
        });
    }
    let settable: Vec<&Arg> = known
        .get_arguments()
        .filter(|arg| arg.get_long().is_some() && arg.get_id() != CONFIG_FLAG)
        .filter(|arg| {
            !matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        })
        .collect();
    let find = |key: &str| {
        settable
            .iter()
            .copied()
            .find(|arg| arg.get_long() == Some(key))
    };
    let unknown: Vec<String> = table
        .keys()
        .filter(|key| find(key).is_none())
        .map(|key| match suggestion(&settable, key) {
            Some(long) => format!("`{key}` (did you mean `{long}`?)"),
            None => format!("`{key}`"),
        })
        .collect();
    if !unknown.is_empty() {
        let mut valid: Vec<&str> = settable.iter().filter_map(|arg| arg.get_long()).collect();
        valid.sort_unstable();
        return Err(ConfigError::UnknownKey {
            path: path.to_owned(),
            keys: format!(
                "key{} {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", ")
            ),
            valid: valid.join(", "),
        });
    }
    let mut file = BTreeMap::new();
    for (key, value) in &table {
        let Some(arg) = find(key) else { continue };
        let bad = |reason: String| ConfigError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
            reason,
        };
        let values: Vec<&'static str> = values_of(arg, value)
            .map_err(bad)?
            .into_iter()
            .map(leak)
            .collect();
        check(base, arg, &values).map_err(bad)?;
        file.insert(arg.get_id().to_string(), values);
    }
    Ok(file)
}

/// The long name of the argument a mistyped key most likely means: `redis_url`, `exempt-tools`.
pub(super) fn suggestion<'a>(settable: &[&'a Arg], key: &str) -> Option<&'a str> {
    let normal = |s: &str| s.replace('_', "-").to_ascii_lowercase();
    let key = normal(key);
    settable
        .iter()
        .find(|arg| {
            arg.get_long().is_some_and(|long| normal(long) == key)
                || normal(arg.get_id().as_str()) == key
        })
        .and_then(|arg| arg.get_long())
}

/// The raw values a TOML value gives `arg`.
pub(super) fn values_of(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(present) => {
                let set_true = matches!(arg.get_action(), ArgAction::SetTrue);
                Ok(vec![(*present == set_true).to_string()])
            }
            _ => Err("is a switch: use true or false".into()),
        },
        ArgAction::Count => match value {
            toml::Value::Integer(count) => Ok(vec![count.to_string()]),
            toml::Value::Boolean(present) => Ok(vec![u8::from(*present).to_string()]),
            _ => Err("is a count: use an integer".into()),
        },
        ArgAction::Set | ArgAction::Append => {
            let multiple = matches!(arg.get_action(), ArgAction::Append)
                || arg.get_value_delimiter().is_some()
                || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
            match value {
                toml::Value::Array(items) if multiple => items.iter().map(scalar).collect(),
                toml::Value::Array(_) => Err("takes one value, not an array".into()),
                other => Ok(vec![scalar(other)?]),
            }
        }
        _ => Err("cannot be set in a config file".into()),
    }
}

pub(super) fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        toml::Value::Datetime(when) => Ok(when.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("must be a string, number or boolean (or an array of them)".into())
        }
    }
}

/// Runs `arg`'s own parser on `values` alone, so a bad value is reported with the file's name
/// rather than as if typed on the command line.
pub(super) fn check(base: &Command, arg: &Arg, values: &[&'static str]) -> Result<(), String> {
    let id = arg.get_id().as_str();
    let values = values.to_vec();
    let probe = base
        .clone()
        .mut_args(|a| a.env(None::<&'static str>).required(false))
        .mut_arg(id, |a| a.default_values(values));
    let program = base.get_name().to_owned();
    match probe.try_get_matches_from([program]) {
        Ok(_) => Ok(()),
        Err(error) => match error.kind() {
            ErrorKind::InvalidValue
            | ErrorKind::ValueValidation
            | ErrorKind::InvalidUtf8
            | ErrorKind::TooManyValues
            | ErrorKind::TooFewValues
            | ErrorKind::WrongNumberOfValues => {
                let text = error.to_string();
                let line = text.lines().next().unwrap_or_default();
                Err(line.strip_prefix("error: ").unwrap_or(line).to_owned())
            }
            // Not about this value (e.g. a required group): the real parse reports it.
            _ => Ok(()),
        },
    }
}
