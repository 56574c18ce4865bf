//! The Redis store: deadpool-redis connections, one Lua script (or one pipeline) per operation, every
//! operation bounded by a timeout so a slow or stopped Redis fails a request fast instead of hanging it.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::{Script, Value};

mod admin;
mod finalize;

use super::keys::{self, Keys};
use super::{
    AdminAction, Answer, BackendRef, Lifetimes, McpQuery, McpState, Query, Status, Store,
    StoreError, hash,
};
use crate::finalize::Delivery;
use crate::ids::{BackendSessionId, McpSessionId, PrincipalId, Project};
use crate::resolve::Found;
use crate::session::{BackendSessions, Links, WorkSession};

const SURFACE_LIMIT: usize = 20;
const RECENT_LIMIT: usize = 10;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key (`msb` by default).
    pub prefix: String,
    /// Upper bound for one operation, waiting for a connection included.
    pub timeout: Duration,
    pub pool_size: usize,
}

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "msb".into(),
            timeout: Duration::from_millis(500),
            pool_size: 32,
        }
    }
}

/// A store in Redis.
pub struct RedisStore {
    pool: Pool,
    settings: RedisSettings,
    lifetimes: Lifetimes,
    /// Most live work sessions per principal that [`Store::bind`] lets exist (0: no limit).
    max_work_sessions: u64,
    lookup: Script,
    touch: Script,
    bind: Script,
    claim: Script,
    admin: Script,
    backend: Script,
    group_ready: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.settings.prefix)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Builds the pool; no connection is made until the first operation.
    pub fn new(settings: RedisSettings, lifetimes: Lifetimes) -> Result<Self, StoreError> {
        let mut config = Config::from_url(settings.url.clone());
        let mut pool = PoolConfig::new(settings.pool_size);
        pool.timeouts = Timeouts {
            wait: Some(settings.timeout),
            create: Some(settings.timeout),
            recycle: Some(settings.timeout),
        };
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(unavailable)?;
        Ok(Self {
            pool,
            settings,
            lifetimes,
            max_work_sessions: 0,
            lookup: Script::new(include_str!("../lua/lookup.lua")),
            touch: Script::new(include_str!("../lua/touch.lua")),
            bind: Script::new(include_str!("../lua/bind.lua")),
            claim: Script::new(include_str!("../lua/claim.lua")),
            admin: Script::new(include_str!("../lua/admin.lua")),
            backend: Script::new(include_str!("../lua/backend.lua")),
            group_ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Caps the live work sessions of each principal (0: no limit), enforced by [`Store::bind`]
    /// inside its script, so across every replica.
    pub fn with_max_work_sessions(mut self, cap: u64) -> Self {
        self.max_work_sessions = cap;
        self
    }

    fn keys(&self, principal: &PrincipalId) -> Keys {
        Keys::new(&self.settings.prefix, principal)
    }

    /// Runs `f` on a pooled connection within the operation timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.run_within(self.settings.timeout, f).await
    }

    /// Runs `f` on a pooled connection within `limit` (for blocking reads).
    async fn run_within<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let connection = self.pool.get().await.map_err(unavailable)?;
            f(connection).await.map_err(unavailable)
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| StoreError::Timeout(limit))?
    }

    /// `SET key value PX <idle TTL>`.
    async fn set_for_idle_ttl(&self, key: String, value: String) -> Result<(), StoreError> {
        let ttl = Self::ms(self.lifetimes.idle);
        self.run(|mut connection| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

fn optional_session(value: &Value) -> Result<Option<WorkSession>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        other => {
            let flat: Vec<String> = redis::from_redis_value_ref(other)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            hash::from_flat(flat).map(Some)
        }
    }
}

fn optional_string(value: &Value) -> Result<Option<String>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        other => redis::from_redis_value_ref(other)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

fn decode_answer(reply: Value) -> Result<Answer, StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::Corrupt("lookup did not return an array".into()));
    };
    let [
        ended,
        handle,
        linked,
        conversation,
        live,
        recent,
        override_,
        active,
    ] = <[Value; 8]>::try_from(items)
        .map_err(|_| StoreError::Corrupt("lookup returned a wrong arity".into()))?;
    let ended: i64 =
        redis::from_redis_value_ref(&ended).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let surface_live = match live {
        Value::Array(list) => list
            .iter()
            .map(optional_session)
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let recent: Vec<String> = redis::from_redis_value_ref(&recent).unwrap_or_default();
    Ok(Answer {
        found: Found {
            handle: optional_session(&handle)?,
            linked: optional_session(&linked)?,
            conversation: optional_session(&conversation)?,
            surface_live,
            recent_projects: recent
                .into_iter()
                .filter_map(|p| Project::parse(p).ok())
                .collect(),
        },
        mcp: McpState {
            ended: ended == 1,
            backend_override: optional_string(&override_)?
                .and_then(|s| BackendSessionId::parse(s).ok()),
        },
        live_count: redis::from_redis_value_ref::<u64>(&active).unwrap_or(0),
    })
}

fn link_key(keys: &Keys, links: &Links) -> String {
    links
        .mcp_session
        .as_ref()
        .map(|s| keys.mcp_link(s))
        .unwrap_or_else(|| keys.unused())
}

