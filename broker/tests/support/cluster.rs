//! A real Redis Cluster for tests: three masters and three replicas, each a `redis-server` child on
//! a free loopback port whose cluster bus port (port + 10000) is free too, joined with
//! `redis-cli --cluster create`; killed on drop. Ready in about 2 s.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, cannot_start, redis_server_binary, wait_for_port};

pub struct RedisCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: TempDir,
}

/// A free port whose bus port (+10000) is free as well.
fn free_cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (P, P+10000) on loopback");
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (it comes with redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    pub fn start() -> Self {
        let mut ports: Vec<u16> = Vec::new();
        for _ in 0..6 {
            ports.push(free_cluster_port(&ports));
        }
        let dir = std::env::temp_dir().join(format!(
            "msb-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let binary = redis_server_binary();
        let mut children = Vec::new();
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("temp dir");
            let child = Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| cannot_start(&binary, &e));
            children.push(child);
        }
        let cluster = Self {
            children,
            ports,
            _dir: TempDir(dir),
        };
        for port in &cluster.ports {
            wait_for_port(*port);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (it comes with redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_until_ok();
        cluster
    }

    /// Every node reports `cluster_state:ok` and knows all six nodes.
    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = self.ports.iter().all(|port| {
                cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && cli(*port, &["CLUSTER", "NODES"]).lines().count() == 6
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the Redis Cluster did not become ready within 20 s");
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
