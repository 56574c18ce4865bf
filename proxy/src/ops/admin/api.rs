//! The admin endpoints: token check, principal selection, the four work-session operations, and the
//! finalization dead letters (list, replay).
//! One log line per request (method, path, status); never the query, a credential or a token.

use broker::ids::{PrincipalId, Project, WorkSessionId};
use broker::store::{AdminAction, Status, StoreError};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};

use super::{PRINCIPAL_CREDENTIAL_HEADER, codec, guard};
use crate::backend::body::ProxyBody;
use crate::backend::operator_session::check_select;
use crate::backend::sessions::BackendError;
use crate::edge::App;
use crate::edge::limits::RequestBody;
use crate::mcp::errors::Refused;
use crate::mcp::errors::json_response;

/// Largest admin request body.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// A refusal: its status and the `error` text.
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn store(error: &StoreError) -> Self {
        tracing::warn!(%error, "admin: store failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session store is unavailable; try again in a moment",
        )
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::store(&error)
    }
}

type Answer = Result<(StatusCode, Value), Failure>;

/// Serves one admin request.
pub(super) async fn serve(app: &App, request: Request<RequestBody>) -> Response<ProxyBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let guard = request.body().guard();
    let (parts, body) = request.into_parts();
    let token = app.settings.admin_token.is_some();
    let answer = match guard::check(&parts.method, &parts.uri, &parts.headers, token)
        .map_err(|refusal| Failure::new(refusal.status, refusal.message))
        .and_then(|()| authorize(app, &parts))
    {
        Err(failure) => Err(failure),
        Ok(()) => route(app, &parts, body).await,
    };
    // A body cut for taking too long: say so, not "bad body".
    let answer = match guard.verdict() {
        Some(cut) => Err(Failure::new(cut.status(), cut.to_string())),
        None => answer,
    };
    let response = match answer {
        Ok((status, value)) => json_response(status, &value),
        Err(failure) => {
            let mut response = json_response(failure.status, &json!({"error": failure.message}));
            if failure.status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    };
    tracing::info!(%method, path, status = response.status().as_u16(), "admin request");
    response
}

/// With a configured token, the request must carry `Authorization: Bearer <token>`.
fn authorize(app: &App, parts: &Parts) -> Result<(), Failure> {
    let Some(token) = &app.settings.admin_token else {
        return Ok(());
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|value| {
            let (scheme, rest) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| rest.trim_ascii())
        });
    match presented {
        Some(presented) if token.matches(presented) => Ok(()),
        _ => Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "the admin API needs Authorization: Bearer <admin token>",
        )),
    }
}

async fn route(app: &App, parts: &Parts, body: RequestBody) -> Answer {
    query(parts)?;
    let segments: Vec<&str> = parts
        .uri
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = &parts.method;
    match (segments.as_slice(), method) {
        (["healthz"], &Method::GET) => Ok((StatusCode::OK, json!({"status": "ok"}))),
        (["sessions"], &Method::GET) => list(app, parts).await,
        (["sessions", ws], &Method::GET) => show(app, parts, ws).await,
        (["sessions", ws, "rebind"], &Method::POST) => rebind(app, parts, ws, body).await,
        (["sessions", ws, "end"], &Method::POST) => end(app, parts, ws).await,
        (["dead-letters"], &Method::GET) => dead_letters(app).await,
        (["dead-letters", id, "replay"], &Method::POST) => replay(app, id).await,
        (
            ["healthz"]
            | ["sessions"]
            | ["sessions", _]
            | ["sessions", _, "rebind" | "end"]
            | ["dead-letters"]
            | ["dead-letters", _, "replay"],
            _,
        ) => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        )),
        _ => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "no such admin endpoint: see docs/admin.md",
        )),
    }
}

/// The query's parameters; one given twice is a 400 (which one counts would be a guess).
fn query(parts: &Parts) -> Result<Vec<(String, String)>, Failure> {
    codec::query_pairs(parts.uri.query().unwrap_or_default()).map_err(|name| {
        Failure::bad_request(format!(
            "the query gives `{name}` more than once: give each parameter once"
        ))
    })
}

/// The principal the request names: `?principal=<hash>` or `X-Principal-Credential`, not both,
/// and the header once. A credential is turned into a principal as the proxy does for a client
/// presenting it ([`crate::edge::identify::Identities::principal_of_credential`]).
async fn principal(app: &App, parts: &Parts) -> Result<PrincipalId, Failure> {
    let query = query(parts)?;
    let by_hash = query
        .iter()
        .find(|(name, _)| name == "principal")
        .map(|(_, value)| value.as_str());
    let mut credentials = parts.headers.get_all(PRINCIPAL_CREDENTIAL_HEADER).iter();
    let credential = credentials.next();
    if credentials.next().is_some() {
        return Err(Failure::bad_request(
            "X-Principal-Credential is given more than once: give it once",
        ));
    }
    match (by_hash, credential) {
        (Some(_), Some(_)) => Err(Failure::bad_request(
            "name the principal once: ?principal=<hash> or X-Principal-Credential, not both",
        )),
        (Some(hash), None) => PrincipalId::parse(hash).map_err(|error| {
            Failure::bad_request(format!(
                "?principal= must be a principal hash (lowercase hex): {error}"
            ))
        }),
        (None, Some(value)) => {
            let value = value.to_str().map_err(|_| {
                Failure::bad_request("X-Principal-Credential must be visible ASCII")
            })?;
            app.identities
                .principal_of_credential(value)
                .await
                .map_err(|refused| match refused {
                    Refused::KeySet(_) => Failure::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the identity provider's key set is unavailable; try again in a moment",
                    ),
                    Refused::Token(error) => Failure::bad_request(format!(
                        "X-Principal-Credential is not a valid access token: {error}"
                    )),
                    _ => Failure::bad_request("X-Principal-Credential is empty or malformed"),
                })
        }
        (None, None) => Err(Failure::bad_request(
            "name the principal: ?principal=<hash> or header X-Principal-Credential: <credential>",
        )),
    }
}

