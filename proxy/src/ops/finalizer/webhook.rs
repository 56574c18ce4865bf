//! The finalization webhook: a JSON POST of the event with `Idempotency-Key` = the work-session id.
//! One delivery makes a few quick attempts (a blip in the receiver); anything longer is left to the
//! redelivery backoff, so a failing receiver never holds a delivery task for long.

use std::time::Duration;

use broker::finalize::{Finalized, webhook_payload};
use bytes::Bytes;
use http::header;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ActionError;
use crate::backend::upstream::error_chain;

/// Attempts within one delivery.
const QUICK_ATTEMPTS: u32 = 3;
/// Bound of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook client: plain HTTP, pooled, each attempt bounded.
pub(super) struct Webhook {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Webhook {
    pub(super) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// POSTs the event; any 2xx is success.
    pub(super) async fn deliver(&self, url: &Uri, event: &Finalized) -> Result<(), ActionError> {
        let body = Bytes::from(serde_json::to_vec(&webhook_payload(event)).unwrap_or_default());
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=QUICK_ATTEMPTS {
            match self.attempt(url, event, body.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(attempt, %error, "webhook attempt failed");
                    last = error;
                }
            }
            if attempt < QUICK_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(ActionError::Webhook(last))
    }

    async fn attempt(&self, url: &Uri, event: &Finalized, body: Bytes) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", event.work_session.as_str())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}
