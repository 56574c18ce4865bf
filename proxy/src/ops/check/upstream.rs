//! The `upstream` line: whether the MCP server speaks MCP, and which eras. A real `initialize` at the
//! legacy revision the broker offers on its own ([`bridge::LEGACY_VERSION`]) says the server's name,
//! version and the revision it agreed on; the backend session it opened, if any, is ended with a
//! DELETE. The 2026-07-28 era is probed as the bridge probes it ([`bridge::discover`]). Every
//! request is built by [`UpstreamRequest`] and bounded by the upstream timeout, at most
//! [`super::PROBE_TIMEOUT`].

use broker::ids::BackendSessionId;
use broker::modern::BridgeMode;
use broker::{mcp, modern};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Line, PROBE_TIMEOUT};
use crate::backend::bridge;
use crate::backend::headers::MCP_SESSION_ID;
use crate::backend::outbound::UpstreamRequest;
use crate::backend::upstream::{Upstream, UpstreamError};
use crate::config::Settings;

const WHAT: &str = "upstream";
const ID: &str = "session-broker-check-initialize";

/// What the legacy handshake found.
enum Legacy {
    /// It answered `initialize`: server name and version, the agreed revision, and what became of
    /// the backend session it opened.
    Speaks {
        server: String,
        version: String,
        session: Session,
    },
    /// It wants a credential (HTTP 401 with `WWW-Authenticate`, as the MCP authorization spec says).
    NeedsCredential,
    /// It refused or failed the handshake.
    Refused(String),
}

/// The backend session the probe's `initialize` opened.
enum Session {
    /// None: a stateless server.
    None,
    /// Ended by the probe's DELETE.
    Closed,
    /// The DELETE did not end it (status or error).
    Left(String),
}

/// Checks the upstream of `settings`.
pub async fn check(settings: &Settings) -> Line {
    let mut bounded = settings.clone();
    bounded.upstream_timeout = settings.upstream_timeout.min(PROBE_TIMEOUT);
    let upstream = Upstream::new(&bounded);
    let path = settings.mcp_path();
    let target = &settings.upstream;
    let (legacy, modern) = tokio::join!(
        initialize(&upstream, path),
        bridge::discover(&upstream, path)
    );
    let legacy = match legacy {
        Ok(legacy) => legacy,
        // Unreachable, timed out: nothing else to say.
        Err(error) => return Line::fail(WHAT, format!("{target}: {}", reason(&error))),
    };
    let modern_era = modern::SUPPORTED[0];
    match (legacy, modern) {
        (
            Legacy::Speaks {
                server,
                version,
                session,
            },
            modern,
        ) => {
            let session = match session {
                Session::None => "stateless".to_owned(),
                Session::Closed => "stateful, its session closed".to_owned(),
                Session::Left(why) => format!("stateful, its session not closed: {why}"),
            };
            let offered = match (modern.is_some(), settings.bridge) {
                (true, _) => "offered",
                (false, BridgeMode::Auto) => "not offered (the broker bridges modern clients)",
                (false, BridgeMode::Off) => {
                    "not offered (and --bridge off passes modern clients through to it)"
                }
            };
            Line::ok(
                WHAT,
                format!(
                    "{target}: {server} speaks MCP {version} ({session}); {modern_era}: {offered}"
                ),
            )
        }
        (Legacy::NeedsCredential, _) => Line::ok(
            WHAT,
            format!(
                "{target}: answers and asks for a credential (HTTP 401 with WWW-Authenticate): \
                 the eras were not probed"
            ),
        ),
        (Legacy::Refused(why), Some(discover)) => Line::ok(
            WHAT,
            format!(
                "{target}: {} speaks MCP {modern_era} only (initialize refused: {why})",
                server_name(
                    discover
                        .get("_meta")
                        .and_then(|meta| meta.get(modern::META_SERVER_INFO))
                        .or_else(|| discover.get("serverInfo"))
                )
            ),
        ),
        (Legacy::Refused(why), None) => Line::fail(
            WHAT,
            format!(
                "{target}: does not speak MCP: initialize {why}; server/discover offers no {modern_era}"
            ),
        ),
    }
}

