"""Example MCP backend that reproduces the production "project per MCP session" bug.

A FastMCP (official ``mcp`` 1.x SDK) server over Streamable HTTP, stateful mode. The project a
client selects is remembered per MCP session, keyed by the ``mcp-session-id`` request header, exactly
like the hosted memory server whose logs motivated mcp-session-broker: when a client re-initializes
(a new MCP session), the selection is gone and every project-scoped tool refuses to work.

Put ``session-broker`` in front of it and the selection survives re-initializations, because the
broker replays ``select_project_for_session`` on every fresh backend session and adds the
``X-MCP-Project`` / ``X-MCP-Work-Session`` headers to every forwarded request.

Tools: list_projects, select_project_for_session, get_last_handover, lock_context,
explore_context_tree, write_handover, wait (answers after some seconds; the audit log says whether
it finished or was cancelled), confirm_lock (asks the user through ``elicitation/create`` before it
locks), summarize (asks the client's model through ``sampling/createMessage``), announce (a log
message on the session's GET stream, tied to no request). Resource template
``notes://{topic}``: the topic's content in the session's project (project-scoped, like the tools). Project-scoped replies contain
``project=<session project> header=<X-MCP-Project or none>`` so tests can assert on them.

Extra HTTP routes: ``GET /audit`` (JSON list of every tool call: tool, mcp_session, session_project,
header_project, has_assertion, authorization (the ``Authorization`` header, a test backend's record),
args as received, traceparent and meta_traceparent: the W3C trace context in the header and in
``params._meta``), ``DELETE /audit`` (clear it), ``GET /health`` ("ok").

Stateless mode (``--stateless``): the server keeps no MCP sessions at all (its ``initialize`` reply
carries no session id, as serverless deployments do). It then takes the project from the broker:
the ``X-MCP-Work-Session`` assertion, verified with the broker's key (``--assertion-key-file`` for a
shared HS256 key, or ``--jwks-url`` for the broker's EdDSA public keys), must name the same project
as ``X-MCP-Project``. This is how a backend built to trust the broker works; see the README.

Usage: ``python server.py --port 8001 [--host 127.0.0.1] [--json-response] [--select-delay SECONDS]
[--stateless [--assertion-key-file F | --jwks-url URL] [--assertion-audience mcp-backend]]``
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import anyio
from assertion import Verifier
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import SamplingMessage, TextContent
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas", "zephyr")
PROJECT_HEADER = "x-mcp-project"
ASSERTION_HEADER = "x-mcp-work-session"
SESSION_HEADER = "mcp-session-id"

log = logging.getLogger("example-backend")

# In-memory state (this is the bug: the project lives in the MCP session, nowhere else).
SESSION_PROJECTS: dict[str, str] = {}
LOCKED: dict[str, dict[str, str]] = {}  # project -> topic -> content
HANDOVERS: dict[str, list[dict[str, Any]]] = {}  # project -> handovers, oldest first
AUDIT: list[dict[str, Any]] = []
# Stateless mode: whether it is on, and how to verify the broker's assertion (set by main()).
STATELESS: dict[str, Any] = {"on": False, "verifier": Verifier()}
# Seconds every select waits before answering (--select-delay), so tests can make selects overlap.
SELECT_DELAY = 0.0
# The arguments of the current tools/call exactly as received (before FastMCP validates them), so the
# audit log shows whether a proxy forwarded anything extra (e.g. an unstripped work_session).
_RAW_ARGS: ContextVar[dict[str, Any]] = ContextVar("raw_args", default={})


class AuditedFastMCP(FastMCP):
    """FastMCP that remembers each call's raw arguments for the audit log."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        token = _RAW_ARGS.set(dict(arguments or {}))
        try:
            return await super().call_tool(name, arguments)
        finally:
            _RAW_ARGS.reset(token)


def _headers(ctx: Context) -> dict[str, str]:
    """The HTTP request headers of the current tool call (lower-case names); empty over stdio."""
    request = getattr(ctx.request_context, "request", None)
    if request is None:
        return {}
    return {k.lower(): v for k, v in request.headers.items()}


def _meta_traceparent(ctx: Context) -> str | None:
    """``params._meta.traceparent`` of the current request, if the client sent one."""
    meta = getattr(ctx.request_context, "meta", None)
    if meta is None:
        return None
    extra = getattr(meta, "model_extra", None) or {}
    value = extra.get("traceparent", getattr(meta, "traceparent", None))
    return value if isinstance(value, str) else None


