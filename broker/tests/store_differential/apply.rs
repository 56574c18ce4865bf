//! One operation applied to one store, and its answer written down for comparison. Answers are
//! normalized where the two stores may legitimately differ, each case said where it is done:
//!
//! - event and dead-letter ids: Redis's are `<bucket>:<stream id>`, the memory store's a counter.
//!   They are left out; an operation on "the k-th event held" uses each store's own id (the lists
//!   are in the same order: see [`Side::held`]);
//! - the order of events handed out together, and of dead letters: Redis walks its 16 buckets one
//!   after the other, so both are sorted by content;
//! - [`broker::store::Answer::recorded`]: Redis records a settled call in the lookup itself, the
//!   memory store never does (and Redis only when its hint was right). It is left out, and where a
//!   store did not record, the call is touched as the proxy then does, so that both stores record
//!   every call and the next answers show whether they recorded it alike;
//! - a lookup that may stop once settled ([`broker::store::Query::settle_early`]): the stores may
//!   stop at different points, so only what settles it (and the MCP-session state) is compared.
//!
//! Everything else is compared as is, timestamps included: both stores run on the same manual
//! clock, so they stamp the same instants.

use broker::finalize::{DeadLetter, Delivery, Redelivery};
use broker::session::Links;
use broker::store::{AdminAction, Answer, BackendRef, McpQuery, Query, Store};

use crate::ops::{CONSUMERS, Mode, Op, PARKED_KEYS, World, step};

/// How unacknowledged events come back: after 20 s, then 40 s, 80 s; three deliveries in all.
pub const POLICY: Redelivery = Redelivery {
    after: std::time::Duration::from_secs(20),
    attempts: 3,
};

/// One store under test and what it handed out, in the comparison's order.
pub struct Side {
    pub store: Box<dyn Store>,
    /// Every delivery handed out so far (each batch sorted like its normalized form, so that the
    /// k-th is the same event, at the same delivery, in both stores).
    pub held: Vec<Delivery>,
    /// The dead letters as last listed (sorted the same way).
    pub dead: Vec<DeadLetter>,
}

fn pick<T>(items: &[T], n: usize) -> Option<&T> {
    (!items.is_empty()).then(|| &items[n % items.len()])
}

fn delivery_key(d: &Delivery) -> (String, u64) {
    (d.event.work_session.to_string(), d.redeliveries)
}

fn dead_key(d: &DeadLetter) -> (String, u64, String) {
    (
        d.event.work_session.to_string(),
        d.deliveries,
        d.reason.clone(),
    )
}

/// The part of a lookup's answer both stores must agree on (see the module's doc).
#[derive(Debug)]
#[allow(dead_code, clippy::large_enum_variant)] // a view, read through Debug, made and dropped
enum Lookup {
    Settled {
        by: &'static str,
        session: Option<broker::session::WorkSession>,
        mcp: broker::store::McpState,
    },
    Full(Answer),
}

/// How the query settles (the resolution order: a handle, else the conversation key when sent,
/// else the MCP session's link), if it does.
fn settled_by(query: &Query, answer: &Answer) -> Option<&'static str> {
    if query.handle.is_some() {
        Some("handle")
    } else if query.conversation.is_some() {
        answer
            .found
            .conversation
            .is_some()
            .then_some("conversation")
    } else {
        answer.found.linked.is_some().then_some("link")
    }
}

impl Side {
    pub fn new(store: Box<dyn Store>) -> Self {
        Self {
            store,
            held: Vec::new(),
            dead: Vec::new(),
        }
    }

