//! Where work sessions live: the [`Store`] trait and its two implementations.
//!
//! - [`memory::MemoryStore`]: one process, the quick start and single-replica deployments;
//! - [`redis::RedisStore`]: any number of replicas, state that survives a broker restart.
//!
//! Both judge time by a [`clock::Clock`]: the wall clock (Redis's own in its scripts), or a test's
//! manual clock, so that tests let TTLs pass without sleeping.
//!
//! Every operation is scoped to one principal, and every key of one principal shares a Redis cluster
//! slot (see [`keys`]), so each operation is one round trip. Resolution itself is not here: the store
//! only reports what it found ([`crate::resolve::Found`]) and [`crate::resolve::resolve`] decides.

pub mod clock;
mod hash;
pub mod keys;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::finalize::{DeadLetter, Delivery, Redelivery};
use crate::ids::{
    BackendSessionId, ConversationKey, McpSessionId, PrincipalId, Project, Surface, UpstreamId,
    WorkSessionId,
};
use crate::resolve::Found;
use crate::session::{Links, WorkSession};

/// A store failure. The message is for logs; clients get a generic text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out after {0:?}")]
    Timeout(Duration),
    #[error("store returned data the broker cannot read: {0}")]
    Corrupt(String),
    #[error("the work session was finalized meanwhile")]
    Ended,
    /// [`Store::bind`] refused to start a work session: the principal already has this many live.
    #[error("the principal already has {0} live work sessions, the most allowed")]
    TooMany(u64),
}

/// How long things live in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Sliding idle TTL of a work session and everything that points at it.
    pub idle: Duration,
    /// How long a finalized work session stays readable (operators see it as finalized).
    pub grace: Duration,
    /// How long a work session's data waits for a sweeper past its idle deadline, at most: until a
    /// sweeper claims it, however late, within this bound (7 days), so no replica running for a while
    /// does not lose a finalization. Past it the data expires and the work session is dropped
    /// without an event ([`Claimed::dropped`]).
    pub safety: Duration,
    /// How long an ended MCP session id stays refused (the life of a session id).
    pub ended_mcp_session: Duration,
    /// How long the principal's recent-projects list is kept.
    pub recent_projects: Duration,
    /// The proxy's refresh interval: it refreshes a work session at most once per this interval
    /// per replica (the calls in between are counted and sent with the next refresh, stamped with
    /// the time of the last of them). A work session's finalization deadline is its last activity
    /// plus the idle TTL plus this, so a call a replica counted but never sent (it died) still
    /// cannot make it come early; liveness stays last activity plus the idle TTL. Zero: the
    /// deadline is the idle TTL's (a store used without the refresher).
    pub refresh: Duration,
}

impl Lifetimes {
    pub fn with_idle(idle: Duration) -> Self {
        Self {
            idle,
            grace: Duration::from_secs(10 * 60),
            safety: Duration::from_secs(7 * 24 * 3600),
            ended_mcp_session: Duration::from_secs(7 * 24 * 3600),
            recent_projects: Duration::from_secs(30 * 24 * 3600),
            refresh: Duration::ZERO,
        }
    }
}

/// The MCP-session part of a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct McpQuery {
    pub session: McpSessionId,
    pub upstream: UpstreamId,
    /// The backend session named in the client's session id, when it lives on this upstream.
    pub backend: Option<BackendSessionId>,
}

/// Everything one request needs to know, asked in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub principal: PrincipalId,
    pub surface: Surface,
    pub mcp: Option<McpQuery>,
    pub handle: Option<WorkSessionId>,
    pub conversation: Option<ConversationKey>,
    /// The store may stop reading once the handle, the conversation key or the MCP-session link
    /// settles the work session: the answer then lists no surface sessions or recent projects and
    /// a live count of 0. A call needs none of them once settled; a select does (it is capped, and
    /// plans on the resolution), so it asks for everything.
    pub settle_early: bool,
    /// Record the call (as [`Store::touch`] would) in the live work session a handle, conversation
    /// key or MCP-session link settles it on, in the same round trip, unless the MCP session has
    /// ended: for a call that is then always forwarded bound and touched
    /// ([`crate::decide::record_with_lookup`]). [`Answer::recorded`] says whether it was.
    pub record_when_settled: bool,
}

/// What the store knows about one client MCP session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpState {
    /// The client ended it (DELETE): its id is refused from now on.
    pub ended: bool,
    /// A backend session opened for it on this upstream after the one in its id (backend restarted,
    /// or the id came from another replica's upstream). Like the one in its id, it carries the
    /// traffic that needs no project and never has a project selected.
    pub backend_override: Option<BackendSessionId>,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub found: Found,
    pub mcp: McpState,
    /// How many work sessions of the principal were active within the idle TTL (for the cap).
    pub live_count: u64,
    /// The lookup recorded the call in the work session it settled on ([`Query::record_when_settled`]):
    /// no separate touch is needed. Stores that cannot do it in the lookup leave it false.
    pub recorded: bool,
}

/// A backend session on one upstream instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    pub upstream: UpstreamId,
    pub session: BackendSessionId,
}

/// A work session as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub session: WorkSession,
    /// Within its idle TTL and not finalized.
    pub live: bool,
    pub finalized: bool,
    /// Distinct client MCP sessions that worked in it.
    pub mcp_sessions: u64,
}

/// What an operator does to a work session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAction {
    /// Work on another project from now on (backend sessions get it replayed on their next call).
    Rebind(Project),
    /// Finalize now: it becomes due and the next sweep finalizes it, with its actions.
    End,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Work sessions finalized (each exactly once, with its event).
    pub finalized: usize,
    /// Deadlines whose work session had no data left (it waited longer than
    /// [`Lifetimes::safety`]): removed without an event.
    pub dropped: usize,
}