def _record(ctx: Context, tool: str) -> tuple[str, str | None, str | None]:
    """Append one audit entry; return (mcp session id, session project, header project)."""
    headers = _headers(ctx)
    session_id = headers.get(SESSION_HEADER, "")
    if STATELESS["on"]:
        session_project = STATELESS["verifier"].project(headers)
    else:
        session_project = SESSION_PROJECTS.get(session_id)
    header_project = headers.get(PROJECT_HEADER)
    AUDIT.append(
        {
            "tool": tool,
            "mcp_session": session_id,
            "session_project": session_project,
            "header_project": header_project,
            "has_assertion": ASSERTION_HEADER in headers,
            "authorization": headers.get("authorization"),
            "args": _RAW_ARGS.get(),
            "at": time.time(),
            # W3C trace context as received: the header, and the same key in params._meta.
            "traceparent": headers.get("traceparent"),
            "meta_traceparent": _meta_traceparent(ctx),
        }
    )
    log.info(
        "tool=%s session=%s session_project=%s header_project=%s",
        tool,
        session_id[:8],
        session_project,
        header_project,
    )
    return session_id, session_project, header_project


def _require_project(ctx: Context, tool: str) -> tuple[str, str]:
    """Audit the call and return (session project, tag text) or raise the production error."""
    session_id, project, header = _record(ctx, tool)
    if project is None:
        raise ToolError(f"Project selection required for session {session_id[:8]}")
    return project, f"project={project} header={header or 'none'}"


def list_projects(ctx: Context) -> str:
    """List the known projects. Needs no selected project."""
    _record(ctx, "list_projects")
    return "Projects: " + ", ".join(PROJECTS)


async def select_project_for_session(name: str, ctx: Context) -> str:
    """Select the project this MCP session works on."""
    session_id, _, _ = _record(ctx, "select_project_for_session")
    if SELECT_DELAY > 0:
        await anyio.sleep(SELECT_DELAY)
    if name not in PROJECTS:
        raise ToolError(f"Unknown project {name!r}; known projects: {', '.join(PROJECTS)}")
    if not STATELESS["on"]:
        SESSION_PROJECTS[session_id] = name
    return f"Selected project {name}"


def get_last_handover(ctx: Context) -> str:
    """Return the last handover written for the session's project."""
    project, tag = _require_project(ctx, "get_last_handover")
    handovers = HANDOVERS.get(project, [])
    last = handovers[-1]["summary"] if handovers else "(no handover yet)"
    return f"{tag} last_handover={last}"


def lock_context(content: str, topic: str, ctx: Context) -> str:
    """Store a piece of context under a topic of the session's project."""
    project, tag = _require_project(ctx, "lock_context")
    LOCKED.setdefault(project, {})[topic] = content
    return f"{tag} locked topic={topic}"


def explore_context_tree(ctx: Context) -> str:
    """List the topics stored for the session's project."""
    project, tag = _require_project(ctx, "explore_context_tree")
    topics = sorted(LOCKED.get(project, {}))
    return f"{tag} topics={','.join(topics) if topics else '(none)'}"


def write_handover(ctx: Context, summary: str = "") -> str:
    """Record a handover for the session's project."""
    project, tag = _require_project(ctx, "write_handover")
    entries = HANDOVERS.setdefault(project, [])
    entries.append({"summary": summary or "(empty)", "at": time.time()})
    return f"{tag} handover #{len(entries)} written"


async def wait(seconds: float, ctx: Context) -> str:
    """Take `seconds` to answer (at most 30): for tests of cancellation. Needs a project."""
    _require_project(ctx, "wait")
    try:
        await anyio.sleep(min(max(seconds, 0.0), 30.0))
    except anyio.get_cancelled_exc_class():
        _mark("wait:cancelled")
        raise
    _mark("wait:finished")
    return f"waited {seconds}s"


class Confirmation(BaseModel):
    """What confirm_lock asks the user."""

    confirm: bool


async def confirm_lock(content: str, topic: str, ctx: Context) -> str:
    """Ask the user (elicitation) before storing `content` under `topic` of the session's project."""
    project, tag = _require_project(ctx, "confirm_lock")
    answer = await ctx.elicit(message=f"Lock {topic} in {project}?", schema=Confirmation)
    confirmed = answer.action == "accept" and bool(answer.data and answer.data.confirm)
    _mark(f"confirm_lock:{topic}:{'confirmed' if confirmed else answer.action}")
    if confirmed:
        LOCKED.setdefault(project, {})[topic] = content
    return f"{tag} topic={topic} confirmed={confirmed}"


