//! The invalidation feed: one pub/sub connection per process, subscribed to
//! `<prefix>:invalidations`, on which every script that changes what a settled lookup returns
//! publishes the principal (`announce` in `lua/prelude.lua`). Each message drops that principal's
//! entries from the [`LookupCache`]; every [`HEARTBEAT`] a `PING` on the same connection renews
//! the cache's lease. When the connection breaks, a heartbeat goes unanswered for the store's
//! timeout, or Redis restarts, the cache is dropped whole and nothing is served from it until the
//! feed is subscribed again.
//!
//! One node: the store's own URL. A Redis Cluster: the first seed node that answers (a `PUBLISH`
//! reaches every node's subscribers, whichever node the script ran on).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::cache::{LEASE, LookupCache};
use super::conn::{Target, TlsFiles};
use crate::ids::PrincipalId;

/// How often the feed proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(250);

/// Where and how the feed connects.
pub struct FeedSettings {
    pub target: Target,
    pub tls: TlsFiles,
    pub channel: String,
    /// Upper bound for connecting, subscribing and one heartbeat.
    pub timeout: Duration,
}

/// Runs the feed for `cache` until the cache (the store) is dropped. Call from within a runtime.
pub fn spawn(cache: &Arc<LookupCache>, settings: FeedSettings) {
    let cache = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        while cache.strong_count() > 0 {
            match follow(&cache, &settings).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => tracing::warn!(error = %e, "lookup cache: invalidation feed down"),
            }
            if let Some(cache) = cache.upgrade() {
                cache.drop_all();
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
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
            pubsub.subscribe(&settings.channel).await?;
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

/// Follows the feed until it breaks (`Err`) or the cache is dropped (`Ok`).
async fn follow(cache: &Weak<LookupCache>, settings: &FeedSettings) -> Result<(), String> {
    let (sink, mut messages) = subscribe(settings).await?.split();
    let Some(strong) = cache.upgrade() else {
        return Ok(());
    };
    strong.renew(Instant::now() + LEASE);
    drop(strong);
    // Heartbeats run beside the messages, so a slow answer never holds an invalidation back.
    let heartbeat = tokio::spawn(beat(cache.clone(), sink, settings.timeout));
    let _stop = StopOnDrop(heartbeat.abort_handle());
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            message = messages.next() => {
                let message = message.ok_or("the feed's connection closed")?;
                let Some(cache) = cache.upgrade() else { return Ok(()) };
                match message.get_payload::<String>().map(PrincipalId::parse) {
                    Ok(Ok(principal)) => cache.invalidate(&principal),
                    // Not a principal: drop everything rather than guess what changed.
                    _ => cache.drop_all(),
                }
            }
            ended = &mut heartbeat => {
                return ended.unwrap_or_else(|e| Err(format!("the heartbeat stopped: {e}")));
            }
        }
    }
}

/// Pings the feed's connection every [`HEARTBEAT`] and renews the lease on each answer; returns
/// when one fails or takes longer than `timeout`, or the cache is dropped.
async fn beat(
    cache: Weak<LookupCache>,
    mut sink: redis::aio::PubSubSink,
    timeout: Duration,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        // Subscribed, Redis answers a PING with an array (`pong`, ``): any answer will do.
        match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("a heartbeat took over {timeout:?}")),
        }
        let Some(cache) = cache.upgrade() else {
            return Ok(());
        };
        cache.renew(sent + LEASE);
    }
}

/// Stops a spawned task when dropped.
struct StopOnDrop(tokio::task::AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
