"""Example of a new MCP backend built for session-broker: Python SDK 2.x (``MCPServer``), stateless.

It keeps no MCP sessions and no project of its own: every project-scoped call takes its project from
the broker's verified assertion (``X-MCP-Work-Session``, see ``assertion.py``), so it serves modern
(2026-07-28, sessionless) and legacy clients alike, on any number of replicas, and a call can never
run on a project the broker did not resolve for it. This is the recommended shape for a backend
behind the broker (docs/protocol.md).

Same tools, replies and ``/audit`` log as ``server.py``, so the end-to-end tests audit it the same way;
``confirm_lock`` asks the user first (a resolver: a server request for a legacy client,
``input_required`` for a 2026-07-28 one).

Usage (needs ``mcp`` 2.x: ``.venv-modern``, see examples/backend/requirements-modern.txt):
``python modern_server.py --port 8002 (--assertion-key-file F | --jwks-url URL) [--json-response]``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Annotated, Any

import uvicorn
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from pydantic import BaseModel
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from assertion import ASSERTION_HEADER, PROJECT_HEADER, Verifier

PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas", "zephyr")
HANDOVERS: dict[str, list[str]] = {}
AUDIT: list[dict[str, Any]] = []
VERIFIER = Verifier()

log = logging.getLogger("example-modern-backend")


def _headers(ctx: Context) -> dict[str, str]:
    request = getattr(ctx.request_context, "request", None)
    if request is None:
        return {}
    return {k.lower(): v for k, v in request.headers.items()}


def _record(ctx: Context, tool: str, args: dict[str, Any]) -> str | None:
    """Audit the call; return the project the broker asserts (verified), if any."""
    headers = _headers(ctx)
    project = VERIFIER.project(headers)
    AUDIT.append(
        {
            "tool": tool,
            "mcp_session": headers.get("mcp-session-id", ""),
            "protocol_version": headers.get("mcp-protocol-version"),
            "session_project": project,
            "header_project": headers.get(PROJECT_HEADER),
            "has_assertion": ASSERTION_HEADER in headers,
            "args": args,
            "at": time.time(),
        }
    )
    return project


def _require(ctx: Context, tool: str, args: dict[str, Any]) -> tuple[str, str]:
    project = _record(ctx, tool, args)
    if project is None:
        raise ToolError("Project selection required (no verified project from session-broker)")
    return project, f"project={project} header={project}"


class Confirmation(BaseModel):
    """What confirm_lock asks the user."""

    confirm: bool


def ask_confirmation(topic: str) -> Elicit[Confirmation]:
    """confirm_lock's question (a resolver: asked once, in either era)."""
    return Elicit(f"Lock {topic}?", Confirmation)


def _mark(event: str) -> None:
    """An audit entry for something that is not a call (how a call ended)."""
    AUDIT.append({"tool": event, "mcp_session": "", "session_project": None, "header_project": None,
                  "has_assertion": False, "args": {}, "at": time.time()})  # fmt: skip


def build_server() -> MCPServer:
    server = MCPServer("example-modern-backend")

    @server.tool()
    def list_projects(ctx: Context) -> str:
        """List the known projects. Needs no selected project."""
        _record(ctx, "list_projects", {})
        return "Projects: " + ", ".join(PROJECTS)

    @server.tool()
    def select_project_for_session(name: str, ctx: Context) -> str:
        """Select the project this conversation works on (the broker remembers it)."""
        _record(ctx, "select_project_for_session", {"name": name})
        if name not in PROJECTS:
            raise ToolError(f"Unknown project {name!r}; known projects: {', '.join(PROJECTS)}")
        return f"Selected project {name}"

    @server.tool()
    def get_last_handover(ctx: Context) -> str:
        """Return the last handover written for the conversation's project."""
        project, tag = _require(ctx, "get_last_handover", {})
        entries = HANDOVERS.get(project, [])
        return f"{tag} last_handover={entries[-1] if entries else '(no handover yet)'}"

    @server.tool()
    def write_handover(ctx: Context, summary: str = "") -> str:
        """Record a handover for the conversation's project."""
        project, tag = _require(ctx, "write_handover", {"summary": summary})
        HANDOVERS.setdefault(project, []).append(summary or "(empty)")
        return f"{tag} handover #{len(HANDOVERS[project])} written"

    @server.tool()
    def confirm_lock(
        content: str,
        topic: str,
        ctx: Context,
        answer: Annotated[ElicitationResult[Confirmation], Resolve(ask_confirmation)],
    ) -> str:
        """Ask the user (elicitation; input_required on 2026-07-28) before locking `topic`."""
        project, tag = _require(ctx, "confirm_lock", {"content": content, "topic": topic})
        confirmed = isinstance(answer, AcceptedElicitation) and answer.data.confirm
        _mark(f"confirm_lock:{topic}:{'confirmed' if confirmed else 'not'}")
        return f"{tag} topic={topic} confirmed={confirmed}"

    @server.custom_route("/audit", methods=["GET", "DELETE"])
    async def audit(request: Request) -> Response:
        if request.method == "DELETE":
            AUDIT.clear()
            return Response(status_code=204)
        return JSONResponse(AUDIT)

    @server.custom_route("/health", methods=["GET"])
    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return server


def main() -> None:
    global VERIFIER
    parser = argparse.ArgumentParser(description="Example stateless MCP backend (Python SDK 2.x) behind session-broker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--assertion-key-file", help="the broker's HS256 signing key")
    parser.add_argument("--jwks-url", help="the broker's JWKS URL (EdDSA keys)")
    parser.add_argument("--assertion-audience", default="mcp-backend")
    parser.add_argument(
        "--modern-only",
        action="store_true",
        help="refuse the legacy initialize handshake (400, -32022): a backend that speaks only 2026-07-28",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    key = None
    if args.assertion_key_file:
        with open(args.assertion_key_file, "rb") as key_file:
            key = key_file.read().strip()
    VERIFIER = Verifier(key=key, jwks_url=args.jwks_url, audience=args.assertion_audience)
    if not VERIFIER.configured:
        parser.error("give --assertion-key-file or --jwks-url: the project comes from the broker's assertion")
    log.info(
        "serving http://%s:%d/mcp (stateless, json_response=%s, modern_only=%s)",
        args.host, args.port, args.json_response, args.modern_only,
    )  # fmt: skip
    app = build_server().streamable_http_app(
        streamable_http_path="/mcp", json_response=args.json_response, stateless_http=True, host=args.host
    )
    uvicorn.run(RefuseHandshake(app) if args.modern_only else app, host=args.host, port=args.port, log_level="info")


class RefuseHandshake:
    """ASGI wrapper: `initialize` gets 400 with -32022 and the supported list, as a server that speaks
    only 2026-07-28 answers it; every other request reaches the SDK's app unchanged."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            method = json.loads(body).get("method")
        except (ValueError, AttributeError):
            method = None
        if method == "initialize":
            error = {"code": -32022, "message": "Unsupported protocol version", "data": {"supported": ["2026-07-28"]}}
            payload = json.dumps({"jsonrpc": "2.0", "id": json.loads(body).get("id"), "error": error}).encode()
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


if __name__ == "__main__":
    main()
