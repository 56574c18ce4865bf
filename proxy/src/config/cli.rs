//! The command line: every flag also as an environment variable, turned into [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use broker::resolve::UnkeyedPolicy;
use broker::surface::SurfaceRule;
use clap::Parser;
use http::{HeaderName, Uri};

use crate::config::admin::{self, AdminError, AdminListen, AdminToken};
use crate::config::settings::Settings;

mod principal;
mod store;

pub use principal::{PrincipalArgs, PrincipalError, Source as PrincipalSourceArg};
pub use store::{FinalizeArgs, RedisTlsArgs, StoreArgsError};

/// What `session-broker --help` says after the server's flags: the subcommands and where to read on.
pub const HELP_SUBCOMMANDS: &str = "\
Operator commands (each has its own --help):
  session-broker sessions list|show|rebind|end ...  look at and act on one principal's work sessions
                                                    (a client of the admin API, --admin-listen)
  session-broker sessions dead-letters|replay ID    finalizations whose actions failed; deliver one again
  session-broker token inspect TOKEN                verify a session id, handle or assertion; print its claims
  session-broker keygen [--ed25519]                 print a fresh signing key
  session-broker check [SERVER FLAGS]               check this configuration, like nginx -t: the signing
                                                    key, the store, the upstream, the identity source

