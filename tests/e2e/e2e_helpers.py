"""Client-side helpers for the end-to-end tests: Python SDK (mcp 1.x) sessions, reconnecting calls
(a fresh ``initialize`` per call, like Claude's remote connectors), the TypeScript SDK driver
(``ts/client.mjs``), raw HTTP requests, and assertions on the example backend's audit log.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LATEST_PROTOCOL_VERSION, Implementation, TextContent

TS_DIR = Path(__file__).resolve().parent / "ts"
CALL_TIMEOUT = 30.0
PROJECT_TOOLS = frozenset({"get_last_handover", "lock_context", "explore_context_tree", "write_handover"})
HANDLE_RE = re.compile(r"^work_session: (\S+)$")
BROKER_NONE_SELECTED = "session-broker: no project is selected"
BROKER_SEVERAL_LIVE = "session-broker: several projects are live"
BROKER_HANDLE_REFUSED = "session-broker: the work_session handle was refused"


@dataclass
class ToolReply:
    is_error: bool
    texts: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    @property
    def handle(self) -> str | None:
        """The ``work_session: <handle>`` value the broker appends to a successful select reply."""
        for text in self.texts:
            match = HANDLE_RE.match(text.strip())
            if match:
                return match.group(1)
        return None


def _headers(token: str | None, extra_headers: dict[str, str] | None) -> dict[str, str]:
    headers = dict(extra_headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@asynccontextmanager
async def mcp_session(
    url: str,
    token: str | None,
    client_name: str,
    extra_headers: dict[str, str] | None = None,
    terminate_on_close: bool = False,
) -> AsyncIterator[tuple[ClientSession, Callable[[], str | None]]]:
    """An initialized Python SDK ClientSession; yields (session, get_session_id)."""
    http = httpx.AsyncClient(headers=_headers(token, extra_headers), timeout=httpx.Timeout(30.0, read=120.0))
    async with http:
        async with streamable_http_client(url, http_client=http, terminate_on_close=terminate_on_close) as (
            read,
            write,
            get_session_id,
        ):
            info = Implementation(name=client_name, version="1.0")
            async with ClientSession(read, write, client_info=info) as session:
                with anyio.fail_after(CALL_TIMEOUT):
                    await session.initialize()
                yield session, get_session_id


async def call(session: ClientSession, tool: str, args: dict[str, Any] | None = None) -> ToolReply:
    """One tools/call on an open session; protocol errors raise."""
    with anyio.fail_after(CALL_TIMEOUT):
        result = await session.call_tool(tool, args or {})
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    return ToolReply(bool(result.isError), texts)


async def reconnecting_reply(
    url: str,
    token: str | None,
    client_name: str,
    tool: str,
    args: dict[str, Any] | None = None,
    extra_headers: dict[str, str] | None = None,
    terminate_on_close: bool = False,
) -> ToolReply:
    """Open a fresh client (fresh initialize), make one call, drop the client."""
    async with mcp_session(url, token, client_name, extra_headers, terminate_on_close) as (session, _):
        return await call(session, tool, args)


async def reconnecting_call(
    url: str,
    token: str | None,
    client_name: str,
    tool: str,
    args: dict[str, Any] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[bool, str]:
    """reconnecting_reply() as (is_error, all text items joined by newlines)."""
    reply = await reconnecting_reply(url, token, client_name, tool, args, extra_headers)
    return reply.is_error, reply.text


def assert_on_project(reply: ToolReply, project: str, what: str = "call") -> None:
    """A project-scoped reply from the backend, on `project`, with the broker's header set to it."""
    assert not reply.is_error, f"{what}: expected success on {project}, got error: {reply.text!r}"
    tag = f"project={project} header={project}"
    assert tag in reply.text, f"{what}: expected {tag!r} in reply, got {reply.text!r}"


def assert_selected(reply: ToolReply, project: str) -> str:
    """A successful select reply through the broker; returns its work_session handle."""
    assert not reply.is_error, f"select {project} failed: {reply.text!r}"
    assert f"Selected project {project}" in reply.text, reply.text
    handle = reply.handle
    assert handle, f"select reply has no 'work_session: <handle>' text item: {reply.texts!r}"
    return handle


def assert_broker_error(reply: ToolReply, prefix: str, *must_contain: str) -> None:
    """A broker-generated tool error: isError and a single text item starting with `prefix`."""
    assert reply.is_error, f"expected a broker error starting {prefix!r}, got success: {reply.text!r}"
    assert len(reply.texts) == 1, f"expected one text item, got {reply.texts!r}"
    assert reply.texts[0].startswith(prefix), f"expected {prefix!r}..., got {reply.texts[0]!r}"
    for needle in must_contain:
        assert needle in reply.texts[0], f"expected {needle!r} in {reply.texts[0]!r}"


# ------------------------------------------------------------------------------------ audit log


def project_calls(audit: Iterable[dict]) -> list[dict]:
    return [entry for entry in audit if entry["tool"] in PROJECT_TOOLS]


