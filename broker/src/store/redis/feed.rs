//! The invalidation feed: one pub/sub connection per process, subscribed to
//! `<prefix>:invalidations`, on which every script that changes what a settled lookup returns
//! publishes the principal (`announce` in `lua/prelude.lua`). Each message drops that principal's
//! entries from the [`LookupCache`].
//!
//! **Strict after a select** ([`acked`]): every feed registers in `<prefix>:feeds` (a sorted set,
//! scored by when the registration runs out) before its cache may serve, and renews it with each
//! heartbeat. A writer whose change a client must see everywhere next (a select, an operator's
//! action, an ended MCP session) publishes `sync <nonce>` after its write, from the node of its
//! principal's slot (`lua/publish.lua`: in a Cluster, messages keep their order only from one
//! node), and waits until every
//! registered feed has added itself to `<prefix>:acks:<nonce>`, or until a lease has run out. A feed
//! reads its messages in order, so its ack means the write's invalidation was applied before it.
//!
//! **Lease**: every [`HEARTBEAT`] a `PING` on the feed's connection; when it is answered, the
//! messages that came before it are applied first, and only then is the cache's lease renewed (for
//! [`LEASE`] from when the `PING` was sent). So a lease renewed after a writer's publish implies
//! its invalidation was applied; a feed that cannot hear Redis stops serving within the lease.
//! When the connection breaks, a heartbeat fails or its registration cannot be renewed, the cache
//! is dropped whole and nothing is served until the feed is subscribed again.
//!
//! One node: the store's own URL. A Redis Cluster: the first seed node that answers (a `PUBLISH`
//! reaches every node's subscribers, whichever node the script ran on).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};

use super::cache::{LEASE, LookupCache};
use super::conn::{Connector, Target, TlsFiles};
use crate::ids::PrincipalId;
use crate::store::StoreError;

/// How often the feed proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// How long a registration lasts past its last renewal (renewed every heartbeat).
const REGISTRATION: Duration = Duration::from_secs(3);
/// How far back a writer still counts a registration (clock skew between replicas, and a replica
/// that died: waited for, at most a lease, for this long).
const REGISTERED_WITHIN: Duration = Duration::from_secs(10);
/// How long the ack set of one sync is kept.
const ACKS_KEPT: Duration = Duration::from_secs(10);

/// Where and how the feed connects.
pub struct FeedSettings {
    pub target: Target,
    pub tls: TlsFiles,
    /// The store's key prefix: the channel is `<prefix>:invalidations`.
    pub prefix: String,
    /// Upper bound for connecting, subscribing and one heartbeat.
    pub timeout: Duration,
}

/// The channel every announcement and sync goes on.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}:invalidations")
}

fn registry(prefix: &str) -> String {
    format!("{prefix}:feeds")
}

fn acks(prefix: &str, nonce: &str) -> String {
    format!("{prefix}:acks:{nonce}")
}

fn now_ms() -> u64 {
    crate::store::clock::Clock::System.now_ms()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the feed for `cache` until the cache (the store) is dropped. Call from within a runtime.
pub fn spawn(cache: &Arc<LookupCache>, connector: Arc<Connector>, settings: FeedSettings) {
    let cache = Arc::downgrade(cache);
    let id = crate::ids::random_hex128();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        while cache.strong_count() > 0 {
            match follow(&cache, &connector, &settings, &id).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => tracing::warn!(error = %e, "lookup cache: invalidation feed down"),
            }
            if let Some(cache) = cache.upgrade() {
                cache.drop_all();
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        // The store is gone: writers need not wait for this feed any more.
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(registry(&settings.prefix)).arg(&id);
        let _ = command::<i64>(&connector, settings.timeout, zrem).await;
    });
}

fn clients(settings: &FeedSettings) -> redis::RedisResult<Vec<redis::Client>> {
    let urls = match &settings.target {
        Target::Single(url) => vec![url.clone()],
        Target::Cluster(nodes) => nodes.clone(),
    };
    urls.iter()
        .map(|url| match settings.tls.certificates() {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
            None => redis::Client::open(url.as_str()),
        })
        .collect()
}

async fn subscribe(settings: &FeedSettings) -> Result<redis::aio::PubSub, String> {
    let mut last = String::from("no node to subscribe on");
    for client in clients(settings).map_err(|e| e.to_string())? {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel(&settings.prefix)).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(settings.timeout, attempt).await {
            Ok(Ok(pubsub)) => return Ok(pubsub),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("subscribing took over {:?}", settings.timeout),
        }
    }
    Err(last)
}

/// Runs one command on the store's connection within `timeout`.
async fn command<T: redis::FromRedisValue>(
    connector: &Connector,
    timeout: Duration,
    cmd: redis::Cmd,
) -> Result<T, String> {
    let work = async {
        let mut connection = connector.get().await.map_err(|e| e.to_string())?;
        cmd.query_async::<T>(&mut connection)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("a command took over {timeout:?}"))?
}

