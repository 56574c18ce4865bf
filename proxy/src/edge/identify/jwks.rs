//! The identity provider's key set: fetched (http or https) or read from a file, cached for
//! [`super::MAX_AGE`], fetched again on an unknown key id at most every [`super::REFRESH_EVERY`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use broker::oauth::{self, OAuthError, Rules};
use bytes::Bytes;
use http::header;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;

use super::{JwksLocation, MAX_AGE, REFRESH_EVERY, Refused};

/// Largest key set accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The cached key set, and when it was last fetched.
#[derive(Default)]
pub(super) struct KeySet {
    keys: RwLock<Option<Arc<JwkSet>>>,
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    pub(super) async fn verify(
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
        let keys = Arc::new(fetch_key_set(location).await.map_err(Refused::KeySet)?);
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

/// Reads the key set from its file or fetches it from its URL (also `session-broker check`'s).
pub async fn fetch_key_set(location: &JwksLocation) -> Result<JwkSet, String> {
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
        // The whole chain: hyper's own message alone ("client error (Connect)") says nothing.
        let response = client
            .request(request)
            .await
            .map_err(|e| crate::backend::upstream::error_chain(&e))?;
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
