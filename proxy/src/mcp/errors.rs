//! The one place where failures become HTTP statuses and JSON-RPC errors. Messages say what the
//! client can do; internals (store addresses, backend details beyond a status) stay in the logs.

use broker::identity::IdentityError;
use broker::jsonrpc::{self, ParseError, codes};
use broker::oauth::OAuthError;
use broker::rpc_ids::Unsealed;
use broker::store::StoreError;
use http::{HeaderValue, Response, StatusCode, header};

use crate::backend::body::{ProxyBody, full};
use crate::backend::sessions::BackendError;
use crate::backend::upstream::UpstreamError;

/// Why a request was not forwarded (or its answer not relayed).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("this Origin is not allowed")]
    ForbiddenOrigin,
    #[error("{0}")]
    Identity(IdentityError),
    #[error("{0}")]
    Refused(Refused),
    #[error("Session not found")]
    UnknownSession,
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body could not be read")]
    BodyUnreadable,
    #[error("{0}")]
    Parse(ParseError),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the session store is unavailable")]
    Store(#[from] StoreError),
    #[error("session-broker: a token could not be signed")]
    Signing,
    #[error(
        "session-broker: a batch cannot carry the select tool or a tool that needs a project; send such calls one at a time"
    )]
    BatchedProjectCall,
    /// The path is another spelling of (or lies under) this path, which the broker serves only as
    /// written: forwarding it would skip the broker's checks.
    #[error("this request path is another spelling of {0}: send it as {0}, exactly")]
    AmbiguousPath(String),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// A client's answer to a server request cannot be delivered by its id.
    #[error("session-broker: {0}")]
    Answer(#[from] AnswerError),
    /// A bound on what clients may make the broker hold was reached; retrying later may work.
    #[error("{0}")]
    Overloaded(&'static str),
}

impl ProxyError {
    fn status_and_code(&self) -> (StatusCode, i64) {
        match self {
            ProxyError::ForbiddenOrigin => (StatusCode::FORBIDDEN, codes::INVALID_REQUEST),
            ProxyError::Identity(_) => (StatusCode::UNAUTHORIZED, codes::INVALID_REQUEST),
            ProxyError::Refused(Refused::TwoCredentials) => {
                (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST)
            }
            ProxyError::Refused(Refused::KeySet(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::INTERNAL_ERROR)
            }
            ProxyError::Refused(_) => (StatusCode::UNAUTHORIZED, codes::INVALID_REQUEST),
            ProxyError::UnknownSession => (StatusCode::NOT_FOUND, codes::SESSION_NOT_FOUND),
            ProxyError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, codes::INVALID_REQUEST),
            ProxyError::BodyUnreadable => (StatusCode::BAD_REQUEST, codes::PARSE_ERROR),
            ProxyError::Parse(e) => (StatusCode::BAD_REQUEST, e.code()),
            ProxyError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, codes::INVALID_REQUEST)
            }
            ProxyError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                codes::INVALID_REQUEST,
            ),
            ProxyError::Upstream(UpstreamError::Timeout(_)) => {
                (StatusCode::GATEWAY_TIMEOUT, codes::INTERNAL_ERROR)
            }
            ProxyError::Upstream(_) | ProxyError::Backend(_) => {
                (StatusCode::BAD_GATEWAY, codes::INTERNAL_ERROR)
            }
            ProxyError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::INTERNAL_ERROR),
            ProxyError::Signing => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL_ERROR),
            ProxyError::BatchedProjectCall => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            ProxyError::AmbiguousPath(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            ProxyError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, codes::INVALID_REQUEST),
            ProxyError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::INTERNAL_ERROR),
            ProxyError::Answer(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The message a client sees.
    fn public_message(&self) -> String {
        match self {
            ProxyError::Store(_) => {
                "session-broker: the session store is unavailable; try again in a moment".into()
            }
            ProxyError::Backend(_) | ProxyError::Upstream(_) => format!("session-broker: {self}"),
            ProxyError::Refused(Refused::KeySet(_)) => {
                "session-broker: the identity provider's keys are unavailable; try again in a moment"
                    .into()
            }
            ProxyError::Overloaded(reason) => format!("session-broker: {reason}"),
            other => other.to_string(),
        }
    }

    /// The HTTP response for this error.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let body = jsonrpc::error_reply(None, code, &self.public_message());
        let mut response = json_response(status, &body);
        if matches!(
            self,
            ProxyError::BodyTooLarge(_)
                | ProxyError::HeadersTooLarge(_)
                | ProxyError::ForbiddenOrigin
                | ProxyError::Identity(_)
                | ProxyError::Refused(_)
                | ProxyError::BodyTimeout(_)
                | ProxyError::Overloaded(_)
        ) {
            // Part of the request may be unread (these are refused before the body is read): this
            // connection must not carry another one, and the client must know it before it tries.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ProxyError::Overloaded(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self,
            ProxyError::Identity(_)
                | ProxyError::Refused(Refused::Credential(_) | Refused::Token(_))
        ) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON response the broker wrote itself.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            ProxyError::UnknownSession.into_response().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ProxyError::ForbiddenOrigin.into_response().status(),
            StatusCode::FORBIDDEN
        );
        let unauthorized = ProxyError::Identity(IdentityError::MissingCredential).into_response();
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert!(
            unauthorized
                .headers()
                .contains_key(header::WWW_AUTHENTICATE)
        );
        assert_eq!(
            ProxyError::Store(StoreError::Unavailable("redis://secret@host".into()))
                .public_message(),
            "session-broker: the session store is unavailable; try again in a moment"
        );
    }
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

/// Why a client's answer to a server request cannot be delivered.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Unsealed(#[from] Unsealed),
}
