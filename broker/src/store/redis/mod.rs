//! The Redis store (one node or a Redis Cluster, plain or TLS: [`conn`]): one Lua script per
//! operation (`scripts.rs`), every key it touches declared and in one slot (see
//! [`crate::store::keys`]), every operation bounded by a timeout so a slow or stopped Redis fails a
//! request fast instead of hanging. With [`RedisStore::with_lookup_cache`], a steady call's lookup
//! is answered from this process's memory, kept honest by Redis ([`cache`], `feed.rs`).
//!
//! Time: the scripts judge and stamp by Redis's own clock (`TIME`), so replicas agree. A store given
//! a test's manual clock ([`RedisStore::with_clock`]) runs the same scripts behind another clock
//! prelude, which takes "now" from one extra argument instead (`RedisStore::eval` adds it); Rust
//! judges by the same clock where it reads a hash itself (an operator's view, the live gauge). What
//! Redis times on its own, key TTLs (`PEXPIRE`, `SET ... PX`) and the idle time of a pending stream
//! entry (the redelivery backoff), stays real time: a test moves it by aging the data
//! (`broker/tests/support/time.rs`).

use std::time::Duration;

use async_trait::async_trait;

mod admin;
pub mod cache;
mod conn;
mod dead;
mod feed;
mod finalize;
mod hints;
mod info;
mod lookup;
mod scripts;
mod writes;

pub use conn::{Target, TlsFiles};
pub use info::{NodeInfo, ServerInfo};

use super::clock::Clock;
use super::keys::{Bucket, Keys};
use super::{
    AdminAction, Answer, BackendRef, Claimed, DeadLetter, Lifetimes, McpQuery, McpState, Query,
    Status, Store, StoreError,
};
use crate::finalize::{Delivery, Redelivery};
use crate::ids::{McpSessionId, PrincipalId};
use crate::session::{Links, WorkSession};
use scripts::Scripts;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://` (see [`Target`]).
    pub url: String,
    /// Prefix of every key (`msb` by default).
    pub prefix: String,
    /// Upper bound for one operation, waiting for a connection included.
    pub timeout: Duration,
    /// CA and client certificate for TLS, when the defaults do not fit.
    pub tls: TlsFiles,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "msb".into(),
            timeout: Duration::from_millis(500),
            tls: TlsFiles::default(),
        }
    }
}

/// A store in Redis.
pub struct RedisStore {
    connector: std::sync::Arc<conn::Connector>,
    settings: RedisSettings,
    lifetimes: Lifetimes,
    /// Most live work sessions per principal that [`Store::bind`] lets exist (0: no limit).
    max_work_sessions: u64,
    /// [`Clock::System`]: the scripts take Redis's clock; a manual one: they take its reading.
    clock: Clock,
    scripts: Scripts,
    /// Buckets whose stream has the consumer group (created once per bucket and process).
    groups: std::sync::Mutex<std::collections::HashSet<Bucket>>,
    /// What the pointers held when last read (advisory: lets a lookup take one round trip).
    hints: hints::Hints,
    /// Settled lookups served from memory ([`cache`]), when turned on ([`RedisStore::with_lookup_cache`]).
    cache: Option<std::sync::Arc<cache::LookupCache>>,
    /// The invalidation feed of `cache`, started by the first lookup (it needs the runtime).
    feed: std::sync::Once,
    target: Target,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.settings.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Builds the connector; no connection is made until the first operation.
    pub fn new(settings: RedisSettings, lifetimes: Lifetimes) -> Result<Self, StoreError> {
        let target = Target::parse(&settings.url)?;
        let connector = std::sync::Arc::new(conn::Connector::new(
            &target,
            &settings.tls,
            settings.timeout,
        )?);
        Ok(Self {
            target,
            cache: None,
            feed: std::sync::Once::new(),
            connector,
            settings,
            lifetimes,
            max_work_sessions: 0,
            clock: Clock::System,
            scripts: Scripts::new(false),
            groups: Default::default(),
            hints: Default::default(),
        })
    }