    /// Applies `op` at `now_ms` (the shared clock's reading); the answer, normalized, as text.
    pub async fn apply(&mut self, world: &World, op: &Op, now_ms: u64) -> String {
        let store = self.store.as_ref();
        match op {
            Op::Bind {
                ws,
                project,
                mcp,
                conversation,
                backend,
            } => {
                let mut session = world.session(*ws, *project, *conversation, now_ms);
                if let Some((upstream, backend)) = backend {
                    session.backends.insert_field(
                        broker::session::BackendSessions::field(
                            &world.upstreams[*upstream],
                            &session.project,
                        ),
                        World::backend(*backend),
                    );
                }
                let links = Links {
                    mcp_session: mcp.map(|m| world.mcp_sessions[m].clone()),
                    conversation: session.conversation.clone(),
                    count_only: false,
                };
                format!("{:?}", store.bind(&session, &links).await)
            }
            Op::Lookup {
                principal,
                surface,
                handle,
                mcp,
                conversation,
                mode,
            } => {
                let query = Query {
                    principal: world.principals[*principal].clone(),
                    surface: World::surface(*surface),
                    mcp: mcp.map(|m| McpQuery {
                        session: world.mcp_sessions[m].clone(),
                        upstream: world.upstreams[0].clone(),
                        backend: None,
                    }),
                    handle: handle.map(|h| world.work_sessions[h].clone()),
                    conversation: conversation.map(|c| world.conversations[c].clone()),
                    settle_early: *mode != Mode::Full,
                    record_when_settled: *mode == Mode::Record,
                };
                let answer = match store.lookup(&query).await {
                    Ok(answer) => answer,
                    Err(e) => return format!("lookup failed: {e}"),
                };
                // A call's lookup asked again at once: the Redis store's lookup cache answers it
                // (what it kept is then compared with the memory store's by every later lookup).
                // Settle-mode lookups record nothing, so showing one twice changes nothing.
                let again = match (*mode == Mode::Settle).then(|| store.lookup(&query)) {
                    Some(again) => match again.await {
                        Ok(again) => Some(again),
                        Err(e) => return format!("lookup asked again failed: {e}"),
                    },
                    None => None,
                };
                let shown = self.lookup(&query, answer, now_ms).await;
                if let Some(again) = again {
                    let again = self.lookup(&query, again, now_ms).await;
                    if again != shown {
                        return format!("asked again: {shown}, then {again}");
                    }
                }
                shown
            }
            Op::McpState {
                principal,
                mcp,
                upstream,
            } => {
                let query = McpQuery {
                    session: world.mcp_sessions[*mcp].clone(),
                    upstream: world.upstreams[*upstream].clone(),
                    backend: None,
                };
                format!(
                    "{:?}",
                    store.mcp_state(&world.principals[*principal], &query).await
                )
            }
            Op::Touch {
                ws,
                mcp,
                conversation,
                count_only,
                calls,
            } => {
                let session = world.session(*ws, 0, None, now_ms);
                let links = Links {
                    mcp_session: mcp.map(|m| world.mcp_sessions[m].clone()),
                    conversation: conversation.map(|c| world.conversations[c].clone()),
                    count_only: *count_only,
                };
                format!(
                    "{:?}",
                    store.touch_calls(&session, &links, now_ms, *calls).await
                )
            }
            Op::SetWorkBackend {
                ws,
                project,
                upstream,
                backend,
            } => {
                let session = world.session(*ws, *project, None, now_ms);
                let backend = BackendRef {
                    upstream: world.upstreams[*upstream].clone(),
                    session: World::backend(*backend),
                };
                format!("{:?}", store.set_work_backend(&session, &backend).await)
            }
            Op::SetBackendSession {
                principal,
                mcp,
                upstream,
                backend,
            } => {
                let backend = BackendRef {
                    upstream: world.upstreams[*upstream].clone(),
                    session: World::backend(*backend),
                };
                let (p, m) = (&world.principals[*principal], &world.mcp_sessions[*mcp]);
                format!("{:?}", store.set_backend_session(p, m, &backend).await)
            }
            Op::EndMcpSession { principal, mcp } => {
                let (p, m) = (&world.principals[*principal], &world.mcp_sessions[*mcp]);
                format!("{:?}", store.end_mcp_session(p, m).await)
            }
            Op::PutParked {
                principal,
                key,
                value,
                ttl_s,
            } => {
                let p = &world.principals[*principal];
                let value = format!("round-{value}");
                let put = store.put_parked(p, PARKED_KEYS[*key], &value, step(*ttl_s));
                format!("{:?}", put.await)
            }
            Op::TakeParked { principal, key } => {
                let p = &world.principals[*principal];
                format!("{:?}", store.take_parked(p, PARKED_KEYS[*key]).await)
            }
            Op::Rebind {
                principal,
                ws,
                project,
            } => {
                let action = AdminAction::Rebind(World::project(*project));
                let (p, id) = (&world.principals[*principal], &world.work_sessions[*ws]);
                format!("{:?}", store.admin(p, id, &action).await)
            }
            Op::End { principal, ws } => {
                let (p, id) = (&world.principals[*principal], &world.work_sessions[*ws]);
                format!("{:?}", store.admin(p, id, &AdminAction::End).await)
            }
            Op::Show { principal, ws } => {
                let (p, id) = (&world.principals[*principal], &world.work_sessions[*ws]);
                format!("{:?}", store.work_session(p, id).await)
            }
            Op::List { principal } => {
                format!(
                    "{:?}",
                    store
                        .list_work_sessions(&world.principals[*principal])
                        .await
                )
            }
            Op::LiveCount => format!("{:?}", store.live_work_sessions().await),
            Op::Claim => format!("{:?}", store.claim_expired(100).await),
            Op::Next { consumer } => {
                match store
                    .next_finalized(CONSUMERS[*consumer], 100, &POLICY)
                    .await
                {
                    Ok(mut batch) => {
                        batch.sort_by_key(delivery_key);
                        let shown: Vec<_> =
                            batch.iter().map(|d| (&d.event, d.redeliveries)).collect();
                        let shown = format!("{shown:?}");
                        self.held.extend(batch);
                        shown
                    }
                    Err(e) => format!("next failed: {e}"),
                }
            }
            Op::Ack(n) => match pick(&self.held, *n) {
                Some(delivery) => format!("{:?}", store.ack_finalized(&delivery.id).await),
                None => "nothing held".into(),
            },
            Op::DeadLetter(n) => match pick(&self.held, *n) {
                Some(delivery) => format!("{:?}", store.dead_letter(delivery, "failed").await),
                None => "nothing held".into(),
            },
            Op::DeadLetters => match store.dead_letters(100).await {
                Ok(mut dead) => {
                    dead.sort_by_key(dead_key);
                    let shown: Vec<_> = dead
                        .iter()
                        .map(|d| (&d.event, &d.reason, d.deliveries, d.dead_ms))
                        .collect();
                    let shown = format!("{shown:?}");
                    self.dead = dead;
                    shown
                }
                Err(e) => format!("dead letters failed: {e}"),
            },
            Op::Replay(n) => match pick(&self.dead, *n) {
                Some(dead) => format!("{:?}", store.replay_dead_letter(&dead.id).await),
                None => "no dead letter listed".into(),
            },
            Op::Advance { .. } => "advanced".into(),
        }
    }

