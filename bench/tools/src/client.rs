//! One keep-alive HTTP/1.1 connection (TCP_NODELAY, as wrk and nginx use) that posts MCP messages
//! and reads whole replies. Every request is bounded by a timeout.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::messages::PROTOCOL_VERSION;

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    Url(String),
    Connect(std::io::Error),
    Http(hyper::Error),
    Timeout,
    /// An unexpected HTTP status.
    Status(u16),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Url(url) => write!(f, "not an http://host:port/path URL: {url}"),
            Error::Connect(error) => write!(f, "cannot connect: {error}"),
            Error::Http(error) => write!(f, "HTTP: {error}"),
            Error::Timeout => write!(f, "no reply in time"),
            Error::Status(status) => write!(f, "unexpected HTTP status {status}"),
        }
    }
}

impl std::error::Error for Error {}

/// Where to send requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: String,
    pub path: String,
    /// `Authorization: Bearer ...`, if any.
    pub bearer: Option<String>,
    pub timeout: Duration,
}

impl Target {
    /// Reads `http://host:port/path`.
    pub fn parse(url: &str, bearer: Option<String>, timeout: Duration) -> Result<Self, Error> {
        let uri: Uri = url.parse().map_err(|_| Error::Url(url.to_owned()))?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::Url(url.to_owned()));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::Url(url.to_owned()))?
            .to_string();
        Ok(Self {
            authority,
            path: uri.path().to_owned(),
            bearer,
            timeout,
        })
    }
}

/// A reply, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// `Mcp-Session-Id`.
    pub session: Option<String>,
    pub body: Bytes,
}

/// One connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    target: Target,
}

impl Conn {
    /// Connects (the connection task runs on the current runtime).
    pub async fn connect(target: &Target) -> Result<Self, Error> {
        let stream = tokio::time::timeout(target.timeout, TcpStream::connect(&target.authority))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::Connect)?;
        stream.set_nodelay(true).map_err(Error::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            target: target.clone(),
        })
    }

    /// Sends the next requests with another bearer credential (another principal).
    pub fn set_bearer(&mut self, bearer: String) {
        self.target.bearer = Some(bearer);
    }

    /// The server closed the connection (e.g. after its `keepalive_requests`): connect again.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// POSTs one MCP message, on `session` if given, and reads the whole reply.
    pub async fn post(&mut self, session: Option<&str>, body: Bytes) -> Result<Reply, Error> {
        let mut request = Request::post(&self.target.path)
            .header(http::header::HOST, &self.target.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream");
        if let Some(bearer) = &self.target.bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| Error::Url(self.target.path.clone()))?;
        let exchange = async {
            self.sender.ready().await.map_err(Error::Http)?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(Error::Http)?;
            let status = response.status();
            let session = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(Error::Http)?
                .to_bytes();
            Ok(Reply {
                status,
                session,
                body,
            })
        };
        tokio::time::timeout(self.target.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout)?
    }
}
