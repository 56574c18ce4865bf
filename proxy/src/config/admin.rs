//! The admin API's configuration: its listen address (`off` to disable), its token, and the check
//! that refuses to expose it off loopback without a token. The listener itself is `ops/admin.rs`.

use std::net::SocketAddr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The address the command line gives the admin API unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// Shortest admin token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;
/// `--admin-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        value
            .parse()
            .map(|address| Self(Some(address)))
            .map_err(|_| format!("`{value}` is not IP:PORT (e.g. {DEFAULT_ADMIN_LISTEN}) or `off`"))
    }
}

/// The bearer token admin requests must present. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token from its bytes (surrounding whitespace ignored); `None` when shorter than
    /// [`MIN_TOKEN_BYTES`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let token = bytes.trim_ascii();
        (token.len() >= MIN_TOKEN_BYTES).then(|| Self(token.to_vec()))
    }

    /// The token itself (for a client to send; never log it).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ (and of their
    /// lengths: both are hashed first).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = Sha256::digest(&self.0);
        let presented = Sha256::digest(presented);
        let difference = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Why the admin API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "--admin-listen {0} is not a loopback address: pass --admin-token-file PATH (every admin \
         request then needs Authorization: Bearer <token>), listen on 127.0.0.1, or use `off`"
    )]
    NeedsToken(SocketAddr),
    #[error("--admin-listen {address}: cannot listen: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Refuses to expose the admin API on `listen` without a token.
pub fn check(listen: Option<SocketAddr>, token: Option<&AdminToken>) -> Result<(), AdminError> {
    match listen {
        Some(address) if !address.ip().is_loopback() && token.is_none() => {
            Err(AdminError::NeedsToken(address))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen(None)));
        assert_eq!(
            "127.0.0.1:9091".parse::<AdminListen>(),
            Ok(AdminListen(Some(SocketAddr::from(([127, 0, 0, 1], 9091)))))
        );
        assert!("localhost".parse::<AdminListen>().is_err());
    }

    #[test]
    fn tokens() {
        assert!(AdminToken::new(b"short").is_none());
        let token = AdminToken::new(b"  0123456789abcdef-admin\n").expect("long enough");
        assert!(token.matches(b"0123456789abcdef-admin"));
        assert!(!token.matches(b"0123456789abcdef-admiN"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let everywhere = Some(SocketAddr::from(([0, 0, 0, 0], 9091)));
        assert!(matches!(
            check(everywhere, None),
            Err(AdminError::NeedsToken(_))
        ));
        let token = AdminToken::new(b"0123456789abcdef-admin");
        assert!(check(everywhere, token.as_ref()).is_ok());
        assert!(check(Some(SocketAddr::from(([127, 0, 0, 1], 9091))), None).is_ok());
        assert!(check(Some("[::1]:9091".parse().expect("addr")), None).is_ok());
        assert!(check(None, None).is_ok());
    }
}
