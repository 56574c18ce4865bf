//! Who the caller is: the principal, from one of three sources (`--principal`):
//! - `bearer-hmac` (default): a keyed hash of the bearer credential, for opaque API keys;
//! - `jwt`: the bearer is an OAuth access token, verified against the identity provider's key set
//!   ([`broker::oauth`]); the principal is a keyed hash of its `iss` and `sub`, so a refreshed
//!   token keeps the work session. The key set is fetched from `--jwt-jwks-url` (http or https) or
//!   read from `--jwt-jwks-file`, cached for [`MAX_AGE`] (so a key the provider withdrew stops
//!   working), and fetched again when a token names an unknown key (at most once per
//!   [`REFRESH_EVERY`], so forged `kid`s cannot make the broker hammer the provider);
//! - `header`: a header set by an authenticating proxy in front of the broker, believed only from
//!   `--trusted-proxies`; from any other peer it is ignored (and stripped before forwarding).
//!
//! A refused access token gets 401 with a `WWW-Authenticate` that carries the backend's
//! `resource_metadata` (learned once by a harmless unauthenticated `ping`, or configured), so an
//! OAuth client can discover where to get a token.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker::identity::{IdentityError, PrincipalHasher};
use broker::ids::PrincipalId;
use broker::oauth::Rules;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

mod jwks;

use jwks::KeySet;
pub use jwks::{fetch_key_set, get};

use crate::backend::body::ProxyBody;
pub use crate::config::identity::{JwksLocation, PrincipalSource};
use crate::edge::App;
use crate::mcp::errors::ProxyError;
pub use crate::mcp::errors::Refused;

/// The least time between two fetches of the key set for an unknown key id.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long a fetched key set is used before it is fetched again.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Establishes principals.
pub struct Identities {
    source: PrincipalSource,
    hasher: PrincipalHasher,
    allow_anonymous: bool,
    keys: KeySet,
}

impl Identities {
    pub fn new(source: PrincipalSource, hasher: PrincipalHasher, allow_anonymous: bool) -> Self {
        Self {
            source,
            hasher,
            allow_anonymous,
            keys: KeySet::default(),
        }
    }

    /// The configured source.
    pub fn source(&self) -> &PrincipalSource {
        &self.source
    }

    /// The hasher, for operator tools that compute a principal from a credential.
    pub fn hasher(&self) -> &PrincipalHasher {
        &self.hasher
    }

    /// The principal of a request from `peer`.
    pub async fn principal(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<PrincipalId, Refused> {
        let mut credentials = headers.get_all(header::AUTHORIZATION).iter();
        let authorization = credentials.next();
        if credentials.next().is_some() {
            return Err(Refused::TwoCredentials);
        }
        let credential = authorization
            .map(|v| v.to_str().map_err(|_| IdentityError::MalformedCredential))
            .transpose()?;
        match &self.source {
            PrincipalSource::BearerHmac => {
                Ok(self.hasher.principal(credential, self.allow_anonymous)?)
            }
            PrincipalSource::Jwt { jwks, rules, .. } => {
                let Some(credential) = credential else {
                    return Ok(self.hasher.principal(None, self.allow_anonymous)?);
                };
                let token = bearer_token(credential).ok_or(IdentityError::MalformedCredential)?;
                self.of_access_token(jwks, rules, token).await
            }
            PrincipalSource::Header { .. } => {
                let value = self
                    .trusted_header(headers, peer)
                    .map(str::trim)
                    .filter(|v| !v.is_empty());
                match value {
                    Some(value) => Ok(self.hasher.of_identity("header", &[value])),
                    None => Ok(self.hasher.principal(None, self.allow_anonymous)?),
                }
            }
        }
    }

    /// The principal of a verified access token: its `iss` and `sub`.
    async fn of_access_token(
        &self,
        jwks: &JwksLocation,
        rules: &Rules,
        token: &str,
    ) -> Result<PrincipalId, Refused> {
        let subject = self.keys.verify(jwks, token, rules).await?;
        Ok(self
            .hasher
            .of_identity("jwt", &[&subject.iss, &subject.sub]))
    }

    /// The principal a client presenting `credential` has, for the admin API's lookups by
    /// credential: the API key's hash, the access token's `iss` and `sub` (verified: a lookup
    /// with an expired or forged token is refused), or the identity header's value. `Bearer <c>`
    /// and `<c>` name one principal.
    pub async fn principal_of_credential(&self, credential: &str) -> Result<PrincipalId, Refused> {
        let bare = bearer_token(credential).unwrap_or(credential.trim());
        match &self.source {
            PrincipalSource::BearerHmac => Ok(self.hasher.principal(Some(credential), false)?),
            PrincipalSource::Jwt { jwks, rules, .. } if !bare.is_empty() => {
                self.of_access_token(jwks, rules, bare).await
            }
            PrincipalSource::Header { .. } if !bare.is_empty() => {
                Ok(self.hasher.of_identity("header", &[credential.trim()]))
            }
            _ => Err(IdentityError::MalformedCredential.into()),
        }
    }

    /// The identity header's value, when the peer may set it.
    fn trusted_header<'a>(&self, headers: &'a HeaderMap, peer: Option<IpAddr>) -> Option<&'a str> {
        let PrincipalSource::Header {
            name,
            trusted_proxies,
        } = &self.source
        else {
            return None;
        };
        let trusted = peer.is_some_and(|ip| trusted_proxies.iter().any(|net| net.contains(&ip)));
        if !trusted {
            return None;
        }
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Removes the identity header from a request of a peer that may not set it, before it is
    /// forwarded anywhere.
    pub fn strip_untrusted(&self, headers: &mut HeaderMap, peer: Option<IpAddr>) {
        if let PrincipalSource::Header { name, .. } = &self.source
            && self.trusted_header(headers, peer).is_none()
        {
            headers.remove(name);
        }
    }
}

