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
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use broker::identity::{IdentityError, PrincipalHasher};
use broker::ids::PrincipalId;
use broker::oauth::{self, OAuthError, Rules};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use jsonwebtoken::jwk::JwkSet;

use crate::app::App;
use crate::body::ProxyBody;
use crate::errors::ProxyError;

/// The least time between two fetches of the key set for an unknown key id.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long a fetched key set is used before it is fetched again.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Largest key set accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

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

/// Why the caller has no principal.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Credential(#[from] IdentityError),
    #[error("{0}")]
    Token(OAuthError),
    #[error("the identity provider's key set is unavailable: {0}")]
    KeySet(String),
    #[error("two Authorization headers: send one")]
    TwoCredentials,
}

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
                let subject = self.keys.verify(jwks, token, rules).await?;
                Ok(self
                    .hasher
                    .of_identity("jwt", &[&subject.iss, &subject.sub]))
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

/// The token after `Bearer `.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The cached key set, and when it was last fetched.
#[derive(Default)]
struct KeySet {
    keys: RwLock<Option<Arc<JwkSet>>>,
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    async fn verify(
        &self,
        location: &JwksLocation,
        token: &str,
        rules: &Rules,
    ) -> Result<oauth::Subject, Refused> {
        let fresh = self
            .fetched
            .try_lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < MAX_AGE);
        let cached = self
            .keys
            .read()
            .ok()
            .and_then(|k| k.clone())
            .filter(|_| fresh);
        if let Some(keys) = &cached {
            match oauth::verify(token, keys, rules) {
                Err(OAuthError::UnknownKey) => {} // the provider may have rotated: fetch again
                other => return other.map_err(Refused::Token),
            }
        }
        let keys = self.refresh(location, cached.is_some()).await?;
        oauth::verify(token, &keys, rules).map_err(Refused::Token)
    }

    /// Fetches the key set; `rate_limited`: not if it was fetched within [`REFRESH_EVERY`].
    async fn refresh(
        &self,
        location: &JwksLocation,
        rate_limited: bool,
    ) -> Result<Arc<JwkSet>, Refused> {
        let mut fetched = self.fetched.lock().await;
        let current = self.keys.read().ok().and_then(|k| k.clone());
        if let (true, Some(at), Some(keys)) = (rate_limited, *fetched, &current)
            && at.elapsed() < REFRESH_EVERY
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(fetch(location).await.map_err(Refused::KeySet)?);
        *fetched = Some(Instant::now());
        if let Ok(mut slot) = self.keys.write() {
            *slot = Some(keys.clone());
        }
        tracing::info!(
            keys = keys.keys.len(),
            "fetched the identity provider's key set"
        );
        Ok(keys)
    }
}

async fn fetch(location: &JwksLocation) -> Result<JwkSet, String> {
    let bytes = match location {
        JwksLocation::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?,
        JwksLocation::Url(uri) => get(uri).await?.to_vec(),
    };
    serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS: {e}"))
}

/// GETs a URL (http or https, the system's and Mozilla's roots), bounded in time and size.
pub async fn get(uri: &Uri) -> Result<Bytes, String> {
    let client: Client<HttpsConnector<HttpConnector>, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(https_connector()?);
    let request = Request::get(uri.clone())
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let work = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{uri} answered HTTP {}", response.status()));
        }
        Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| format!("{uri} did not answer within 10s"))?
}

/// TLS with the system's root certificates, else Mozilla's (a distroless image has none).
fn https_connector() -> Result<HttpsConnector<HttpConnector>, String> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    };
    Ok(builder.https_or_http().enable_http1().build())
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
    let learned = match app
        .upstream
        .post_json(app.settings.mcp_path(), HeaderMap::new(), &ping)
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
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn resource_metadata_is_read_from_www_authenticate() {
        assert_eq!(
            resource_metadata_of(
                r#"Bearer error="invalid_token", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource""#
            )
            .as_deref(),
            Some("https://mcp.example/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            resource_metadata_of("Bearer resource_metadata=https://a/b, error=x").as_deref(),
            Some("https://a/b")
        );
        assert_eq!(resource_metadata_of("Bearer"), None);
    }

    #[tokio::test]
    async fn a_header_counts_only_from_a_trusted_proxy() {
        let identities = Identities::new(
            PrincipalSource::Header {
                name: HeaderName::from_static("x-forwarded-user"),
                trusted_proxies: vec!["10.0.0.0/8".parse().expect("net")],
            },
            PrincipalHasher::new(b"secret"),
            false,
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-user", "alice".parse().expect("value"));
        let proxy = Some("10.1.2.3".parse().expect("ip"));
        let stranger = Some("192.0.2.7".parse().expect("ip"));
        let alice = identities.principal(&headers, proxy).await.expect("alice");
        assert!(identities.principal(&headers, stranger).await.is_err());
        let mut forwarded = headers.clone();
        identities.strip_untrusted(&mut forwarded, stranger);
        assert!(forwarded.get("x-forwarded-user").is_none());
        identities.strip_untrusted(&mut headers, proxy);
        assert!(headers.get("x-forwarded-user").is_some());
        // The same text as an API key is another principal.
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer alice".parse().expect("v"));
        let hmac = Identities::new(
            PrincipalSource::BearerHmac,
            PrincipalHasher::new(b"secret"),
            false,
        );
        assert_ne!(hmac.principal(&bearer, proxy).await.expect("p"), alice);
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let identities = Identities::new(
            PrincipalSource::BearerHmac,
            PrincipalHasher::new(b"secret"),
            false,
        );
        let mut headers = HeaderMap::new();
        headers.append(header::AUTHORIZATION, "Bearer a".parse().expect("v"));
        headers.append(header::AUTHORIZATION, "Bearer b".parse().expect("v"));
        assert!(matches!(
            identities.principal(&headers, None).await,
            Err(Refused::TwoCredentials)
        ));
    }
}
