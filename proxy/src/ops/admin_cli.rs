//! The operator subcommands of `session-broker`, parsed before the server's command line when the
//! first argument names one (the server itself takes no positional argument):
//!
//! - `sessions list|show WS|end WS|rebind WS PROJECT`: the admin API ([`crate::ops::admin`]) as a client,
//!   with the principal named by `--principal HASH` or `--credential C`; prints the JSON answer;
//! - `sessions dead-letters|replay ID`: the finalization events whose actions failed every attempt,
//!   and delivering one again (no principal needed);
//! - `token inspect TOKEN`: verifies a session id, handle or assertion and prints its claims;
//! - `keygen [--ed25519]`: prints a fresh signing key.
//!
//! Exit status: 0 on success, 1 when the API refused or the token is invalid, 2 for usage errors.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use broker::ids::{PrincipalId, WorkSessionId};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::ops::admin::{self, PRINCIPAL_CREDENTIAL_HEADER};

/// The first arguments that select these subcommands.
pub const SUBCOMMANDS: [&str; 3] = ["sessions", "token", "keygen"];

/// Whether `argv` (program name first) runs a subcommand rather than the server.
pub fn is_subcommand(argv: &[OsString]) -> bool {
    argv.get(1)
        .is_some_and(|first| SUBCOMMANDS.iter().any(|name| first == name))
}

/// Operator commands of the session broker (run without a subcommand, it is the server: see
/// `session-broker --help`).
#[derive(Debug, Parser)]
#[command(name = "session-broker", version)]
pub struct AdminCommand {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look at and act on one principal's work sessions, through the admin API.
    Sessions(SessionsArgs),
    /// Tokens the broker issued.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print a fresh signing key: 48 random bytes in base64 (HS256), or an Ed25519 PKCS#8 PEM.
    Keygen {
        /// An Ed25519 private key (EdDSA; backends verify with the broker's JWKS).
        #[arg(long)]
        ed25519: bool,
    },
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub command: SessionsCommand,
    /// The principal, by its hash (wins over --credential).
    #[arg(long, global = true, value_name = "HASH")]
    pub principal: Option<String>,
    /// The principal, by the credential its clients send (hashed by the broker, never logged).
    #[arg(
        long,
        global = true,
        env = "BROKER_ADMIN_CREDENTIAL",
        hide_env_values = true
    )]
    pub credential: Option<String>,
    /// The admin API (the broker's --admin-listen).
    #[arg(
        long,
        global = true,
        env = "BROKER_ADMIN_URL",
        default_value = "http://127.0.0.1:9091"
    )]
    pub admin_url: String,
    /// File holding the admin token, when the broker has one.
    #[arg(long, global = true, env = "BROKER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// The principal's work sessions, newest first.
    List,
    /// One work session.
    Show { ws: String },
    /// Finalize a live work session now (the next sweep runs its actions).
    End { ws: String },
    /// Move a live work session to another project.
    Rebind { ws: String, project: String },
    /// Finalization events whose actions failed every attempt (any principal), newest first.
    DeadLetters,
    /// Deliver a dead letter again, from its first attempt.
    Replay { id: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Verify a session id, work-session handle or assertion (`-` reads it from stdin) and print
    /// its claims.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub token: String,
    /// File holding the broker's signing key (secret or Ed25519 PEM, private or public).
    #[arg(long, env = "BROKER_SIGNING_KEY_FILE", conflicts_with = "signing_key")]
    pub signing_key_file: Option<PathBuf>,
    /// The signing secret itself (prefer the file).
    #[arg(long, env = "BROKER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Older keys also accepted (repeatable).
    #[arg(long, env = "BROKER_VERIFY_KEY_FILES", value_delimiter = ',')]
    pub verify_key_file: Vec<PathBuf>,
    /// The audience of backend assertions.
    #[arg(long, default_value = "mcp-backend")]
    pub assertion_audience: String,
}

mod token;

use token::{inspect, keygen};

/// A failure that ends the command: its exit status and message (empty when already printed).
struct Exit(i32, String);

fn usage(message: impl Into<String>) -> Exit {
    Exit(2, message.into())
}

