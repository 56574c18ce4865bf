//! The proxy's shared state: settings, store, keys, upstream client. Built once by [`App::new`] and
//! passed to every request as an `Arc`; nothing global.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::identity::PrincipalHasher;
use broker::ids::UpstreamId;
use broker::keys::{KeyError, KeyMaterial};
use broker::store::memory::MemoryStore;
use broker::store::redis::{RedisSettings, RedisStore};
use broker::store::{Lifetimes, Store, StoreError};
use broker::surface::SurfaceRules;
use broker::tokens::cache::{Signed, Verified};
use broker::tokens::{AssertionClaims, KeyRing, SESSION_AUDIENCE, SessionClaims, TokenError};
use sha2::{Digest, Sha256};

use crate::backend::upstream::Upstream;
use crate::config::settings::Settings;
use crate::edge::identify::{Identities, ResourceMetadata};
use crate::metrics::Metrics;

/// Lifetime of client session ids and handles (their real life is ruled by the store).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lifetime of the assertion sent to the backend with each request.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(120);
/// How long the same assertion is sent again for the same claims: it keeps at least 110 s of life.
pub const ASSERTION_REUSE: Duration = Duration::from_secs(10);
/// Issuer of every token.
pub const ISSUER: &str = "mcp-session-broker";

/// Why the proxy cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signing key: {0}")]
    Key(#[from] TokenError),
    #[error("key file: {0}")]
    KeyMaterial(#[from] KeyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Shared state of one broker process.
pub struct App {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub keys: KeyRing,
    /// Client session ids verified already (a client sends the same one with every request).
    pub session_ids: Verified<SessionClaims>,
    /// Assertions signed in the last [`ASSERTION_REUSE`], by their claims.
    pub assertions: Signed<AssertionClaims>,
    pub principals: PrincipalHasher,
    /// Who a request is from, by the configured principal source.
    pub identities: Identities,
    /// The backend's `resource_metadata` for 401s (principal source `jwt`), learned once.
    pub resource_metadata: ResourceMetadata,
    pub surfaces: SurfaceRules,
    pub upstream: Upstream,
    pub upstream_id: UpstreamId,
    /// Prometheus metrics (served at `/metrics`).
    pub metrics: Metrics,
    /// Backend sessions being opened for work sessions right now (one opening per work session).
    pub openings: crate::mcp::work_backend::Openings,
    /// Calls being recorded in their work sessions off the reply path, bounded.
    pub touches: crate::mcp::touches::Touches,
    /// Modern clients in front of a legacy or stateful backend.
    pub bridge: crate::backend::bridge::Bridge,
    /// The backend's `initialize` results, answered again without asking it.
    pub initialize_cache: Arc<crate::mcp::initialize::InitializeCache>,
    /// Seals the ids of server requests on their way to clients ([`broker::rpc_ids`]).
    pub sealer: broker::rpc_ids::Sealer,
    /// Legacy clients' requests in flight on this replica, for their cancellations.
    pub in_flight: Arc<crate::mcp::message_routing::InFlight>,
    /// The GET streams of work backend sessions this replica relays to their clients.
    pub hubs: crate::mcp::message_routing::notifications::Hubs,
}

impl App {
    /// Builds the state. In memory mode without a signing key, one is generated (and tokens die with
    /// the process, which the in-memory store does anyway).
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        let material = match &settings.signing_key {
            Some(key) => KeyMaterial::parse(key)?,
            None => {
                tracing::warn!(
                    "no signing key given: generated one for this process (memory mode only)"
                );
                KeyMaterial::Secret(broker::ids::random_hex128().repeat(2).into_bytes())
            }
        };
        let mut keys = KeyRing::from_material(ISSUER, &material)?;
        for old in &settings.verify_keys {
            keys.also_verify(&KeyMaterial::parse(old)?)?;
        }
        let secret = material.secret_bytes().ok_or(TokenError::Signing)?;
        let principals =
            PrincipalHasher::new(settings.principal_secret.as_deref().unwrap_or(&secret));
        let mut lifetimes = Lifetimes::with_idle(settings.idle_ttl);
        lifetimes.grace = settings.finalize_grace;
        let cap = settings.max_work_sessions;
        let store: Arc<dyn Store> = match &settings.redis_url {
            Some(url) => {
                let mut redis = RedisSettings::new(url.clone());
                redis.tls = settings.redis_tls.clone();
                Arc::new(RedisStore::new(redis, lifetimes)?.with_max_work_sessions(cap))
            }
            None => Arc::new(MemoryStore::new(lifetimes).with_max_work_sessions(cap)),
        };
        let identities = Identities::new(
            settings.principal_source.clone(),
            principals.clone(),
            settings.allow_anonymous,
        );
        Ok(Self {
            identities,
            resource_metadata: ResourceMetadata::default(),
            surfaces: SurfaceRules::new(settings.surface_rules.clone()),
            upstream: Upstream::new(&settings),
            upstream_id: upstream_id(&settings),
            metrics: Metrics::new(),
            openings: Default::default(),
            touches: Default::default(),
            bridge: Default::default(),
            initialize_cache: Default::default(),
            sealer: broker::rpc_ids::Sealer::new(&secret),
            in_flight: Default::default(),
            hubs: Default::default(),
            session_ids: Verified::new(SESSION_AUDIENCE),
            assertions: Signed::new(
                settings.assertion_audience.clone(),
                ASSERTION_LIFETIME,
                ASSERTION_REUSE,
            ),
            store,
            keys,
            principals,
            settings,
        })
    }

    /// Unix seconds now.
    pub fn now_secs(&self) -> u64 {
        now_ms() / 1000
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The upstream instance id: the configured one, else the host name plus the upstream authority,
/// hashed (stable across restarts of this replica, different for each pod's own backend).
fn upstream_id(settings: &Settings) -> UpstreamId {
    let seed = match &settings.upstream_instance {
        Some(id) => id.clone(),
        None => {
            let host = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .unwrap_or_default();
            format!("{}|{}", host.trim(), settings.upstream)
        }
    };
    let digest = Sha256::digest(seed.as_bytes());
    UpstreamId::parse(hex::encode(&digest[..8])).unwrap_or_else(|_| unreachable!())
}
