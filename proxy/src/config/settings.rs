//! Everything the proxy needs to run, as plain values: built by the command line in `main`, or
//! directly by tests (which never touch the environment).

use std::net::SocketAddr;
use std::time::Duration;

use broker::resolve::UnkeyedPolicy;
use broker::surface::SurfaceRule;
use http::{HeaderName, Uri};

use crate::config::admin::AdminToken;

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The MCP server behind the broker; clients use its path.
    pub upstream: Uri,
    /// Redis URL (one node or a cluster, plain or TLS); `None` keeps work sessions in memory.
    pub redis_url: Option<String>,
    /// CA and client certificate for Redis over TLS.
    pub redis_tls: broker::store::redis::TlsFiles,
    /// Sliding idle TTL of a work session.
    pub idle_ttl: Duration,
    /// HMAC secret that signs tokens and keys principal hashes; `None` in memory mode generates one.
    pub signing_key: Option<Vec<u8>>,
    /// Older keys still accepted when verifying tokens (rotation).
    pub verify_keys: Vec<Vec<u8>>,
    /// Secret for principal hashes, when it must differ from the signing key (rotation).
    pub principal_secret: Option<Vec<u8>>,
    pub select_tool: String,
    pub select_arg: String,
    /// Tools that need no project (the select tool always needs none).
    pub exempt_tools: Vec<String>,
    pub unkeyed_policy: UnkeyedPolicy,
    /// How long after a work session's last call an unkeyed call on its surface may continue it.
    pub surface_window: Duration,
    /// A header that carries a conversation id.
    pub conversation_header: Option<HeaderName>,
    /// `_meta` keys of a `tools/call` that carry a conversation id, first found wins.
    pub conversation_meta_keys: Vec<String>,
    /// Modern (2026-07-28) clients: bridged onto legacy backend sessions (`auto`: when the backend
    /// is legacy or stateful), or passed through (`off`).
    pub bridge: broker::modern::BridgeMode,
    /// Answer `initialize` from the backend's cached result and open the client's own backend
    /// session only when something needs it.
    pub initialize_cache: bool,
    /// Redis store: serve settled lookups from memory, kept honest by Redis
    /// (`broker::store::redis::cache`).
    pub lookup_cache: bool,
    pub allow_anonymous: bool,
    /// Where the principal comes from: the bearer credential's hash, a verified OAuth access
    /// token's issuer and subject, or a trusted proxy's header.
    pub principal_source: crate::config::identity::PrincipalSource,
    /// Id of the upstream instance; derived from the host name and upstream when absent.
    pub upstream_instance: Option<String>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// How long the backend may take to answer with headers.
    pub upstream_timeout: Duration,
    /// How long an idle backend connection is kept for reuse (below the backend's keep-alive).
    pub upstream_idle_timeout: Duration,
    /// Origins allowed besides loopback ones (`*` allows all).
    pub allowed_origins: Vec<String>,
    pub surface_rules: Vec<SurfaceRule>,
    /// `aud` of the assertions sent to the backend.
    pub assertion_audience: String,
    /// How long in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
    /// Most live work sessions one principal may have (0: no limit), so one credential cannot flood
    /// the store. A select that would start one more is refused before it reaches the backend.
    pub max_work_sessions: u64,
    /// POSTed a JSON event for each finalized work session (at least once, `Idempotency-Key` set).
    pub on_expire_webhook: Option<Uri>,
    /// Backend tool called for each finalized work session, on a fresh backend session with the
    /// project selected first (e.g. a handover tool).
    pub on_expire_tool: Option<String>,
    /// The `Authorization` value the handover tool is called with (marked sensitive).
    pub on_expire_tool_auth: Option<http::HeaderValue>,
    /// Deliveries of a finalized event before it goes to the dead letters.
    pub finalize_attempts: u32,
    /// How long a finalized work session stays readable for operators.
    pub finalize_grace: Duration,
    /// How often each replica looks for work sessions past their idle deadline.
    pub sweep_interval: Duration,
    /// An event not acknowledged within this is delivered again (the wait doubles each time).
    pub redeliver_after: Duration,
    /// The admin API's address; `None` turns it off. The command line defaults to 127.0.0.1:9091,
    /// [`Settings::new`] (tests, embedders) to off.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token every admin request must present; required off loopback.
    pub admin_token: Option<AdminToken>,
    /// How long a request body may take to arrive, in total, from the end of its headers (408 after).
    pub body_timeout: Duration,
    /// Most client connections open at once on the main listener (503 with `Retry-After` past it).
    pub max_connections: usize,
    /// Most request-body bytes all requests together may hold at once (503 with `Retry-After` past it).
    pub max_inflight_body_bytes: usize,
}

impl Settings {
    /// Defaults for everything but the upstream.
    pub fn new(upstream: Uri) -> Self {
        Self {
            upstream,
            redis_url: None,
            redis_tls: Default::default(),
            idle_ttl: Duration::from_secs(120 * 60),
            signing_key: None,
            verify_keys: Vec::new(),
            principal_secret: None,
            select_tool: "select_project_for_session".into(),
            select_arg: "name".into(),
            exempt_tools: vec!["list_projects".into()],
            unkeyed_policy: UnkeyedPolicy::Guarded,
            surface_window: Duration::from_secs(10 * 60),
            conversation_header: None,
            bridge: Default::default(),
            initialize_cache: true,
            lookup_cache: true,
            conversation_meta_keys: vec!["openai/session".into(), "gen_ai.conversation.id".into()],
            allow_anonymous: false,
            principal_source: Default::default(),
            upstream_instance: None,
            max_body: 4 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(4),
            allowed_origins: Vec::new(),
            surface_rules: Vec::new(),
            assertion_audience: "mcp-backend".into(),
            drain_timeout: Duration::from_secs(10),
            max_work_sessions: 50,
            on_expire_webhook: None,
            on_expire_tool: None,
            on_expire_tool_auth: None,
            finalize_attempts: 8,
            finalize_grace: Duration::from_secs(10 * 60),
            sweep_interval: Duration::from_secs(1),
            redeliver_after: Duration::from_secs(30),
            admin_listen: None,
            admin_token: None,
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_inflight_body_bytes: 32 * 1024 * 1024,
        }
    }

    /// The path clients use: the upstream's.
    pub fn mcp_path(&self) -> &str {
        match self.upstream.path() {
            "" => "/",
            path => path,
        }
    }

    /// Does this tool need a project?
    pub fn needs_project(&self, tool: &str) -> bool {
        tool != self.select_tool && !self.exempt_tools.iter().any(|t| t == tool)
    }
}