def assert_audit_clean(audit: list[dict], allowed: Iterable[str]) -> None:
    """No backend call ever ran on a project outside `allowed`; project-scoped calls that reached the
    backend carried the broker's headers, the header matched the backend session's project, and no
    call's arguments still contained the broker's work_session argument."""
    allowed = set(allowed)
    for entry in audit:
        assert "work_session" not in entry["args"], f"work_session argument reached the backend: {entry}"
        for key in ("header_project", "session_project"):
            value = entry[key]
            assert value is None or value in allowed, f"backend saw {key}={value!r} (allowed {allowed}): {entry}"
    for entry in project_calls(audit):
        assert entry["header_project"] is not None, f"project call reached the backend without X-MCP-Project: {entry}"
        assert entry["has_assertion"], f"project call reached the backend without X-MCP-Work-Session: {entry}"
        assert entry["session_project"] == entry["header_project"], f"backend session project != header: {entry}"


# ----------------------------------------------------------------------------- TypeScript client


def run_ts_client(scenario: dict[str, Any], timeout: float = 90.0, script: str = "client.mjs") -> list[dict[str, Any]]:
    """Run ts/client.mjs (SDK v1) or ts/client-v2.mjs (SDK v2) with `scenario`; return its JSON lines
    (one per step)."""
    node = shutil.which("node")
    assert node, "node is not installed"
    package = "sdk" if script == "client.mjs" else "client"
    assert (TS_DIR / "node_modules" / "@modelcontextprotocol" / package).is_dir(), (
        f"TypeScript SDK not installed: run 'npm ci' in {TS_DIR} (scripts/test does it)"
    )
    proc = subprocess.run(
        [node, str(TS_DIR / script)],
        input=json.dumps(scenario),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=TS_DIR,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(scenario["steps"]), f"expected one line per step, got:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return lines


async def run_ts_client_async(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(run_ts_client, scenario)


async def run_ts_v2_client(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """ts/client-v2.mjs (@modelcontextprotocol/client 2.x), mode "auto" or "legacy" in the scenario."""
    return await anyio.to_thread.run_sync(lambda: run_ts_client(scenario, script="client-v2.mjs"))


def ts_v2_reply(line: dict[str, Any]) -> ToolReply:
    assert "error" not in line, f"TypeScript v2 client step failed: {line['error']}"
    return ToolReply(bool(line["isError"]), list(line["texts"]))


async def run_modern_client(scenario: dict[str, Any], timeout: float = 90.0) -> list[dict[str, Any]]:
    """Run modern_client.py (the Python SDK 2.x ``mcp.Client``) under .venv-modern with `scenario`."""
    from conftest import modern_python

    script = Path(__file__).resolve().parent / "modern_client.py"
    with anyio.fail_after(timeout):
        done = await anyio.run_process([modern_python(), str(script)], input=json.dumps(scenario).encode(), check=False)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    assert done.returncode == 0 and len(lines) == len(scenario["steps"]), (
        f"modern client exited {done.returncode} with {len(lines)} of {len(scenario['steps'])} lines:\n"
        f"{done.stdout.decode()}\n{done.stderr.decode()[-4000:]}"
    )
    return lines


def modern_reply(line: dict[str, Any]) -> ToolReply:
    assert "error" not in line, f"modern client step failed: {line['error']}"
    return ToolReply(bool(line["is_error"]), list(line["texts"]))


def ts_reply(line: dict[str, Any]) -> ToolReply:
    assert "error" not in line, f"TypeScript client step failed: {line}"
    return ToolReply(bool(line["isError"]), list(line["texts"]))


# ------------------------------------------------------------------------------------- raw HTTP


def rpc_headers(token: str | None, session_id: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": LATEST_PROTOCOL_VERSION,
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    headers.update(extra)
    return headers


def rpc_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a reply, whether application/json or a text/event-stream."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:].strip())
        raise AssertionError(f"no data frame in SSE reply: {response.text!r}")
    return response.json()


def initialize_body(client_name: str, request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": client_name, "version": "1.0"},
        },
    }


async def raw_initialize(http: httpx.AsyncClient, url: str, token: str | None, client_name: str) -> str:
    """initialize + notifications/initialized by hand; returns the Mcp-Session-Id clients see."""
    response = await http.post(url, headers=rpc_headers(token), json=initialize_body(client_name))
    assert response.status_code == 200, f"initialize: {response.status_code} {response.text}"
    session_id = response.headers.get("mcp-session-id")
    assert session_id, f"initialize reply without Mcp-Session-Id: {dict(response.headers)}"
    assert "result" in rpc_body(response), response.text
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = await http.post(url, headers=rpc_headers(token, session_id), json=note)
    assert response.status_code == 202, f"notifications/initialized: {response.status_code} {response.text}"
    return session_id


def tools_call_body(tool: str, args: dict[str, Any], request_id: int = 2) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": args}}


async def raw_call(
    http: httpx.AsyncClient,
    url: str,
    token: str | None,
    session: str,
    tool: str,
    args: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    meta: dict[str, Any] | None = None,
) -> ToolReply:
    """One tools/call by hand on `session` (extra HTTP `headers`, `params._meta`); expects HTTP 200."""
    body = tools_call_body(tool, args or {})
    if meta is not None:
        body["params"]["_meta"] = meta
    response = await http.post(url, headers=rpc_headers(token, session, **(headers or {})), json=body)
    assert response.status_code == 200, f"{tool}: {response.status_code} {response.text}"
    result = rpc_body(response)["result"]
    return ToolReply(bool(result.get("isError")), [item.get("text", "") for item in result["content"]])