fn work_session_id(ws: &str) -> Result<WorkSessionId, Failure> {
    WorkSessionId::parse(ws)
        .map_err(|error| Failure::bad_request(format!("`{ws}` is not a work session id: {error}")))
}

fn status_json(status: &Status) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

async fn list(app: &App, parts: &Parts) -> Answer {
    let principal = principal(app, parts).await?;
    let sessions = app.store.list_work_sessions(&principal).await?;
    let sessions: Vec<Value> = sessions.iter().map(status_json).collect();
    Ok((
        StatusCode::OK,
        json!({"principal": principal, "work_sessions": sessions}),
    ))
}

/// The work session, or 404.
async fn find(app: &App, principal: &PrincipalId, id: &WorkSessionId) -> Result<Status, Failure> {
    app.store.work_session(principal, id).await?.ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("no work session {id} for this principal"),
        )
    })
}

async fn show(app: &App, parts: &Parts, ws: &str) -> Answer {
    let principal = principal(app, parts).await?;
    let id = work_session_id(ws)?;
    let status = find(app, &principal, &id).await?;
    Ok((StatusCode::OK, status_json(&status)))
}

/// Runs `action` on a live work session; returns its status afterwards (as JSON: a bare id when
/// the store no longer shows it).
async fn act(
    app: &App,
    principal: &PrincipalId,
    id: &WorkSessionId,
    action: &AdminAction,
) -> Result<Value, Failure> {
    let not_live = || {
        Failure::new(
            StatusCode::CONFLICT,
            format!("work session {id} is not live (idle past its deadline, ended or finalized)"),
        )
    };
    if !find(app, principal, id).await?.live {
        return Err(not_live());
    }
    if !app.store.admin(principal, id, action).await? {
        return Err(not_live());
    }
    Ok(match app.store.work_session(principal, id).await? {
        Some(status) => status_json(&status),
        None => json!({"id": id, "live": false}),
    })
}

async fn rebind(app: &App, parts: &Parts, ws: &str, body: RequestBody) -> Answer {
    let principal = principal(app, parts).await?;
    let id = work_session_id(ws)?;
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| Failure::bad_request(format!("the body must be JSON under {MAX_BODY} bytes")))?
        .to_bytes();
    let usage = r#"the body must be JSON {"project": "<name>"}"#;
    let body: Value = serde_json::from_slice(&bytes).map_err(|_| Failure::bad_request(usage))?;
    let project = body
        .get("project")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::bad_request(usage))?;
    let project = Project::parse(project)
        .map_err(|error| Failure::bad_request(format!("bad project: {error}")))?;
    approved(app, &principal, &id, &project).await?;
    let status = act(app, &principal, &id, &AdminAction::Rebind(project.clone())).await?;
    tracing::info!(work_session = %id, %project, "admin: work session rebound");
    Ok((StatusCode::OK, status))
}

/// Whether the backend's select tool accepts `project` for the work session, asked on a backend
/// session of the broker's own: an operator cannot bind a name the backend never approved.
async fn approved(
    app: &App,
    principal: &PrincipalId,
    id: &WorkSessionId,
    project: &Project,
) -> Result<(), Failure> {
    let status = find(app, principal, id).await?;
    if !status.live {
        return Ok(()); // the rebind itself says it is not live
    }
    let mut work = status.session;
    work.project = project.clone();
    work.backends = Default::default();
    match check_select(app, &work).await {
        Ok(()) => Ok(()),
        Err(error @ BackendError::SelectRefused { .. }) => Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not rebound: {error}"),
        )),
        Err(error) => {
            tracing::warn!(%error, "admin: could not check the project with the backend");
            Err(Failure::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "not rebound: the project could not be checked with the MCP server: {error}"
                ),
            ))
        }
    }
}

async fn end(app: &App, parts: &Parts, ws: &str) -> Answer {
    let principal = principal(app, parts).await?;
    let id = work_session_id(ws)?;
    let status = act(app, &principal, &id, &AdminAction::End).await?;
    tracing::info!(work_session = %id, "admin: work session ended, the next sweep finalizes it");
    Ok((StatusCode::ACCEPTED, status))
}

/// How many dead letters a listing shows at most.
const DEAD_LETTER_LIMIT: usize = 500;

async fn dead_letters(app: &App) -> Answer {
    let dead = app.store.dead_letters(DEAD_LETTER_LIMIT).await?;
    Ok((StatusCode::OK, json!({ "dead_letters": dead })))
}

async fn replay(app: &App, id: &str) -> Answer {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-');
    if !valid {
        return Err(Failure::bad_request(format!(
            "`{id}` is not a dead-letter id"
        )));
    }
    match app.store.replay_dead_letter(id).await {
        Ok(true) => Ok((StatusCode::ACCEPTED, json!({ "replayed": id }))),
        Ok(false) => Err(Failure::new(StatusCode::NOT_FOUND, "no such dead letter")),
        Err(StoreError::Corrupt(_)) => Err(Failure::bad_request(format!(
            "`{id}` is not a dead-letter id"
        ))),
        Err(error) => Err(error.into()),
    }
}
