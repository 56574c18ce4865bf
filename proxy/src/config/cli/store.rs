//! The command line's store and finalization flags: Redis TLS files (read here, so the store never
//! touches the file system), and how idle work sessions are finalized (actions, the handover tool's
//! credential, redelivery).

use std::path::PathBuf;
use std::time::Duration;

use broker::store::redis::TlsFiles;
use clap::Args;
use http::{HeaderValue, Uri};

use crate::config::settings::Settings;

/// Redis TLS: a CA, and a client certificate for servers that require one.
#[derive(Debug, Args)]
pub struct RedisTlsArgs {
    /// PEM file with the CA that signed the Redis servers' certificates (rediss://; default: the
    /// public web roots).
    #[arg(long, env = "BROKER_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM file with a client certificate (chain) for Redis servers that require one (rediss://).
    #[arg(
        long,
        env = "BROKER_REDIS_CLIENT_CERT_FILE",
        requires = "redis_client_key_file"
    )]
    pub redis_client_cert_file: Option<PathBuf>,
    /// PEM file with the private key of --redis-client-cert-file.
    #[arg(
        long,
        env = "BROKER_REDIS_CLIENT_KEY_FILE",
        requires = "redis_client_cert_file"
    )]
    pub redis_client_key_file: Option<PathBuf>,
}

/// Why the store flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreArgsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--redis-ca-file and --redis-client-cert-file need a TLS --redis-url (rediss:// or rediss+cluster://)"
    )]
    TlsWithoutTls,
    #[error(
        "--on-expire-tool-auth-file {0}: the file is empty or holds characters a header cannot"
    )]
    BadCredential(String),
    #[error("--on-expire-webhook must be an http:// URL with a host")]
    BadWebhook,
}

/// Finalization: what runs when a work session idles out, and how often it is tried.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// POST a JSON event here for each finalized work session (http://; retried, Idempotency-Key set).
    #[arg(long, env = "BROKER_ON_EXPIRE_WEBHOOK")]
    pub on_expire_webhook: Option<Uri>,
    /// Call this backend tool for each finalized work session, with its project selected first.
    #[arg(long, env = "BROKER_ON_EXPIRE_TOOL")]
    pub on_expire_tool: Option<String>,
    /// File holding the credential the handover tool is called with (as Authorization: a bare
    /// token is sent as Bearer, a value with a scheme as is).
    #[arg(long, env = "BROKER_ON_EXPIRE_TOOL_AUTH_FILE")]
    pub on_expire_tool_auth_file: Option<PathBuf>,
    /// Deliveries of a finalized event before it goes to the dead letters (backoff doubling from
    /// --redeliver-after, at most 1h).
    #[arg(long, env = "BROKER_FINALIZE_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub finalize_attempts: u32,
    /// How long a finalized work session stays readable (admin API); unfinalized ones wait for a
    /// sweeper, however late (at most 7 days).
    #[arg(long, env = "BROKER_FINALIZE_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub finalize_grace: Duration,
    /// How often each replica looks for idle work sessions to finalize.
    #[arg(long, env = "BROKER_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// Deliver a finalized event again when it is not acknowledged by then (its actions failed or
    /// its replica died); the wait doubles with each delivery.
    #[arg(long, env = "BROKER_REDELIVER_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub redeliver_after: Duration,
}

impl FinalizeArgs {
    /// Checks the values, reads the credential file, and sets them.
    pub fn apply(self, settings: &mut Settings) -> Result<(), StoreArgsError> {
        if let Some(webhook) = &self.on_expire_webhook
            && (webhook.scheme_str() != Some("http") || webhook.authority().is_none())
        {
            return Err(StoreArgsError::BadWebhook);
        }
        settings.on_expire_webhook = self.on_expire_webhook;
        settings.on_expire_tool = self.on_expire_tool.filter(|t| !t.is_empty());
        settings.on_expire_tool_auth = self
            .on_expire_tool_auth_file
            .as_ref()
            .map(tool_credential)
            .transpose()?;
        settings.finalize_attempts = self.finalize_attempts;
        settings.finalize_grace = self.finalize_grace;
        settings.sweep_interval = self.sweep_interval;
        settings.redeliver_after = self.redeliver_after;
        Ok(())
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, StoreArgsError> {
    std::fs::read(path).map_err(|source| StoreArgsError::Read {
        path: path.clone(),
        source,
    })
}

impl RedisTlsArgs {
    /// Reads the files; refuses them with a URL that is not TLS.
    pub fn into_files(self, url: Option<&str>) -> Result<TlsFiles, StoreArgsError> {
        let files = TlsFiles {
            ca: self.redis_ca_file.as_ref().map(read).transpose()?,
            client: match (&self.redis_client_cert_file, &self.redis_client_key_file) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            },
        };
        let tls =
            url.is_some_and(|u| u.starts_with("rediss://") || u.starts_with("rediss+cluster://"));
        if files != TlsFiles::default() && !tls {
            return Err(StoreArgsError::TlsWithoutTls);
        }
        Ok(files)
    }
}

/// The `Authorization` value the handover tool is called with: the file's content, trimmed; a bare
/// token becomes `Bearer <token>`, a value with a scheme (`Basic ...`, `Bearer ...`) is used as is.
pub fn tool_credential(path: &PathBuf) -> Result<HeaderValue, StoreArgsError> {
    let raw = read(path)?;
    let text = String::from_utf8_lossy(&raw).trim().to_owned();
    let value = if text.contains(' ') {
        text
    } else {
        format!("Bearer {text}")
    };
    let bad = || StoreArgsError::BadCredential(path.display().to_string());
    if value.ends_with(' ') || value == "Bearer " {
        return Err(bad());
    }
    let mut header = HeaderValue::from_str(&value).map_err(|_| bad())?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("msb-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_bare_token_is_a_bearer_credential_and_a_scheme_is_kept() {
        let bare = tool_credential(&file("bare", "s3cret\n")).expect("ok");
        assert_eq!(bare, "Bearer s3cret");
        assert!(bare.is_sensitive());
        let basic = tool_credential(&file("basic", "Basic dXNlcjpwdw==")).expect("ok");
        assert_eq!(basic, "Basic dXNlcjpwdw==");
        assert!(tool_credential(&file("empty", "  \n")).is_err());
        assert!(tool_credential(&file("ctl", "a\u{7}b")).is_err());
    }

    #[test]
    fn tls_files_need_a_tls_url() {
        let args = RedisTlsArgs {
            redis_ca_file: Some(file("ca", "-----BEGIN CERTIFICATE-----")),
            redis_client_cert_file: None,
            redis_client_key_file: None,
        };
        assert!(matches!(
            args.into_files(Some("redis://h:6379")),
            Err(StoreArgsError::TlsWithoutTls)
        ));
        let args = RedisTlsArgs {
            redis_ca_file: Some(file("ca2", "pem")),
            redis_client_cert_file: None,
            redis_client_key_file: None,
        };
        let files = args.into_files(Some("rediss+cluster://h:1")).expect("ok");
        assert_eq!(files.ca.as_deref(), Some(b"pem".as_slice()));
    }
}