Example:
  session-broker --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8001/mcp
  (clients then connect to http://127.0.0.1:8080/mcp with Authorization: Bearer <credential>)

Every flag, its environment variable and the config file: docs/operations.md; the subcommands:
docs/admin.md.";

/// Keeps MCP work sessions alive across client reconnects.
///
/// A reverse proxy in front of one MCP server (Streamable HTTP): it remembers the project each
/// conversation selected, replays it onto every new MCP session and tells the backend on every call.
#[derive(Debug, Parser)]
#[command(name = "session-broker", version, after_help = HELP_SUBCOMMANDS)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The MCP server, e.g. http://127.0.0.1:8001/mcp (clients use its path).
    #[arg(long, env = "BROKER_UPSTREAM")]
    pub upstream: Uri,
    /// Redis URL: redis://, rediss:// (TLS), redis+cluster://HOST:PORT[,HOST:PORT...] or
    /// rediss+cluster://... (Redis Cluster); without it work sessions live in memory (one replica).
    #[arg(long, env = "BROKER_REDIS_URL")]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub redis_tls: RedisTlsArgs,
    /// Sliding idle TTL of a work session (e.g. 120m, 2h, 90s).
    #[arg(long, env = "BROKER_IDLE_TTL", default_value = "120m", value_parser = humantime::parse_duration)]
    pub idle_ttl: Duration,
    /// File holding the signing key: an HMAC secret (HS256, at least 32 bytes, surrounding whitespace
    /// ignored) or an Ed25519 private key in PKCS#8 PEM (EdDSA; its public key is served as a JWKS).
    #[arg(long, env = "BROKER_SIGNING_KEY_FILE", conflicts_with = "signing_key")]
    pub signing_key_file: Option<PathBuf>,
    /// The signing secret itself (prefer the file).
    #[arg(long, env = "BROKER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Files with older keys still accepted for verification (rotation): secrets, Ed25519 PEM keys.
    #[arg(long, env = "BROKER_VERIFY_KEY_FILES", value_delimiter = ',')]
    pub verify_key_file: Vec<PathBuf>,
    /// File with the secret for principal hashes, when it must outlive signing-key rotations.
    #[arg(long, env = "BROKER_PRINCIPAL_SECRET_FILE")]
    pub principal_secret_file: Option<PathBuf>,
    /// The backend tool that selects a project.
    #[arg(
        long,
        env = "BROKER_SELECT_TOOL",
        default_value = "select_project_for_session"
    )]
    pub select_tool: String,
    /// The select tool's argument naming the project.
    #[arg(long, env = "BROKER_SELECT_ARG", default_value = "name")]
    pub select_arg: String,
    /// Tools that need no project (repeatable; default list_projects).
    #[arg(
        long = "exempt-tool",
        env = "BROKER_EXEMPT_TOOLS",
        value_delimiter = ',',
        default_value = "list_projects"
    )]
    pub exempt_tools: Vec<String>,
    /// How calls with no handle and no conversation key use the surface's binding.
    #[arg(long, env = "BROKER_UNKEYED_POLICY", default_value = "guarded")]
    pub unkeyed_policy: UnkeyedPolicy,
    /// How long after a work session's last call an unkeyed call on the same surface may still
    /// continue it (guarded and surface policies); past it the call is asked to select (0: never).
    #[arg(long, env = "BROKER_SURFACE_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub surface_window: Duration,
    /// A request header that carries a conversation id.
    #[arg(long, env = "BROKER_CONVERSATION_HEADER")]
    pub conversation_header: Option<HeaderName>,
    /// `_meta` keys of a tools/call that carry a conversation id (first present wins).
    #[arg(
        long = "conversation-meta-key",
        env = "BROKER_CONVERSATION_META_KEYS",
        value_delimiter = ',',
        default_value = "openai/session,gen_ai.conversation.id"
    )]
    pub conversation_meta_keys: Vec<String>,
    /// Modern (2026-07-28, sessionless) clients: `auto` bridges them onto legacy backend sessions
    /// when the backend is legacy or stateful; `off` passes their requests through.
    #[arg(long, env = "BROKER_BRIDGE", default_value = "auto")]
    pub bridge: broker::modern::BridgeMode,
    /// `on`: answer `initialize` from the backend's cached result (learned from a real one) and open a
    /// client's own backend session only when something needs it; `off`: forward every `initialize`.
    #[arg(
        long,
        env = "BROKER_INITIALIZE_CACHE",
        value_enum,
        default_value = "on"
    )]
    pub initialize_cache: OnOff,
    /// Redis store: `on` answers a steady call's lookup from this replica's memory, kept honest by
    /// Redis (every select, rebind, end and finalization is announced to every replica); `off`:
    /// every call reads Redis.
    #[arg(long, env = "BROKER_LOOKUP_CACHE", value_enum, default_value = "on")]
    pub lookup_cache: OnOff,
    /// Let requests without a credential in, all as one anonymous principal.
    #[arg(long, env = "BROKER_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    #[command(flatten)]
    pub principal: PrincipalArgs,
    /// Id of the backend instance behind this replica (default: host name + upstream).
    #[arg(long, env = "BROKER_UPSTREAM_INSTANCE")]
    pub upstream_instance: Option<String>,
    /// Largest request body (bytes).
    #[arg(long, env = "BROKER_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    pub max_body: usize,
    /// How long the backend may take to answer with headers.
    #[arg(long, env = "BROKER_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// How long an idle connection to the backend is kept for reuse: keep it below the backend's own
    /// keep-alive timeout (uvicorn's is 5 s), or a request may be sent on a connection it is closing.
    #[arg(long, env = "BROKER_UPSTREAM_IDLE_TIMEOUT", default_value = "4s", value_parser = humantime::parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// Origins allowed besides loopback ones (repeatable; `*` allows all).
    #[arg(
        long = "allowed-origin",
        env = "BROKER_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Extra surface rules, SOURCE:PATTERN=SURFACE (SOURCE: ua, client, header.NAME), tried first.
    #[arg(
        long = "surface-rule",
        env = "BROKER_SURFACE_RULES",
        value_delimiter = ','
    )]
    pub surface_rules: Vec<SurfaceRule>,
    #[command(flatten)]
    pub finalize: FinalizeArgs,
    /// Most live work sessions one credential may have (0: no limit).
    #[arg(long, env = "BROKER_MAX_WORK_SESSIONS", default_value_t = 50)]
    pub max_work_sessions: u64,
    /// How long in-flight requests and open streams get to finish on SIGTERM before the broker exits.
    #[arg(long, env = "BROKER_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Threads serving requests: 0 for one per CPU; 1 serves everything on one thread, which costs
    /// the least CPU per request (the choice for a sidecar given one CPU or less).
    #[arg(long, env = "BROKER_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Export traces: `otlp` (OTLP over HTTP/protobuf to OTEL_EXPORTER_OTLP_ENDPOINT, default
    /// http://localhost:4318) or `none`.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", value_enum, default_value = "none")]
    pub traces: TracesExporter,
    /// Log as JSON lines.
    #[arg(long, env = "BROKER_LOG_JSON")]
    pub log_json: bool,
    /// Address of the admin API (IP:PORT), or `off`; off loopback it needs --admin-token-file.
    #[arg(long, env = "BROKER_ADMIN_LISTEN", default_value = admin::DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: AdminListen,
    /// File holding the bearer token every admin request must present (at least 16 bytes).
    #[arg(long, env = "BROKER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// How long a request body may take to arrive in total, from the end of its headers (then 408).
    #[arg(long, env = "BROKER_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Most client connections open at once (then 503 with Retry-After); keep it under the file limit.
    #[arg(long, env = "BROKER_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most request-body bytes all requests together may hold at once (then 503 with Retry-After).
    #[arg(long, env = "BROKER_MAX_INFLIGHT_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,
}