    /// A lookup's answer, normalized; a settled call the store did not record is touched, as the
    /// proxy does (`proxy/src/call.rs`: only a call through its MCP session's link slides the
    /// link; the others count the MCP session; the request's conversation key is linked).
    async fn lookup(&self, query: &Query, answer: Answer, now_ms: u64) -> String {
        let by = settled_by(query, &answer).filter(|_| query.settle_early);
        let session = match by {
            Some("handle") => answer.found.handle.clone(),
            Some("conversation") => answer.found.conversation.clone(),
            Some(_) => answer.found.linked.clone(),
            None => None,
        };
        let mut touched = String::new();
        if let Some(session) = &session
            && query.record_when_settled
            && !answer.recorded
            && !answer.mcp.ended
        {
            let links = Links {
                mcp_session: query.mcp.as_ref().map(|m| m.session.clone()),
                conversation: query.conversation.clone(),
                count_only: by != Some("link"),
            };
            let result = self.store.touch(session, &links, now_ms).await;
            if !matches!(result, Ok(true)) {
                touched = format!(" (its touch: {result:?})");
            }
        }
        let shown = match by {
            Some(by) => Lookup::Settled {
                by,
                session,
                mcp: answer.mcp,
            },
            None => Lookup::Full(Answer {
                recorded: false,
                ..answer
            }),
        };
        format!("{shown:?}{touched}")
    }
}