/// Registers (or renews) feed `id` in the registry.
async fn register(connector: &Connector, settings: &FeedSettings, id: &str) -> Result<(), String> {
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(registry(&settings.prefix))
        .arg(now_ms() + ms(REGISTRATION))
        .arg(id);
    command::<i64>(connector, settings.timeout, zadd).await?;
    Ok(())
}

type Ping = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

fn ping(sink: &redis::aio::PubSubSink, timeout: Duration) -> Ping {
    let mut sink = sink.clone();
    Box::pin(async move {
        // Subscribed, Redis answers a PING with an array (`pong`, ``): any answer will do.
        match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("a heartbeat took over {timeout:?}")),
        }
    })
}

/// Follows the feed until it breaks (`Err`) or the cache is dropped (`Ok`).
async fn follow(
    cache: &Weak<LookupCache>,
    connector: &Connector,
    settings: &FeedSettings,
    id: &str,
) -> Result<(), String> {
    let (sink, mut messages) = subscribe(settings).await?.split();
    register(connector, settings, id).await?;
    let Some(strong) = cache.upgrade() else {
        return Ok(());
    };
    strong.renew(Instant::now() + LEASE);
    drop(strong);
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut beating: Option<(Instant, Ping)> = None;
    loop {
        tokio::select! {
            message = messages.next() => {
                let message = message.ok_or("the feed's connection closed")?;
                if !apply(cache, connector, settings, id, &message).await? {
                    return Ok(());
                }
            }
            answered = async { match beating.as_mut() { Some((_, p)) => p.await, None => std::future::pending().await } } => {
                answered?;
                let sent = beating.take().map_or_else(Instant::now, |(sent, _)| sent);
                // What came before the answer is applied before the lease is renewed.
                while let Some(Some(message)) = messages.next().now_or_never() {
                    if !apply(cache, connector, settings, id, &message).await? {
                        return Ok(());
                    }
                }
                register(connector, settings, id).await?;
                let Some(cache) = cache.upgrade() else { return Ok(()) };
                cache.renew(sent + LEASE);
            }
            _ = tick.tick(), if beating.is_none() => {
                beating = Some((Instant::now(), ping(&sink, settings.timeout)));
            }
        }
    }
}

/// Applies one message; `false` when the cache is gone.
async fn apply(
    cache: &Weak<LookupCache>,
    connector: &Connector,
    settings: &FeedSettings,
    id: &str,
    message: &redis::Msg,
) -> Result<bool, String> {
    let Some(cache) = cache.upgrade() else {
        return Ok(false);
    };
    let payload = message.get_payload::<String>().unwrap_or_default();
    if let Some(nonce) = payload.strip_prefix("sync ") {
        // Everything published before this message is applied: say so.
        let key = acks(&settings.prefix, nonce);
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(&key).arg(id).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ms(ACKS_KEPT)).ignore();
        let work = async {
            let mut connection = connector.get().await.map_err(|e| e.to_string())?;
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(settings.timeout, work)
            .await
            .map_err(|_| "an ack took too long".to_owned())??;
    } else if let Ok(principal) = PrincipalId::parse(payload) {
        cache.invalidate(&principal);
    } else {
        // Not a principal: drop everything rather than guess what changed.
        cache.drop_all();
    }
    Ok(true)
}

/// The feeds a writer waits for: every one registered within [`REGISTERED_WITHIN`].
pub async fn registered(
    connector: &Connector,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<String>, StoreError> {
    let mut range = redis::cmd("ZRANGEBYSCORE");
    range
        .arg(registry(prefix))
        .arg(now_ms().saturating_sub(ms(REGISTERED_WITHIN)))
        .arg("+inf");
    command(connector, timeout, range)
        .await
        .map_err(StoreError::Unavailable)
}

/// The message that asks every feed to ack `nonce`, and the channel it goes on.
pub fn sync_message(prefix: &str, nonce: &str) -> (String, String) {
    (channel(prefix), format!("sync {nonce}"))
}

/// After a writer published [`sync_message`] (from its principal's node, after its write):
/// waits until every one of `feeds` has acked `nonce`, or a lease has run out (a feed that did not
/// ack by then serves nothing it kept). Returns how many acked.
pub async fn acked(
    connector: &Connector,
    prefix: &str,
    timeout: Duration,
    feeds: &[String],
    nonce: &str,
) -> Result<usize, StoreError> {
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let mut members = redis::cmd("SMEMBERS");
        members.arg(acks(prefix, nonce));
        let acked: Vec<String> = command(connector, timeout, members)
            .await
            .map_err(StoreError::Unavailable)?;
        if feeds.iter().all(|feed| acked.contains(feed)) {
            // Done with it: no set per select is left for Redis to expire (a late ack's set
            // still has its own TTL).
            let mut del = redis::cmd("DEL");
            del.arg(acks(prefix, nonce));
            let _ = command::<i64>(connector, timeout, del).await;
            return Ok(acked.len());
        }
        if started.elapsed() >= LEASE {
            tracing::warn!(
                feeds = feeds.len(),
                acked = acked.len(),
                "lookup cache: not every replica acknowledged a select within the lease; waited it out"
            );
            return Ok(acked.len());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
