//! The `store` line: the memory store says so; a Redis store is built as the server builds it
//! (same URL, TLS files and operation timeout), answers `PING`, and says its version and mode
//! (`INFO server`, [`RedisStore::server_info`]). A plain `redis://` URL that reaches a cluster node
//! fails: the broker would then get `MOVED` for most keys. The URL is shown without its user and
//! password.

use broker::store::Store;
use broker::store::redis::{RedisSettings, RedisStore, ServerInfo};
use broker::store::{Lifetimes, StoreError};

use super::Line;
use crate::config::Settings;

const WHAT: &str = "store";

/// Checks the store of `settings`.
pub async fn check(settings: &Settings) -> Line {
    let Some(url) = &settings.redis_url else {
        return Line::ok(
            WHAT,
            "memory: work sessions live in this process (one replica; lost on restart)",
        );
    };
    let shown = redacted(url);
    let fail = |error: StoreError| Line::fail(WHAT, format!("redis at {shown}: {error}"));
    let mut redis = RedisSettings::new(url.clone());
    redis.tls = settings.redis_tls.clone();
    let store = match RedisStore::new(redis, Lifetimes::with_idle(settings.idle_ttl)) {
        Ok(store) => store,
        Err(error) => return fail(error),
    };
    if let Err(error) = store.ping().await {
        return fail(error);
    }
    match store.server_info().await {
        Ok(info) => describe(&info, &shown),
        Err(error) => fail(error),
    }
}

/// `redis 7.0.15, standalone, plain`, `redis 7.2.4, cluster (3 primaries), tls`, or why the mode
/// does not fit the URL.
fn describe(info: &ServerInfo, shown: &str) -> Line {
    let mut versions: Vec<&str> = info
        .nodes
        .iter()
        .map(|node| node.version.as_deref().unwrap_or("(version unknown)"))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let versions = versions.join(" / ");
    let node_is_cluster = info
        .nodes
        .iter()
        .any(|node| node.mode.as_deref() == Some("cluster"));
    let transport = if info.tls { "tls" } else { "plain" };
    if !info.cluster_url && node_is_cluster {
        return Line::fail(
            WHAT,
            format!(
                "redis {versions} at {shown} is a cluster node: name the cluster with \
                 redis+cluster:// (or rediss+cluster://)"
            ),
        );
    }
    let mode = if info.cluster_url {
        match info.nodes.len() {
            1 => "cluster (1 primary)".to_owned(),
            n => format!("cluster ({n} primaries)"),
        }
    } else {
        info.nodes
            .first()
            .and_then(|node| node.mode.clone())
            .unwrap_or_else(|| "standalone".into())
    };
    Line::ok(WHAT, format!("redis {versions}, {mode}, {transport}"))
}

/// The URL without its user and password (and without a query, which may hold either).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use broker::store::redis::NodeInfo;

    use super::*;

    fn node(version: &str, mode: &str) -> NodeInfo {
        NodeInfo {
            version: Some(version.into()),
            mode: Some(mode.into()),
        }
    }

    #[test]
    fn the_url_is_shown_without_credentials() {
        assert_eq!(
            redacted("redis://user:p@ss/word@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("rediss+cluster://:secret@a:1,b:2"),
            "rediss+cluster://a:1,b:2"
        );
        assert_eq!(redacted("redis://h:6379/0?password=x"), "redis://h:6379/0");
        assert_eq!(redacted("secret"), "(not a URL)");
    }

    #[test]
    fn version_mode_and_transport_are_described() {
        let single = ServerInfo {
            nodes: vec![node("7.0.15", "standalone")],
            cluster_url: false,
            tls: false,
        };
        assert_eq!(
            describe(&single, "redis://h:1").to_string(),
            "ok   store: redis 7.0.15, standalone, plain"
        );
        let cluster = ServerInfo {
            nodes: vec![node("7.2.4", "cluster"); 3],
            cluster_url: true,
            tls: true,
        };
        assert_eq!(
            describe(&cluster, "x").to_string(),
            "ok   store: redis 7.2.4, cluster (3 primaries), tls"
        );
    }

    #[test]
    fn a_cluster_node_behind_a_plain_url_fails() {
        let info = ServerInfo {
            nodes: vec![node("7.2.4", "cluster")],
            cluster_url: false,
            tls: false,
        };
        let line = describe(&info, "redis://h:1");
        assert!(
            !line.ok && line.detail.contains("redis+cluster://"),
            "{line}"
        );
    }
}
