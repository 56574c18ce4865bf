//! The `signing key` line: the signing key parses and makes a key ring as the server makes it
//! (`edge::App::new`), with the older verification keys and the principal secret. It says which
//! kind of key and where it came from; never the key, nor anything derived from a secret.

use std::path::PathBuf;

use broker::keys::{self, KeyMaterial};
use broker::tokens::KeyRing;

use super::Line;
use crate::backend::ISSUER;
use crate::config::Settings;
use crate::config::cli::Args;

const WHAT: &str = "signing key";

/// Where the signing key was given (the settings keep only its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// `--signing-key` or `BROKER_SIGNING_KEY`.
    Value,
    None,
}

impl Source {
    pub fn of(args: &Args) -> Self {
        match (&args.signing_key_file, &args.signing_key) {
            (Some(path), _) => Self::File(path.clone()),
            (None, Some(_)) => Self::Value,
            (None, None) => Self::None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("from {}", path.display()),
            Self::Value => "from --signing-key / BROKER_SIGNING_KEY".into(),
            Self::None => String::new(),
        }
    }
}

/// Checks the signing key of `settings`, given from `source`.
pub fn check(settings: &Settings, source: &Source) -> Line {
    let Some(key) = &settings.signing_key else {
        return Line::ok(
            WHAT,
            "none given: the broker generates one for each process (memory store only; tokens die \
             with the process)",
        );
    };
    let material = match KeyMaterial::parse(key) {
        Ok(material) => material,
        Err(error) => return Line::fail(WHAT, format!("{}: {error}", source.describe())),
    };
    let kind = match &material {
        KeyMaterial::Secret(_) => "HS256 secret".to_owned(),
        KeyMaterial::Ed25519(key) => format!(
            "Ed25519 private key (EdDSA, kid {}; its public key is served at /.well-known/jwks.json)",
            keys::ed25519_kid(&key.verifying_key())
        ),
        KeyMaterial::Ed25519Public(_) => {
            return Line::fail(
                WHAT,
                format!(
                    "{}: an Ed25519 public key; the broker signs, it needs the private key",
                    source.describe()
                ),
            );
        }
    };
    let mut ring = match KeyRing::from_material(ISSUER, &material) {
        Ok(ring) => ring,
        Err(error) => return Line::fail(WHAT, format!("{kind} {}: {error}", source.describe())),
    };
    for (index, old) in settings.verify_keys.iter().enumerate() {
        let added = KeyMaterial::parse(old)
            .map_err(|e| e.to_string())
            .and_then(|material| ring.also_verify(&material).map_err(|e| e.to_string()));
        if let Err(error) = added {
            return Line::fail(
                WHAT,
                format!("--verify-key-file number {}: {error}", index + 1),
            );
        }
    }
    let mut detail = format!("{kind} {}", source.describe());
    match settings.verify_keys.len() {
        0 => {}
        1 => detail.push_str("; 1 older key accepted for verification"),
        n => detail.push_str(&format!("; {n} older keys accepted for verification")),
    }
    if settings.principal_secret.is_some() {
        detail.push_str("; principal hashes keyed by --principal-secret-file");
    }
    Line::ok(WHAT, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: &[u8]) -> Settings {
        let mut settings = Settings::new(http::Uri::from_static("http://127.0.0.1:1/mcp"));
        settings.signing_key = Some(key.to_vec());
        settings
    }

    #[test]
    fn a_secret_is_named_by_kind_and_never_shown() {
        let secret = b"check-test-secret-0123456789abcdef-0123456789";
        let line = check(&settings(secret), &Source::Value);
        assert!(line.ok, "{line}");
        assert!(line.detail.starts_with("HS256 secret"), "{line}");
        assert!(!line.detail.contains("check-test-secret"), "{line}");
    }

    #[test]
    fn an_ed25519_key_is_named_with_its_public_kid() {
        let pem = keys::generate_ed25519_pem().expect("pem");
        let line = check(&settings(pem.as_bytes()), &Source::File("k.pem".into()));
        assert!(line.ok, "{line}");
        assert!(line.detail.starts_with("Ed25519 private key"), "{line}");
        assert!(line.detail.contains("from k.pem"), "{line}");
        assert!(!line.detail.contains("PRIVATE"), "{line}");
    }

    /// The Ed25519 public key of RFC 8410, section 10.1.
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
        -----END PUBLIC KEY-----\n";

    #[test]
    fn a_public_key_or_a_bad_older_key_fails() {
        let line = check(&settings(PUBLIC_PEM.as_bytes()), &Source::Value);
        assert!(!line.ok && line.detail.contains("public key"), "{line}");
        let mut with_old = settings(b"check-test-secret-0123456789abcdef-0123456789");
        with_old.verify_keys = vec![b"-----BEGIN PRIVATE KEY-----\nnot a key".to_vec()];
        let line = check(&with_old, &Source::Value);
        assert!(
            !line.ok && line.detail.contains("--verify-key-file"),
            "{line}"
        );
    }

    #[test]
    fn without_a_key_the_memory_store_generates_one() {
        let settings = Settings::new(http::Uri::from_static("http://127.0.0.1:1/mcp"));
        let line = check(&settings, &Source::None);
        assert!(line.ok && line.detail.starts_with("none given"), "{line}");
    }
}
