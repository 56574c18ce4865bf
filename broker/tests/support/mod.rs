//! Test harness: a real `redis-server` child on a free loopback port, killed on drop; a real Redis
//! Cluster in [`cluster`], one that speaks TLS only in [`tls`]; time moved without sleeping in
//! [`time`]. A missing `redis-server` fails the test with a message saying how to install it; it
//! never skips.

#![allow(dead_code)] // each test crate uses its own part of the harness

pub mod cluster;
pub mod time;
pub mod tls;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TempDir(pub std::path::PathBuf);

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn redis_server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub fn cannot_start(binary: &str, error: &std::io::Error) -> ! {
    panic!(
        "cannot start {binary:?} ({error}). Install it (Debian: apt-get install redis-server) \
         or set REDIS_SERVER to its path; scripts/test does this for you."
    )
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not listen on port {port} within 10 s");
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("msb-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let server = Self {
            child: Self::spawn(port, &dir),
            port,
            _dir: TempDir(dir),
        };
        server.wait_ready();
        server
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        let binary = redis_server_binary();
        Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| cannot_start(&binary, &e))
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new, empty server on the same port.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.port, &self._dir.0);
        self.wait_ready();
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {which} failed");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_ready(&self) {
        wait_for_port(self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