/// Runs the subcommand in `argv` (program name first); returns the exit status.
pub async fn main(argv: Vec<OsString>) -> i32 {
    let parsed = match AdminCommand::try_parse_from(argv) {
        Ok(parsed) => parsed,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    let result = match parsed.command {
        Command::Sessions(args) => sessions(args).await,
        Command::Token {
            command: TokenCommand::Inspect(args),
        } => inspect(&args),
        Command::Keygen { ed25519 } => keygen(ed25519),
    };
    match result {
        Ok(()) => 0,
        Err(Exit(status, message)) => {
            if !message.is_empty() {
                eprintln!("session-broker: {message}");
            }
            status
        }
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, Exit> {
    std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))
}

// --- sessions ----------------------------------------------------------------------------------

async fn sessions(args: SessionsArgs) -> Result<(), Exit> {
    let operator_wide = matches!(
        args.command,
        SessionsCommand::DeadLetters | SessionsCommand::Replay { .. }
    );
    let (method, path, body) = match &args.command {
        SessionsCommand::List => (Method::GET, "/sessions".to_owned(), None),
        SessionsCommand::Show { ws } => (Method::GET, format!("/sessions/{}", ws_id(ws)?), None),
        SessionsCommand::End { ws } => {
            (Method::POST, format!("/sessions/{}/end", ws_id(ws)?), None)
        }
        SessionsCommand::Rebind { ws, project } => (
            Method::POST,
            format!("/sessions/{}/rebind", ws_id(ws)?),
            Some(json!({ "project": project })),
        ),
        SessionsCommand::DeadLetters => (Method::GET, "/dead-letters".to_owned(), None),
        SessionsCommand::Replay { id } => {
            let valid = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-');
            if !valid {
                return Err(usage(format!("`{id}` is not a dead-letter id")));
            }
            (Method::POST, format!("/dead-letters/{id}/replay"), None)
        }
    };
    let method_is_post = method == Method::POST;
    let mut request = Request::builder().method(method);
    let path = match (&args.principal, &args.credential) {
        _ if operator_wide => path,
        (Some(hash), _) => {
            let hash = PrincipalId::parse(hash.as_str())
                .map_err(|e| usage(format!("--principal: {e}")))?;
            format!("{path}?principal={hash}")
        }
        (None, Some(credential)) => {
            let value = HeaderValue::from_str(credential)
                .map_err(|_| usage("--credential must be visible ASCII"))?;
            request = request.header(PRINCIPAL_CREDENTIAL_HEADER, value);
            path
        }
        (None, None) => {
            return Err(usage(
                "name the principal: --principal HASH or --credential C (or BROKER_ADMIN_CREDENTIAL)",
            ));
        }
    };
    let base = args.admin_url.trim_end_matches('/');
    let uri: Uri = format!("{base}{path}")
        .parse()
        .ok()
        .filter(|uri: &Uri| uri.scheme_str() == Some("http") && uri.authority().is_some())
        .ok_or_else(|| usage("--admin-url must be an http:// URL, e.g. http://127.0.0.1:9091"))?;
    if let Some(file) = &args.admin_token_file {
        let token = admin::AdminToken::new(&read_file(file)?).ok_or_else(|| {
            usage(format!(
                "the admin token in {} is shorter than {} bytes",
                file.display(),
                admin::MIN_TOKEN_BYTES
            ))
        })?;
        let value = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), token.expose()].concat())
            .map_err(|_| usage("the admin token must be visible ASCII"))?;
        request = request.header(header::AUTHORIZATION, value);
    }
    // Every admin POST declares JSON, with a body or without (the API refuses others).
    if method_is_post {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Bytes::new, |value| Bytes::from(value.to_string()));
    let request = request
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| usage(format!("bad request: {e}")))?;
    let (status, value) = send(request, base).await?;
    if status.is_success() {
        print_json(&value);
        return Ok(());
    }
    let error = value
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string());
    Err(Exit(1, format!("HTTP {}: {error}", status.as_u16())))
}

fn ws_id(ws: &str) -> Result<WorkSessionId, Exit> {
    WorkSessionId::parse(ws).map_err(|e| usage(format!("`{ws}` is not a work session id: {e}")))
}

async fn send(
    request: Request<Full<Bytes>>,
    base: &str,
) -> Result<(http::StatusCode, Value), Exit> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let unreachable = |detail: String| Exit(1, format!("the admin API at {base}: {detail}"));
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| unreachable("no answer within 30s".into()))?
        .map_err(|e| unreachable(crate::backend::upstream::error_chain(&e)))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), 16 * 1024 * 1024)
        .collect()
        .await
        .map_err(|e| unreachable(format!("the answer could not be read: {e}")))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}
