//! Where principals come from, as configured: a hashed bearer credential, an OAuth access token
//! verified against a key set, or a header set by a trusted proxy. `edge/identify.rs` applies it.

use std::path::PathBuf;

use broker::oauth::Rules;
use http::{HeaderName, Uri};
use ipnet::IpNet;

/// Where the identity provider's key set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    Url(Uri),
    File(PathBuf),
}

/// Which principal source, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PrincipalSource {
    #[default]
    BearerHmac,
    Jwt {
        jwks: JwksLocation,
        rules: Rules,
        /// The `resource_metadata` URL for 401s; learned from the backend when absent.
        resource_metadata: Option<String>,
    },
    Header {
        name: HeaderName,
        trusted_proxies: Vec<IpNet>,
    },
}