async def summarize(text: str, ctx: Context) -> str:
    """Ask the client's model (sampling) to summarize `text` for the session's project."""
    _, tag = _require_project(ctx, "summarize")
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))],
        max_tokens=50,
        related_request_id=ctx.request_id,
    )
    summary = result.content.text if isinstance(result.content, TextContent) else "(no text)"
    _mark(f"summarize:{summary}")
    return f"{tag} summary={summary}"


async def announce(text: str, ctx: Context) -> str:
    """Send a log message outside the call (on the session's GET stream): for tests of server
    notifications that belong to no request."""
    project, tag = _require_project(ctx, "announce")
    await ctx.session.send_log_message(level="info", data=f"{project}: {text}", logger="announce")
    return f"{tag} announced={text}"


def notes(topic: str, ctx: Context) -> str:
    """The content locked under `topic` in the session's project (project-scoped)."""
    project, tag = _require_project(ctx, "notes")
    return f"{tag} notes={LOCKED.get(project, {}).get(topic, '(none)')}"


def _mark(event: str) -> None:
    """An audit entry for something that is not a call (how a call ended)."""
    AUDIT.append(
        {"tool": event, "mcp_session": "", "session_project": None, "header_project": None,
         "has_assertion": False, "args": {}, "at": time.time()}
    )  # fmt: skip


async def audit(request: Request) -> Response:
    """GET: the audit log as a JSON list. DELETE: clear it."""
    if request.method == "DELETE":
        AUDIT.clear()
        return Response(status_code=204)
    return JSONResponse(AUDIT)


async def health(_request: Request) -> Response:
    """Liveness probe."""
    return PlainTextResponse("ok")


def build_server(host: str, port: int, json_response: bool, stateless: bool = False) -> FastMCP:
    """Create the FastMCP app: Streamable HTTP at /mcp (stateful unless `stateless`), plus /audit and /health."""
    # host/port/json_response/stateless_http are FastMCP constructor settings (mcp 1.30); passing the
    # host here also turns on the SDK's DNS-rebinding protection when it is a loopback address.
    server = AuditedFastMCP(
        "example-memory-backend",
        host=host,
        port=port,
        json_response=json_response,
        stateless_http=stateless,
        streamable_http_path="/mcp",
    )
    for tool in (
        list_projects,
        select_project_for_session,
        get_last_handover,
        lock_context,
        explore_context_tree,
        write_handover,
        wait,
        confirm_lock,
        summarize,
        announce,
    ):
        server.tool()(tool)
    server.resource("notes://{topic}")(notes)
    server.custom_route("/audit", methods=["GET", "DELETE"])(audit)
    server.custom_route("/health", methods=["GET"])(health)
    return server


def verifier_from(args: argparse.Namespace) -> Verifier:
    """The assertion verifier the command line asks for."""
    key = None
    if args.assertion_key_file:
        with open(args.assertion_key_file, "rb") as key_file:
            key = key_file.read().strip()
    return Verifier(key=key, jwks_url=args.jwks_url, audience=args.assertion_audience)


def main() -> None:
    parser = argparse.ArgumentParser(description="Example MCP backend (project stored per MCP session).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--json-response",
        action="store_true",
        help="answer POSTs with application/json instead of a text/event-stream",
    )
    parser.add_argument("--stateless", action="store_true", help="keep no MCP sessions; take the project from the broker")
    parser.add_argument("--assertion-key-file", help="stateless: the broker's HS256 signing key, to verify its assertion")
    parser.add_argument("--jwks-url", help="stateless: the broker's JWKS URL (EdDSA), to verify its assertion")
    parser.add_argument("--assertion-audience", default="mcp-backend")
    parser.add_argument(
        "--select-delay",
        type=float,
        default=0.0,
        help="seconds each select_project_for_session waits before answering (tests of concurrent selects)",
    )
    args = parser.parse_args()
    global SELECT_DELAY
    SELECT_DELAY = args.select_delay
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.stateless:
        STATELESS["on"] = True
        STATELESS["verifier"] = verifier_from(args)
    server = build_server(args.host, args.port, args.json_response, args.stateless)
    log.info(
        "serving http://%s:%d/mcp (json_response=%s, stateless=%s)", args.host, args.port, args.json_response, args.stateless
    )
    server.run(transport="streamable-http")


if __name__ == "__main__":
    main()
