//! A real `redis-server` that speaks TLS only and requires a client certificate, with a throwaway CA
//! made by the `openssl` command line (a server certificate for 127.0.0.1 and a client certificate);
//! killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{TempDir, cannot_start, free_port, redis_server_binary, wait_for_port};

pub struct TlsRedis {
    child: Child,
    pub port: u16,
    pub ca: Vec<u8>,
    pub client_cert: Vec<u8>,
    pub client_key: Vec<u8>,
    _dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command line (Debian: apt-get install openssl)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A certificate signed by the CA for `name`, with the X.509 v3 extension `extension` (rustls
/// accepts only v3 certificates).
fn issue(dir: &Path, name: &str, extension: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ],
    );
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("{extension}\n")).expect("ext file");
    let mut sign = vec![
        "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
    ];
    sign.extend([
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &pem,
        "-extfile",
        &ext,
    ]);
    openssl(dir, &sign);
}

impl TlsRedis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("msb-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=msb-test-ca",
            ],
        );
        issue(&dir, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1");
        issue(&dir, "client", "extendedKeyUsage=clientAuth");
        let binary = redis_server_binary();
        let child = Command::new(&binary)
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| cannot_start(&binary, &e));
        wait_for_port(port);
        let read = |name: &str| std::fs::read(dir.join(name)).expect("certificate file");
        Self {
            child,
            port,
            ca: read("ca.pem"),
            client_cert: read("client.pem"),
            client_key: read("client.key"),
            _dir: TempDir(dir),
        }
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    /// A plain client of this server (with the CA and the client certificate), for a test's own
    /// commands. Needs the process's rustls provider installed (building a `RedisStore` does it).
    pub fn client(&self) -> redis::Client {
        let certificates = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
            }),
            root_cert: Some(self.ca.clone()),
        };
        redis::Client::build_with_tls(self.url(), certificates).expect("a TLS client")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