/// Sends the `initialize`, reads its reply and ends the session it opened. `Err` when the server
/// could not be reached at all.
async fn initialize(upstream: &Upstream, path: &str) -> Result<Legacy, UpstreamError> {
    let params = json!({
        "protocolVersion": bridge::LEGACY_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "session-broker-check", "version": env!("CARGO_PKG_VERSION")},
    });
    let request = UpstreamRequest::own_json(
        path,
        HeaderMap::new(),
        &mcp::initialize_request(ID, &params),
    )?;
    let response = request.send(upstream).await?;
    if response.status() == StatusCode::UNAUTHORIZED
        && response.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        return Ok(Legacy::NeedsCredential);
    }
    let session = response
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| BackendSessionId::parse(value).ok());
    let reply = upstream.read_reply(response, ID).await;
    let version = reply
        .as_ref()
        .ok()
        .and_then(mcp::negotiated_version)
        .map(str::to_owned);
    let closed = match &session {
        Some(session) => close(upstream, path, session, version.as_deref()).await,
        None => Session::None,
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => return Ok(Legacy::Refused(reason(&error))),
    };
    if let Some(error) = reply.get("error") {
        return Ok(Legacy::Refused(format!("answered the error {error}")));
    }
    let Some(version) = version else {
        return Ok(Legacy::Refused(
            "answered with no protocolVersion in its result".into(),
        ));
    };
    Ok(Legacy::Speaks {
        server: server_name(reply.pointer("/result/serverInfo")),
        version,
        session: closed,
    })
}

/// Ends the probe's backend session.
async fn close(
    upstream: &Upstream,
    path: &str,
    session: &BackendSessionId,
    version: Option<&str>,
) -> Session {
    let delete = UpstreamRequest::own(Method::DELETE, path, HeaderMap::new())
        .session(Some(session))
        .version(version);
    match delete.send(upstream).await {
        Ok(response) if response.status().is_success() => Session::Closed,
        Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
            Session::Left("the server does not end sessions on DELETE (405)".into())
        }
        Ok(response) => Session::Left(format!("DELETE answered HTTP {}", response.status())),
        Err(error) => Session::Left(reason(&error)),
    }
}

/// `"name" version` from a `serverInfo` object.
fn server_name(info: Option<&Value>) -> String {
    let field = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
    };
    match (field("name"), field("version")) {
        (Some(name), Some(version)) => format!("\"{name}\" {version}"),
        (Some(name), None) => format!("\"{name}\""),
        _ => "a server with no serverInfo".into(),
    }
}

/// An upstream error, short: what an operator can act on.
fn reason(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Unreachable(detail) => {
            // hyper's chain repeats itself ("client error (Connect): tcp connect error: Connection
            // refused (os error 111)"): its last part says it.
            let last = detail.rsplit(": ").next().unwrap_or(detail);
            format!("unreachable: {last}")
        }
        UpstreamError::Timeout(after) => format!("no answer within {after:?}"),
        UpstreamError::Status { status, detail } => {
            // A JSON-RPC error says it best; else the start of the body, if any.
            let rpc = serde_json::from_str::<Value>(detail).ok().and_then(|body| {
                let error = body.get("error")?;
                Some(format!(
                    "{} {}",
                    error.get("code")?,
                    error.get("message")?.as_str()?
                ))
            });
            match rpc.as_deref().unwrap_or(detail.trim()) {
                "" => format!("answered HTTP {status}"),
                detail => format!("answered HTTP {status}: {detail}"),
            }
        }
        UpstreamError::Malformed(detail) => format!("answered something unreadable: {detail}"),
        UpstreamError::NoReply => "closed the reply before answering".into(),
    }
}