fn conversation_key(keys: &Keys, links: &Links) -> String {
    links
        .conversation
        .as_ref()
        .map(|c| keys.conversation(c))
        .unwrap_or_else(|| keys.unused())
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

#[async_trait]
impl Store for RedisStore {
    async fn lookup(&self, query: &Query) -> Result<Answer, StoreError> {
        let keys = self.keys(&query.principal);
        let unused = keys.unused();
        let mcp = query.mcp.as_ref();
        let mut invocation = self.lookup.prepare_invoke();
        invocation
            .key(
                mcp.map(|m| keys.mcp_ended(&m.session))
                    .unwrap_or_else(|| unused.clone()),
            )
            .key(
                mcp.map(|m| keys.mcp_link(&m.session))
                    .unwrap_or_else(|| unused.clone()),
            )
            .key(
                query
                    .conversation
                    .as_ref()
                    .map(|c| keys.conversation(c))
                    .unwrap_or_else(|| unused.clone()),
            )
            .key(keys.surface(&query.surface))
            .key(keys.recent())
            .key(
                mcp.map(|m| keys.backend_session(&m.session, &m.upstream))
                    .unwrap_or_else(|| unused.clone()),
            )
            .key(keys.index())
            .arg(keys.work_session_prefix())
            .arg(
                query
                    .handle
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
            .arg(SURFACE_LIMIT)
            .arg(RECENT_LIMIT)
            .arg(flag(mcp.is_some()))
            .arg(Self::ms(self.lifetimes.idle));
        let reply: Value = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        decode_answer(reply)
    }

    async fn mcp_state(
        &self,
        principal: &PrincipalId,
        mcp: &McpQuery,
    ) -> Result<McpState, StoreError> {
        let query = Query {
            principal: principal.clone(),
            surface: crate::ids::Surface::parse("none")
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            mcp: Some(mcp.clone()),
            handle: None,
            conversation: None,
        };
        Ok(self.lookup(&query).await?.mcp)
    }

    async fn touch(
        &self,
        session: &WorkSession,
        links: &Links,
        _now_ms: u64,
    ) -> Result<bool, StoreError> {
        let keys = self.keys(&session.principal);
        let mut invocation = self.touch.prepare_invoke();
        invocation
            .key(keys.work_session(&session.id))
            .key(keys.surface(&session.surface))
            .key(link_key(&keys, links))
            .key(conversation_key(&keys, links))
            .key(keys::deadlines(&self.settings.prefix))
            .key(keys.index())
            .arg(session.id.to_string())
            .arg(Self::ms(self.lifetimes.idle))
            .arg(Self::ms(self.lifetimes.grace))
            .arg(flag(links.mcp_session.is_some()))
            .arg(flag(links.conversation.is_some()))
            .arg(keys::deadline_member(&session.principal, &session.id));
        let touched: i64 = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Ok(touched == 1)
    }

    async fn bind(&self, session: &WorkSession, links: &Links) -> Result<(), StoreError> {
        let keys = self.keys(&session.principal);
        let mut invocation = self.bind.prepare_invoke();
        invocation
            .key(keys.work_session(&session.id))
            .key(keys.surface(&session.surface))
            .key(link_key(&keys, links))
            .key(conversation_key(&keys, links))
            .key(keys.recent())
            .key(keys::deadlines(&self.settings.prefix))
            .key(keys.index())
            .arg(session.id.to_string())
            .arg(Self::ms(self.lifetimes.idle))
            .arg(Self::ms(self.lifetimes.grace))
            .arg(flag(links.mcp_session.is_some()))
            .arg(flag(links.conversation.is_some()))
            .arg(Self::ms(self.lifetimes.recent_projects))
            .arg(session.project.to_string())
            .arg(keys::deadline_member(&session.principal, &session.id))
            .arg(self.max_work_sessions);
        for (field, value) in hash::to_fields(session) {
            invocation.arg(field).arg(value);
        }
        let bound: i64 = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        match bound {
            1 => Ok(()),
            -1 => Err(StoreError::TooMany(self.max_work_sessions)),
            _ => Err(StoreError::Ended),
        }
    }

    async fn set_work_backend(
        &self,
        session: &WorkSession,
        backend: &BackendRef,
    ) -> Result<bool, StoreError> {
        let keys = self.keys(&session.principal);
        let mut invocation = self.backend.prepare_invoke();
        invocation
            .key(keys.work_session(&session.id))
            .arg(BackendSessions::field(&backend.upstream, &session.project))
            .arg(backend.session.to_string());
        let recorded: i64 = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Ok(recorded == 1)
    }

    async fn set_backend_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
        backend: &BackendRef,
    ) -> Result<(), StoreError> {
        let key = self
            .keys(principal)
            .backend_session(session, &backend.upstream);
        self.set_for_idle_ttl(key, backend.session.to_string())
            .await
    }

    async fn end_mcp_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
    ) -> Result<(), StoreError> {
        let keys = self.keys(principal);
        let ttl = Self::ms(self.lifetimes.ended_mcp_session);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(keys.mcp_link(session))
            .ignore()
            .cmd("SET")
            .arg(keys.mcp_ended(session))
            .arg("1")
            .arg("PX")
            .arg(ttl)
            .ignore();
        self.run(|mut connection| async move { pipe.query_async::<()>(&mut connection).await })
            .await
    }

    async fn claim_expired(&self, limit: usize) -> Result<usize, StoreError> {
        finalize::claim_expired(self, limit).await
    }

    async fn next_finalized(
        &self,
        consumer: &str,
        count: usize,
        wait: Duration,
        stale: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        finalize::next_finalized(self, consumer, count, wait, stale).await
    }

    async fn ack_finalized(&self, id: &str) -> Result<(), StoreError> {
        finalize::ack(self, id).await
    }

    async fn live_work_sessions(&self) -> Result<u64, StoreError> {
        let key = keys::deadlines(&self.settings.prefix);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        self.run(|mut connection| async move {
            redis::cmd("ZCOUNT")
                .arg(key)
                .arg(format!("({now}"))
                .arg("+inf")
                .query_async(&mut connection)
                .await
        })
        .await
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