/// The work-session store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads everything resolution needs, in one round trip.
    async fn lookup(&self, query: &Query) -> Result<Answer, StoreError>;

    /// Reads the MCP-session state only (for requests that need no resolution).
    async fn mcp_state(
        &self,
        principal: &PrincipalId,
        mcp: &McpQuery,
    ) -> Result<McpState, StoreError>;

    /// Records a call in a live work session, slides every TTL of it and moves its idle deadline, in
    /// one round trip. `now_ms` is the caller's clock, used by the memory store; the Redis store uses
    /// the server's clock so that replicas agree. Returns `false` when the work session is gone, idle
    /// past its deadline or finalized: nothing is written then.
    async fn touch(
        &self,
        session: &WorkSession,
        links: &Links,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.touch_calls(session, links, now_ms, 1).await
    }

    /// [`Store::touch`] for `calls` calls with the same links at once, in one round trip: what
    /// `calls` touches would record (the call count and, for links that only count the MCP
    /// session, the MCP-session count grow by `calls`). How the proxy coalesces the touches of one
    /// work session that queue up while the store is slow.
    async fn touch_calls(
        &self,
        session: &WorkSession,
        links: &Links,
        now_ms: u64,
        calls: u64,
    ) -> Result<bool, StoreError>;

    /// Creates or updates a work session after a successful select, with its links.
    ///
    /// `session` may be a copy read before calls of the same work session changed it: the bind
    /// merges (`store::hash::bind_fields`). It sets the project, surface, conversation and the
    /// backend sessions `session` carries (the one the select ran on); it keeps the creation time,
    /// the other backend sessions and the call count, to which it adds its own call.
    ///
    /// Enforces the store's cap on live work sessions per principal (`with_max_work_sessions`, 0: no
    /// limit) in the same atomic step: starting a work session that is not live now fails with
    /// [`StoreError::TooMany`] when the principal already has that many live ones, so no number of
    /// concurrent binds (on any number of replicas) can exceed it. Updating a live one always works.
    /// A finalized one is never revived ([`StoreError::Ended`]). Nothing is written on an error.
    async fn bind(&self, session: &WorkSession, links: &Links) -> Result<(), StoreError>;

    /// Records the backend session that serves `session`'s project on `backend.upstream` (it was
    /// opened for that project and had it selected: see [`crate::session::BackendSessions`]).
    /// Returns `false` when the work session is gone or finalized: nothing is written then.
    async fn set_work_backend(
        &self,
        session: &WorkSession,
        backend: &BackendRef,
    ) -> Result<bool, StoreError>;

    /// Records the backend session now carrying a client MCP session's unbound traffic on an
    /// upstream (a replacement of the one in its session id).
    async fn set_backend_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
        backend: &BackendRef,
    ) -> Result<(), StoreError>;

    /// Ends a client MCP session: its id is refused from now on; its work session lives on.
    async fn end_mcp_session(
        &self,
        principal: &PrincipalId,
        session: &McpSessionId,
    ) -> Result<(), StoreError>;

    /// Leaves `value` under `key` for [`Store::take_parked`] on any replica, for `ttl`: how a call
    /// parked between two rounds of the multi round-trip form reaches the replica the client
    /// retries on (the call's result, or the next server request). Written once per round by the
    /// replica reading the backend's stream; `key` is random per call, so no two writers share one.
    async fn put_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Takes what [`Store::put_parked`] left under `key`, once (a second taker gets `None`).
    async fn take_parked(
        &self,
        principal: &PrincipalId,
        key: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Is the store reachable?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finalizes up to `limit` work sessions whose idle deadline has passed, however long ago: each
    /// is re-checked, marked finalized and its event appended, atomically, so across any number of
    /// replicas each work session is finalized exactly once.
    async fn claim_expired(&self, limit: usize) -> Result<Claimed, StoreError>;

    /// Hands out up to `count` finalized events for `consumer` to act on: new ones, and ones taken
    /// but not acknowledged (an action failed, or the taker died) once `policy`'s backoff for their
    /// delivery count has passed. An event handed out `policy.attempts` times without an
    /// acknowledgement goes to the dead letters instead. Never waits.
    async fn next_finalized(
        &self,
        consumer: &str,
        count: usize,
        policy: &Redelivery,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Acknowledges an event whose actions all succeeded.
    async fn ack_finalized(&self, id: &str) -> Result<(), StoreError>;

    /// Moves an event whose actions failed its last attempt to the dead letters (and acknowledges
    /// it), atomically: it is kept for an operator and not delivered again.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), StoreError>;

    /// Admin: the dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Admin: delivers a dead letter again as a new event (from its first attempt); `false` when
    /// there is no such dead letter.
    async fn replay_dead_letter(&self, id: &str) -> Result<bool, StoreError>;

    /// How many work sessions are live (in Redis: across every replica), for the metrics gauge.
    async fn live_work_sessions(&self) -> Result<u64, StoreError>;

    /// Admin: the principal's work sessions (live, and finalized within the grace period), newest first.
    async fn list_work_sessions(&self, principal: &PrincipalId) -> Result<Vec<Status>, StoreError>;

    /// Admin: one work session of the principal.
    async fn work_session(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
    ) -> Result<Option<Status>, StoreError>;

    /// Admin: acts on a live work session; `false` when it is not live.
    async fn admin(
        &self,
        principal: &PrincipalId,
        id: &WorkSessionId,
        action: &AdminAction,
    ) -> Result<bool, StoreError>;
}
