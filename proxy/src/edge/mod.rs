//! The edge: what happens to a request before it is an MCP message. Accepting connections, limits
//! on bodies and in-flight bytes, canonical paths, identity, and the routes that hand the MCP path
//! to the MCP layer.

pub mod identify;
pub mod limits;
pub mod origin;
pub mod path;
pub mod routes;
pub mod server;

use std::ops::Deref;
use std::sync::Arc;

use broker::identity::PrincipalHasher;
use broker::ids::UpstreamId;
use broker::keys::{KeyError, KeyMaterial};
use broker::store::memory::MemoryStore;
use broker::store::redis::{RedisSettings, RedisStore};
use broker::store::{Lifetimes, Store, StoreError};
use broker::surface::SurfaceRules;
use broker::tokens::cache::{Signed, Verified};
use broker::tokens::{KeyRing, SESSION_AUDIENCE, TokenError};
use sha2::{Digest, Sha256};

use crate::backend::upstream::Upstream;
use crate::backend::{ASSERTION_LIFETIME, ASSERTION_REUSE, Backend, ISSUER};
use crate::config::Settings;
use crate::mcp::Mcp;
use crate::mcp::touches::{MAX_RUNNING, MAX_WAITING, Touches};
use crate::metrics::Metrics;
use identify::{Identities, ResourceMetadata};

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

/// The state of one broker process, built once by [`App::new`] and passed to every request as an
/// `Arc`; nothing global. The edge's own part is who a request is from; the MCP layer's state
/// ([`Mcp`], which holds the backend layer's [`Backend`]) is what it derefs to, and what the edge
/// hands down (`&app.mcp`): a lower layer never sees the state of a higher one.
pub struct App {
    pub mcp: Arc<Mcp>,
    /// Who a request is from, by the configured principal source.
    pub identities: Identities,
    /// The backend's `resource_metadata` for 401s (principal source `jwt`), learned once.
    pub resource_metadata: ResourceMetadata,
}

impl Deref for App {
    type Target = Mcp;

    fn deref(&self) -> &Mcp {
        &self.mcp
    }
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
        lifetimes.refresh =
            crate::mcp::touches::refresh_interval(settings.idle_ttl, settings.surface_window);
        lifetimes.grace = settings.finalize_grace;
        let cap = settings.max_work_sessions;
        let store: Arc<dyn Store> = match &settings.redis_url {
            Some(url) => {
                let mut redis = RedisSettings::new(url.clone());
                redis.tls = settings.redis_tls.clone();
                Arc::new(
                    RedisStore::new(redis, lifetimes)?
                        .with_max_work_sessions(cap)
                        .with_lookup_cache(settings.lookup_cache),
                )
            }
            None => Arc::new(MemoryStore::new(lifetimes).with_max_work_sessions(cap)),
        };
        let identities = Identities::new(
            settings.principal_source.clone(),
            principals.clone(),
            settings.allow_anonymous,
        );
        let backend = Backend {
            upstream: Upstream::new(&settings),
            upstream_id: upstream_id(&settings),
            metrics: Metrics::new(),
            bridge: Default::default(),
            assertions: Signed::new(
                settings.assertion_audience.clone(),
                ASSERTION_LIFETIME,
                ASSERTION_REUSE,
            ),
            keys,
            settings,
        };
        let mcp = Mcp {
            surfaces: SurfaceRules::new(backend.settings.surface_rules.clone()),
            openings: Default::default(),
            touches: Touches::new(MAX_RUNNING, MAX_WAITING, lifetimes.refresh),
            initialize_cache: Default::default(),
            sealer: broker::rpc_ids::Sealer::new(&secret),
            in_flight: Default::default(),
            hubs: Default::default(),
            session_ids: Verified::new(SESSION_AUDIENCE),
            store,
            principals,
            backend,
        };
        Ok(Self {
            mcp: Arc::new(mcp),
            identities,
            resource_metadata: ResourceMetadata::default(),
        })
    }
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