    /// Caps the live work sessions of each principal (0: no limit), enforced by [`Store::bind`]
    /// inside its script, so across every replica.
    pub fn with_max_work_sessions(mut self, cap: u64) -> Self {
        self.max_work_sessions = cap;
        self
    }

    /// Serves the lookups of steady calls from memory, kept honest by Redis ([`cache`]): on when
    /// `on` and the lifetimes have a refresh interval (an entry is served for at most one).
    pub fn with_lookup_cache(mut self, on: bool) -> Self {
        let refresh_ms = Self::ms(self.lifetimes.refresh);
        self.cache = (on && !self.lifetimes.refresh.is_zero()).then(|| {
            std::sync::Arc::new(cache::LookupCache::new(cache::Rules {
                idle_ms: Self::ms(self.lifetimes.idle),
                refresh_ms,
            }))
        });
        self
    }

    /// The lookup cache, its feed started on first use. Call from within a runtime.
    fn cache(&self) -> Option<&std::sync::Arc<cache::LookupCache>> {
        let cache = self.cache.as_ref()?;
        self.feed.call_once(|| {
            feed::spawn(
                cache,
                self.connector.clone(),
                feed::FeedSettings {
                    target: self.target.clone(),
                    tls: self.settings.tls.clone(),
                    prefix: self.settings.prefix.clone(),
                    timeout: self.settings.timeout,
                },
            )
        });
        Some(cache)
    }

    /// Whether the lookup cache may serve now (its feed is subscribed and within its lease);
    /// starts the feed if no lookup did yet. Call from within a runtime.
    pub fn lookup_cache_live(&self) -> bool {
        self.cache().is_some_and(|cache| cache.ticket().is_some())
    }

    /// After a write that the client's next request must see on every replica (a select, an
    /// operator's action, an ended MCP session of `principal`): waits until every replica's lookup
    /// cache has applied it ([`feed::acked`]). Replicas without the cache do not register, so
    /// without any this is one read. A failure waits a lease out instead (every cache that could
    /// not be told stops serving by then).
    async fn seen_everywhere(&self, principal: &PrincipalId) {
        if let Err(error) = self.sync(principal).await {
            tracing::warn!(%error, "lookup cache: cannot confirm an invalidation; waiting a lease out");
            tokio::time::sleep(cache::LEASE).await;
        }
    }

    async fn sync(&self, principal: &PrincipalId) -> Result<(), StoreError> {
        let (prefix, timeout) = (&self.settings.prefix, self.settings.timeout);
        let feeds = feed::registered(&self.connector, prefix, timeout).await?;
        if feeds.is_empty() {
            return Ok(());
        }
        let nonce = crate::ids::random_hex128();
        let (channel, message) = feed::sync_message(prefix, &nonce);
        self.publish(principal, &channel, &message).await?;
        feed::acked(&self.connector, prefix, timeout, &feeds, &nonce).await?;
        Ok(())
    }

    /// Publishes `message` on `channel` from the node of `principal`'s slot (`publish.lua`).
    async fn publish(
        &self,
        principal: &PrincipalId,
        channel: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(self.keys(principal).unused())
            .arg(channel)
            .arg(message);
        self.eval::<i64>(invocation).await.map(|_| ())
    }

    /// How many lookups the cache answered (`None`: no cache).
    pub fn lookup_cache_hits(&self) -> Option<u64> {
        self.cache.as_ref().map(|cache| cache.hits())
    }

    /// Drops this process's cached lookups of `principal` after a write of its own, at once: the
    /// feed tells every replica too, but this replica's next request must not wait for it.
    fn forget(&self, principal: &PrincipalId) {
        if let Some(cache) = &self.cache {
            cache.invalidate(principal);
        }
    }

