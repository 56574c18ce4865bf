//! The principal-source flags (`--principal` and what each source needs), turned into a
//! [`PrincipalSource`] with every inconsistency refused at start.

use std::path::PathBuf;
use std::time::Duration;

use broker::oauth::{self, Rules};
use clap::{Args as ClapArgs, ValueEnum};
use http::{HeaderName, Uri};
use ipnet::IpNet;

use crate::config::identity::{JwksLocation, PrincipalSource};

/// Where principals come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// A keyed hash of the bearer credential (opaque API keys).
    BearerHmac,
    /// An OAuth access token (JWT) verified against the identity provider's JWKS; the principal is
    /// its issuer and subject, so a refreshed token keeps the work session.
    Jwt,
    /// A header set by an authenticating proxy in --trusted-proxies.
    Header,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct PrincipalArgs {
    /// Where the principal comes from: bearer-hmac, jwt or header.
    #[arg(
        long = "principal",
        env = "BROKER_PRINCIPAL",
        value_enum,
        default_value = "bearer-hmac"
    )]
    pub source: Source,
    /// jwt: the identity provider's JWKS URL (http or https), fetched again on an unknown key id.
    #[arg(long, env = "BROKER_JWT_JWKS_URL", conflicts_with = "jwt_jwks_file")]
    pub jwt_jwks_url: Option<Uri>,
    /// jwt: a file holding the identity provider's JWKS, read again on an unknown key id.
    #[arg(long, env = "BROKER_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// jwt: the issuer (`iss`) every access token must carry.
    #[arg(long, env = "BROKER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// jwt: the audience (`aud`) every access token must carry (default: not checked).
    #[arg(long, env = "BROKER_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// jwt: the accepted signature algorithms (asymmetric only).
    #[arg(
        long,
        env = "BROKER_JWT_ALGORITHMS",
        default_value = "RS256,ES256,EdDSA"
    )]
    pub jwt_algorithms: String,
    /// jwt: clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "BROKER_JWT_LEEWAY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,
    /// jwt: the `resource_metadata` URL named in 401s (default: the backend's, learned from its own 401).
    #[arg(long, env = "BROKER_JWT_RESOURCE_METADATA")]
    pub jwt_resource_metadata: Option<String>,
    /// header: the header that names the caller.
    #[arg(long, env = "BROKER_PRINCIPAL_HEADER")]
    pub principal_header: Option<HeaderName>,
    /// header: the peers (CIDRs) allowed to set --principal-header; from others it is ignored.
    #[arg(long, env = "BROKER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
}

/// A principal-source configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalError {
    #[error("--principal jwt needs --jwt-issuer and one of --jwt-jwks-url or --jwt-jwks-file")]
    JwtIncomplete,
    #[error("--jwt-algorithms: {0}")]
    Algorithms(String),
    #[error("--jwt-jwks-url must be an http:// or https:// URL with a host")]
    BadJwksUrl,
    #[error(
        "--principal header needs --principal-header NAME and --trusted-proxies CIDR,... (only those \
         peers may name the caller; without them anyone could)"
    )]
    HeaderIncomplete,
    #[error("{flag} is only used with --principal {mode}")]
    Unused {
        flag: &'static str,
        mode: &'static str,
    },
}

impl PrincipalArgs {
    pub fn into_source(self) -> Result<PrincipalSource, PrincipalError> {
        let unused = |flag, mode| Err(PrincipalError::Unused { flag, mode });
        let jwt_given = self.jwt_jwks_url.is_some()
            || self.jwt_jwks_file.is_some()
            || self.jwt_issuer.is_some()
            || self.jwt_audience.is_some()
            || self.jwt_resource_metadata.is_some();
        let header_given = self.principal_header.is_some() || !self.trusted_proxies.is_empty();
        match self.source {
            Source::BearerHmac if jwt_given => unused("--jwt-*", "jwt"),
            Source::BearerHmac if header_given => {
                unused("--principal-header / --trusted-proxies", "header")
            }
            Source::BearerHmac => Ok(PrincipalSource::BearerHmac),
            Source::Jwt if header_given => {
                unused("--principal-header / --trusted-proxies", "header")
            }
            Source::Jwt => {
                let jwks = match (self.jwt_jwks_url, self.jwt_jwks_file) {
                    (Some(url), None) => {
                        let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
                        if !scheme_ok || url.authority().is_none() {
                            return Err(PrincipalError::BadJwksUrl);
                        }
                        JwksLocation::Url(url)
                    }
                    (None, Some(path)) => JwksLocation::File(path),
                    _ => return Err(PrincipalError::JwtIncomplete),
                };
                let issuer = self.jwt_issuer.ok_or(PrincipalError::JwtIncomplete)?;
                let algorithms = oauth::parse_algorithms(&self.jwt_algorithms)
                    .map_err(PrincipalError::Algorithms)?;
                Ok(PrincipalSource::Jwt {
                    jwks,
                    rules: Rules {
                        issuer,
                        audience: self.jwt_audience,
                        algorithms,
                        leeway_secs: self.jwt_leeway.as_secs(),
                    },
                    resource_metadata: self.jwt_resource_metadata,
                })
            }
            Source::Header if jwt_given => unused("--jwt-*", "jwt"),
            Source::Header => match (self.principal_header, self.trusted_proxies) {
                (Some(name), trusted) if !trusted.is_empty() => Ok(PrincipalSource::Header {
                    name,
                    trusted_proxies: trusted,
                }),
                _ => Err(PrincipalError::HeaderIncomplete),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Only {
        #[command(flatten)]
        principal: PrincipalArgs,
    }

    fn source(args: &[&str]) -> Result<PrincipalSource, PrincipalError> {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Only::try_parse_from(argv)
            .expect("parses")
            .principal
            .into_source()
    }

    #[test]
    fn each_source_and_what_it_needs() {
        assert_eq!(source(&[]).expect("default"), PrincipalSource::BearerHmac);
        let jwt = source(&[
            "--principal",
            "jwt",
            "--jwt-jwks-url",
            "https://idp.example/jwks.json",
            "--jwt-issuer",
            "https://idp.example/",
        ])
        .expect("jwt");
        assert!(matches!(jwt, PrincipalSource::Jwt { .. }));
        assert!(matches!(
            source(&["--principal", "jwt", "--jwt-issuer", "x"]),
            Err(PrincipalError::JwtIncomplete)
        ));
        assert!(matches!(
            source(&[
                "--principal",
                "jwt",
                "--jwt-jwks-file",
                "/k",
                "--jwt-issuer",
                "x",
                "--jwt-algorithms",
                "HS256"
            ]),
            Err(PrincipalError::Algorithms(_))
        ));
        assert!(matches!(
            source(&[
                "--principal",
                "jwt",
                "--jwt-jwks-url",
                "ftp://idp/jwks",
                "--jwt-issuer",
                "x"
            ]),
            Err(PrincipalError::BadJwksUrl)
        ));
        // A header source refuses to start without the peers allowed to set it.
        assert!(matches!(
            source(&["--principal", "header", "--principal-header", "x-user"]),
            Err(PrincipalError::HeaderIncomplete)
        ));
        assert!(matches!(
            source(&[
                "--principal",
                "header",
                "--principal-header",
                "x-user",
                "--trusted-proxies",
                "10.0.0.0/8,192.168.1.1/32"
            ]),
            Ok(PrincipalSource::Header { .. })
        ));
        // Flags of another source are a mistake worth saying.
        assert!(matches!(
            source(&["--jwt-issuer", "x"]),
            Err(PrincipalError::Unused { .. })
        ));
    }
}