/// Why the command line cannot start a broker.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "a signing key is required with --redis-url (replicas and restarts must verify each other's tokens): \
         pass --signing-key-file PATH or set BROKER_SIGNING_KEY (at least 32 bytes)"
    )]
    MissingKey,
    #[error("the key in {0} is shorter than 32 bytes")]
    WeakKey(String),
    #[error("--upstream must be an http:// URL with a host, e.g. http://127.0.0.1:8001/mcp")]
    BadUpstream,
    #[error("the admin token in {0} is shorter than {min} bytes", min = admin::MIN_TOKEN_BYTES)]
    WeakAdminToken(String),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Principal(#[from] PrincipalError),
    #[error(transparent)]
    Store(#[from] StoreArgsError),
    #[error(
        "--max-inflight-body-bytes ({inflight}) is smaller than --max-body ({body}): no body of the \
         largest accepted size could ever be read"
    )]
    InflightBelowMaxBody { inflight: usize, body: usize },
}

fn read_secret(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    let raw = std::fs::read(path).map_err(|source| CliError::ReadKey {
        path: path.clone(),
        source,
    })?;
    let trimmed = raw.trim_ascii().to_vec();
    if trimmed.len() < broker::tokens::MIN_SECRET_BYTES {
        return Err(CliError::WeakKey(path.display().to_string()));
    }
    Ok(trimmed)
}

/// A setting that is on or off.
/// Where traces go (`--traces`, `OTEL_TRACES_EXPORTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TracesExporter {
    /// No traces (the default).
    None,
    /// OTLP over HTTP/protobuf.
    Otlp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl Args {
    /// Turns the command line into settings, reading key files.
    pub fn into_settings(self) -> Result<Settings, CliError> {
        if self.upstream.scheme_str() != Some("http") || self.upstream.authority().is_none() {
            return Err(CliError::BadUpstream);
        }
        let signing_key = match (&self.signing_key_file, &self.signing_key) {
            (Some(path), _) => Some(read_secret(path)?),
            (None, Some(key)) => {
                let key = key.trim().as_bytes().to_vec();
                if key.len() < broker::tokens::MIN_SECRET_BYTES {
                    return Err(CliError::WeakKey("BROKER_SIGNING_KEY".into()));
                }
                Some(key)
            }
            (None, None) => None,
        };
        if self.redis_url.is_some() && signing_key.is_none() {
            return Err(CliError::MissingKey);
        }
        let mut settings = Settings::new(self.upstream);
        settings.redis_tls = self.redis_tls.into_files(self.redis_url.as_deref())?;
        settings.redis_url = self.redis_url;
        settings.idle_ttl = self.idle_ttl;
        settings.signing_key = signing_key;
        settings.verify_keys = self
            .verify_key_file
            .iter()
            .map(read_secret)
            .collect::<Result<_, _>>()?;
        settings.principal_secret = self
            .principal_secret_file
            .as_ref()
            .map(read_secret)
            .transpose()?;
        settings.select_tool = self.select_tool;
        settings.select_arg = self.select_arg;
        settings.exempt_tools = self
            .exempt_tools
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        settings.unkeyed_policy = self.unkeyed_policy;
        settings.conversation_header = self.conversation_header;
        settings.surface_window = self.surface_window;
        settings.bridge = self.bridge;
        settings.initialize_cache = self.initialize_cache == OnOff::On;
        settings.lookup_cache = self.lookup_cache == OnOff::On;
        settings.conversation_meta_keys = self
            .conversation_meta_keys
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect();
        settings.allow_anonymous = self.allow_anonymous;
        settings.principal_source = self.principal.into_source()?;
        settings.upstream_instance = self.upstream_instance;
        settings.max_body = self.max_body;
        settings.upstream_timeout = self.upstream_timeout;
        settings.upstream_idle_timeout = self.upstream_idle_timeout;
        settings.allowed_origins = self
            .allowed_origins
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect();
        settings.surface_rules = self.surface_rules;
        self.finalize.apply(&mut settings)?;
        settings.drain_timeout = self.drain_timeout;
        settings.max_work_sessions = self.max_work_sessions;
        settings.admin_listen = self.admin_listen.0;
        settings.body_timeout = self.body_timeout;
        settings.max_connections = usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        settings.max_inflight_body_bytes = self.max_inflight_body_bytes;
        if settings.max_inflight_body_bytes < settings.max_body {
            return Err(CliError::InflightBelowMaxBody {
                inflight: settings.max_inflight_body_bytes,
                body: settings.max_body,
            });
        }
        if let Some(path) = &self.admin_token_file {
            let raw = std::fs::read(path).map_err(|source| CliError::ReadKey {
                path: path.clone(),
                source,
            })?;
            settings.admin_token = Some(
                AdminToken::new(&raw)
                    .ok_or_else(|| CliError::WeakAdminToken(path.display().to_string()))?,
            );
        }
        admin::check(settings.admin_listen, settings.admin_token.as_ref())?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;
