//! What the Redis server says about itself, for an operator's check (`session-broker check`):
//! `INFO server` from the node, or from every primary of a cluster (redis-rs routes `INFO` to each
//! and answers a map of node → text), and whether the URL asks for TLS. Read-only; one round trip.

use redis::Value;

use super::{RedisStore, Target};
use crate::store::StoreError;

/// One node's answer to `INFO server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `redis_version`.
    pub version: Option<String>,
    /// `redis_mode`: `standalone`, `cluster` or `sentinel`.
    pub mode: Option<String>,
}

/// What the store's Redis says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Each node that answered: the one node, or every primary of a cluster.
    pub nodes: Vec<NodeInfo>,
    /// The URL names a cluster (`redis+cluster://`, `rediss+cluster://`).
    pub cluster_url: bool,
    /// The URL asks for TLS (`rediss://`, `rediss+cluster://`).
    pub tls: bool,
}

impl RedisStore {
    /// `INFO server` of the node, or of every primary of the cluster, within the store's timeout.
    pub async fn server_info(&self) -> Result<ServerInfo, StoreError> {
        let value = self
            .run(|mut connection| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async::<Value>(&mut connection)
                    .await
            })
            .await?;
        let (cluster_url, tls) = match &self.target {
            Target::Single(url) => (false, url.starts_with("rediss://")),
            Target::Cluster(nodes) => (true, nodes.iter().all(|n| n.starts_with("rediss://"))),
        };
        let nodes: Vec<NodeInfo> = texts(value).iter().map(|text| parse(text)).collect();
        if nodes.is_empty() {
            return Err(StoreError::Corrupt("INFO server answered nothing".into()));
        }
        Ok(ServerInfo {
            nodes,
            cluster_url,
            tls,
        })
    }
}

/// The `INFO` texts in a reply: one string, or a map (or array) of node → string.
fn texts(value: Value) -> Vec<String> {
    match value {
        Value::BulkString(bytes) => vec![String::from_utf8_lossy(&bytes).into_owned()],
        Value::SimpleString(text) => vec![text],
        Value::VerbatimString { text, .. } => vec![text],
        Value::Map(pairs) => pairs.into_iter().flat_map(|(_, v)| texts(v)).collect(),
        Value::Array(items) => items.into_iter().flat_map(texts).collect(),
        _ => Vec::new(),
    }
}

/// Reads `redis_version` and `redis_mode` from an `INFO` text (`key:value` lines).
fn parse(text: &str) -> NodeInfo {
    let field = |name: &str| {
        text.lines()
            .filter_map(|line| line.trim_end().split_once(':'))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    };
    NodeInfo {
        version: field("redis_version"),
        mode: field("redis_mode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
                        redis_mode:standalone\r\nos:Linux\r\n";

    #[test]
    fn version_and_mode_are_read_from_the_info_text() {
        assert_eq!(
            parse(INFO),
            NodeInfo {
                version: Some("7.0.15".into()),
                mode: Some("standalone".into())
            }
        );
        assert_eq!(
            parse("# Server\n"),
            NodeInfo {
                version: None,
                mode: None
            }
        );
    }

    #[test]
    fn a_cluster_answers_one_text_per_node() {
        let node = |addr: &str| {
            (
                Value::BulkString(addr.as_bytes().to_vec()),
                Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: INFO.replace("standalone", "cluster"),
                },
            )
        };
        let answers = texts(Value::Map(vec![node("a:1"), node("b:2")]));
        assert_eq!(answers.len(), 2);
        assert!(
            answers
                .iter()
                .all(|t| parse(t).mode.as_deref() == Some("cluster"))
        );
        assert_eq!(texts(Value::Nil), Vec::<String>::new());
    }
}