/// Who a request on the MCP path is from. Refuses a foreign Origin (403) first, then a missing or
/// refused credential ([`ProxyError::Refused`], answered by [`unauthorized`]).
pub async fn who(
    app: &App,
    headers: &HeaderMap,
    client_ip: Option<IpAddr>,
) -> Result<PrincipalId, ProxyError> {
    crate::edge::origin::check(&app.settings.allowed_origins, headers)?;
    app.identities
        .principal(headers, client_ip)
        .await
        .map_err(ProxyError::Refused)
}

/// The token after `Bearer `.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The 401 (or 400, 503) for a refused identity. With OAuth access tokens, `WWW-Authenticate`
/// carries `resource_metadata`, so an OAuth client can discover where to get a token: the one
/// configured, else the one the backend names in its own 401s, learned by an unauthenticated
/// `ping` (harmless) and kept for a while.
pub async fn unauthorized(app: &App, error: ProxyError) -> Response<ProxyBody> {
    tracing::info!(%error, "refused");
    let token_refused = matches!(error, ProxyError::Refused(Refused::Token(_)));
    let mut response = error.into_response();
    let PrincipalSource::Jwt {
        resource_metadata, ..
    } = app.identities.source()
    else {
        return response;
    };
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let metadata = match resource_metadata {
        Some(configured) => Some(configured.clone()),
        None => learn_resource_metadata(app).await,
    };
    let mut value = String::from("Bearer");
    let mut params = Vec::new();
    if token_refused {
        params.push(r#"error="invalid_token""#.to_owned());
    }
    if let Some(url) = metadata {
        params.push(format!(r#"resource_metadata="{url}""#));
    }
    if !params.is_empty() {
        value.push(' ');
        value.push_str(&params.join(", "));
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn learn_resource_metadata(app: &App) -> Option<String> {
    if let Some(known) = app.resource_metadata.cached() {
        return known;
    }
    let ping =
        serde_json::json!({"jsonrpc": "2.0", "id": "session-broker-probe", "method": "ping"});
    let learned = match crate::backend::outbound::post_json(
        &app.upstream,
        app.settings.mcp_path(),
        HeaderMap::new(),
        &ping,
    )
    .await
    {
        Ok(response) if response.status() == StatusCode::UNAUTHORIZED => response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(resource_metadata_of),
        Ok(_) => None,
        Err(error) => {
            tracing::debug!(%error, "could not ask the backend for its resource metadata");
            return None; // not remembered: ask again next time
        }
    };
    app.resource_metadata.remember(learned.clone());
    learned
}

/// The `resource_metadata` the backend names in its own 401s, learned once.
#[derive(Default)]
pub struct ResourceMetadata(Mutex<Option<(Option<String>, Instant)>>);

impl ResourceMetadata {
    /// How long a learned value (or its absence) is kept.
    const KEEP: Duration = Duration::from_secs(300);

    /// The cached value, if fresh.
    pub fn cached(&self) -> Option<Option<String>> {
        let slot = self.0.lock().ok()?;
        slot.as_ref()
            .filter(|(_, at)| at.elapsed() < Self::KEEP)
            .map(|(v, _)| v.clone())
    }

    pub fn remember(&self, value: Option<String>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((value, Instant::now()));
        }
    }
}

/// The `resource_metadata="..."` parameter of a `WWW-Authenticate` value.
pub fn resource_metadata_of(www_authenticate: &str) -> Option<String> {
    let start = www_authenticate.find("resource_metadata=")? + "resource_metadata=".len();
    let rest = &www_authenticate[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        .then(|| value.to_owned())
}

#[cfg(test)]
mod tests;
