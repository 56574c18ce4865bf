//! Connections to Redis: one node (one multiplexed connection shared by every operation, reconnected
//! by redis-rs's connection manager: no checkout, no per-checkout `UNWATCH`+`PING` as a pool does) or
//! a Redis Cluster (one cluster connection, multiplexed per node, that follows `MOVED` and failovers
//! by itself), plain or
//! over TLS (rustls with the `ring` provider; the public web roots, or the CA the operator gives, and
//! optionally a client certificate).
//!
//! URLs: `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS), and for a cluster
//! `redis+cluster://[user:password@]host:port[,host:port...]` or `rediss+cluster://...` (TLS): any
//! reachable node is enough to discover the others.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use crate::store::StoreError;

/// PEM files for TLS to Redis (read by the caller, so this module never touches the file system).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the servers' certificates; `None` trusts the public web roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key, for servers that require one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsFiles {
    pub(super) fn certificates(&self) -> Option<TlsCertificates> {
        if self.ca.is_none() && self.client.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        })
    }
}

/// What `--redis-url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One node (`redis://`, `rediss://`).
    Single(String),
    /// A Redis Cluster, by the URLs of its seed nodes.
    Cluster(Vec<String>),
}

impl Target {
    /// Parses a `--redis-url`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Unavailable(format!("--redis-url: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected redis://, rediss://, redis+cluster:// or rediss+cluster://")
        })?;
        let node_scheme = match scheme {
            "redis" | "rediss" => return Ok(Self::Single(url.to_owned())),
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            _ => {
                return Err(bad(
                    "expected redis://, rediss://, redis+cluster:// or rediss+cluster://",
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), rest),
        };
        if hosts.contains('/') || hosts.contains('?') {
            return Err(bad(
                "a cluster URL names nodes only (no database, no query)",
            ));
        }
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| format!("{node_scheme}://{userinfo}{host}"))
            .collect();
        if nodes.is_empty() {
            return Err(bad("a cluster URL names at least one host:port"));
        }
        Ok(Self::Cluster(nodes))
    }
}

/// Hands out connections.
pub enum Connector {
    Single(Box<Single>),
    Cluster(Box<Cluster>),
}

/// One node: one multiplexed connection shared by every operation (pipelined, no checkout and no
/// per-checkout health check), reconnected by the manager when it breaks.
pub struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    connection: tokio::sync::OnceCell<ConnectionManager>,
}

/// The cluster client and its one connection, made at the first operation (and made again after
/// a failure to connect; once made, it reconnects to nodes by itself).
pub struct Cluster {
    client: ClusterClient,
    connection: tokio::sync::OnceCell<ClusterConnection>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Connector {
    /// Builds the connector; nothing connects until the first operation.
    pub fn new(target: &Target, tls: &TlsFiles, timeout: Duration) -> Result<Self, StoreError> {
        // The redis crate builds its rustls config from the process's default provider: make it
        // ring, the one the whole workspace uses (a no-op when one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        match target {
            Target::Single(url) => {
                let client = match tls.certificates() {
                    Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                Ok(Self::Single(Box::new(Single {
                    client,
                    config,
                    connection: tokio::sync::OnceCell::new(),
                })))
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .min_retry_wait(20)
                    .max_retry_wait(200);
                if let Some(certs) = tls.certificates() {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(unavailable)?;
                Ok(Self::Cluster(Box::new(Cluster {
                    client,
                    connection: tokio::sync::OnceCell::new(),
                })))
            }
        }
    }

    /// A connection for one operation.
    pub async fn get(&self) -> Result<Connection, StoreError> {
        match self {
            Self::Single(single) => single
                .connection
                .get_or_try_init(|| {
                    ConnectionManager::new_with_config(single.client.clone(), single.config.clone())
                })
                .await
                .cloned()
                .map(Connection::Single)
                .map_err(unavailable),
            Self::Cluster(cluster) => cluster
                .connection
                .get_or_try_init(|| cluster.client.get_async_connection())
                .await
                .cloned()
                .map(Connection::Cluster)
                .map_err(unavailable),
        }
    }
}

/// One connection: a clone of the node's or of the cluster's multiplexed connection.
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_node_or_a_cluster() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/0").expect("ok"),
            Target::Single("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            Target::parse("rediss://u:p@h:6380").expect("ok"),
            Target::Single("rediss://u:p@h:6380".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2/").expect("ok"),
            Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert_eq!(
            Target::parse("rediss+cluster://user:pw@a:1, b:2").expect("ok"),
            Target::Cluster(vec![
                "rediss://user:pw@a:1".into(),
                "rediss://user:pw@b:2".into()
            ])
        );
        for bad in [
            "http://x",
            "127.0.0.1:6379",
            "redis+cluster://",
            "redis+cluster://a:1/0",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