    /// Judges time by `clock` instead of Redis's: for tests, with a [`Clock::Manual`] (its reading
    /// goes to every script as one more argument). [`Clock::System`] keeps Redis's clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.scripts = Scripts::new(matches!(clock, Clock::Manual(_)));
        self.clock = clock;
        self
    }

    fn keys(&self, principal: &PrincipalId) -> Keys {
        Keys::new(&self.settings.prefix, principal)
    }

    /// Runs `f` on a connection within the operation timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(conn::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let limit = self.settings.timeout;
        let work = async {
            let connection = self.connector.get().await?;
            f(connection)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| StoreError::Timeout(limit))?
    }

    /// Runs a script within the operation timeout: every script runs through here, so that a store
    /// on a test's clock passes its reading as the last argument (the one `clock/given.lua` reads).
    /// On the system clock nothing is added.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        mut invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        if let Clock::Manual(clock) = &self.clock {
            invocation.arg(clock.now_ms());
        }
        self.run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    /// Now by the store's clock, for what Rust judges itself (ms): the wall clock in production,
    /// which on a healthy deployment agrees with Redis's (NTP).
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// How long a work session's data may wait for a sweeper past its deadline (ms).
    fn keep_ms(&self) -> u64 {
        Self::ms(self.lifetimes.safety)
    }

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// A script's boolean argument.
fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

#[async_trait]
impl Store for RedisStore {
    async fn lookup(&self, query: &Query) -> Result<Answer, StoreError> {
        let Some(cache) = self.cache() else {
            return lookup::lookup(self, query).await;
        };
        let now = self.now_ms();
        if let Some(answer) = cache.get(query, now) {
            return Ok(answer);
        }
        let ticket = cache.ticket();
        let answer = lookup::lookup(self, query).await?;
        if let Some(ticket) = ticket {
            cache.put(ticket, query, &answer, now);
        }
        Ok(answer)
    }

    async fn mcp_state(
        &self,
        principal: &PrincipalId,
        mcp: &McpQuery,
    ) -> Result<McpState, StoreError> {
        admin::mcp_state(self, principal, mcp).await
    }

    async fn touch_calls(
        &self,
        session: &WorkSession,
        links: &Links,
        now_ms: u64,
        calls: u64,
    ) -> Result<bool, StoreError> {
        writes::touch_calls(self, session, links, now_ms, calls).await
    }

    async fn bind(&self, session: &WorkSession, links: &Links) -> Result<(), StoreError> {
        writes::bind(self, session, links).await
    }

    async fn set_work_backend(
        &self,
        session: &WorkSession,
        backend: &BackendRef,
    ) -> Result<bool, StoreError> {
        writes::set_work_backend(self, session, backend).await
    }

    async fn set_backend_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
        backend: &BackendRef,
    ) -> Result<(), StoreError> {
        admin::set_backend_session(self, principal, session, backend).await
    }

    async fn put_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        admin::put_parked(self, principal, key, value, ttl).await
    }

    async fn take_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        admin::take_parked(self, principal, key).await
    }

    async fn end_mcp_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
    ) -> Result<(), StoreError> {
        admin::end_mcp_session(self, principal, session).await
    }

    async fn claim_expired(&self, limit: usize) -> Result<Claimed, StoreError> {
        finalize::claim_expired(self, limit).await
    }

    async fn next_finalized(
        &self,
        consumer: &str,
        count: usize,
        policy: &Redelivery,
    ) -> Result<Vec<Delivery>, StoreError> {
        finalize::next_finalized(self, consumer, count, policy).await
    }

    async fn ack_finalized(&self, id: &str) -> Result<(), StoreError> {
        finalize::ack(self, id).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), StoreError> {
        dead::bury(self, &delivery.id, reason).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        dead::list(self, limit).await
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        dead::replay(self, id).await
    }

    async fn live_work_sessions(&self) -> Result<u64, StoreError> {
        finalize::live_work_sessions(self).await
    }

    async fn list_work_sessions(&self, principal: &PrincipalId) -> Result<Vec<Status>, StoreError> {
        admin::list(self, principal).await
    }

    async fn work_session(
        &self,
        principal: &PrincipalId,
        id: &crate::ids::WorkSessionId,
    ) -> Result<Option<Status>, StoreError> {
        admin::one(self, principal, id).await
    }

    async fn admin(
        &self,
        principal: &PrincipalId,
        id: &crate::ids::WorkSessionId,
        action: &AdminAction,
    ) -> Result<bool, StoreError> {
        admin::act(self, principal, id, action).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
    }
}
