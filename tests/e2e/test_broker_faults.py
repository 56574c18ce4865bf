"""Broker faults: a broker told to stop (SIGTERM) drains in-flight calls, refuses new connections and
exits by itself within --drain-timeout, even with an SSE stream that never ends; a replica killed
outright (SIGKILL) mid-burst costs its in-flight calls a clear transport error, never a wrong answer,
and another replica sharing the Redis store carries on the same work session and MCP session.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time

import anyio
import httpx
import pytest

from conftest import free_port
from e2e_helpers import (
    ToolReply,
    assert_audit_clean,
    assert_on_project,
    assert_selected,
    raw_initialize,
    reconnecting_reply,
    rpc_body,
    rpc_headers,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-broker-faults"
SLOW_SECONDS = 1.5

# A minimal Streamable HTTP backend whose tool `slow` answers (SSE) after arguments.delay seconds.
SLOW_BACKEND = r"""
import json, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def reply(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for name, value in extra: self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        msg = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                      "serverInfo": {"name": "slow", "version": "1"}}
            body = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
            return self.reply(200, body, extra=[("mcp-session-id", uuid.uuid4().hex)])
        if rid is None: return self.reply(202, b"")
        result = {}
        if method == "tools/call":
            delay = float(params.get("arguments", {}).get("delay", 0))
            time.sleep(delay)
            result = {"content": [{"type": "text", "text": f"slow {rid} after {delay}"}]}
        event = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result})
        self.reply(200, f"event: message\ndata: {event}\n\n".encode(), "text/event-stream")
    def do_GET(self): self.reply(405, b"")
    def do_DELETE(self): self.reply(200, b"")

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
server.serve_forever()
"""


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:  # e.g. a connect timeout: not served, but not refused either
        return False


async def wait_exit(proc, timeout: float) -> tuple[int | None, float]:
    """(exit code or None if still running after `timeout`, seconds waited)."""
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < timeout:
        await anyio.sleep(0.02)
    return proc.poll(), time.monotonic() - started


def tool_reply(response: httpx.Response, rid: int) -> ToolReply:
    """A raw tools/call reply: 200, this request's id, as a ToolReply."""
    assert response.status_code == 200, f"request {rid}: {response.status_code} {response.text}"
    message = rpc_body(response)
    assert message.get("id") == rid, f"request {rid} got a reply meant for {message.get('id')}: {message}"
    assert "result" in message, f"request {rid}: {message}"
    result = message["result"]
    return ToolReply(bool(result.get("isError")), [c["text"] for c in result["content"] if c.get("type") == "text"])


async def post_call(http: httpx.AsyncClient, url: str, session: str, tool: str, args: dict, rid: int) -> ToolReply:
    return tool_reply(await http.post(url, headers=rpc_headers(TOKEN, session), json=tools_call_body(tool, args, rid)), rid)


async def test_sigterm_drains_in_flight_requests(processes, broker_factory) -> None:
    port = free_port()
    processes.spawn("slow-backend", [sys.executable, "-c", SLOW_BACKEND, str(port)], port)

    class Target:
        url = f"http://127.0.0.1:{port}/mcp"

    broker = broker_factory(Target, extra_args=("--exempt-tool", "slow", "--drain-timeout", "5s"))
    proc = broker.process.proc
    replies: dict[int, tuple[httpx.Response, float]] = {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        warm = await post_call(http, broker.url, session, "slow", {"delay": 0}, 1)
        # The backend session exists before the timing starts; the backend saw the broker's id for the
        # request (it echoes it), the client gets its own back.
        assert re.fullmatch(r"slow msb-c-[0-9a-f]{24} after 0\.0", warm.text), warm.texts

        async def one(rid: int) -> None:
            body = tools_call_body("slow", {"delay": SLOW_SECONDS}, rid)
            response = await http.post(broker.url, headers=rpc_headers(TOKEN, session), json=body)
            replies[rid] = (response, time.monotonic())

        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                for rid in range(10, 15):
                    group.start_soon(one, rid)
                await anyio.sleep(0.3)
                assert not replies, "the slow calls answered before the signal"
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                refused: tuple[float, int, bool] | None = None  # (seconds after SIGTERM, calls pending, alive)
                while refused is None and time.monotonic() - signalled < 1.0:
                    if connection_refused(broker.process.port):
                        refused = (time.monotonic() - signalled, 5 - len(replies), proc.poll() is None)
                    await anyio.sleep(0.02)
        code, _ = await wait_exit(proc, 5 + 2 - (time.monotonic() - signalled))
        waited = time.monotonic() - signalled

    for rid in range(10, 15):
        response, at = replies[rid]
        reply = tool_reply(response, rid)
        assert not reply.is_error and re.fullmatch(rf"slow msb-c-[0-9a-f]{{24}} after {SLOW_SECONDS}", reply.text), reply.texts
    last = max(at for _, at in replies.values()) - signalled
    seen = "never" if refused is None else f"+{refused[0]:.3f}s ({refused[1]} calls pending, alive={refused[2]})"
    print(f"SIGTERM +{last:.2f}s: last reply; +{waited:.2f}s: exit {code}; new connections refused: {seen}")
    assert code == 0, f"the broker did not exit cleanly within 7 s of SIGTERM (status {code}, {waited:.2f}s)"
    assert "draining" in broker.log_text()
    # Refused, not accepted into a backlog nobody serves: checked while the drain was still under way.
    assert refused is not None, "a new connection was still accepted 1 s after SIGTERM (listening socket left open)"
    assert refused[1] and refused[2], f"connections refused only once the drain was over: {refused}"


async def test_sigterm_bounds_open_sse_streams(backend_factory, broker_factory) -> None:
    backend = backend_factory()
    broker = broker_factory(backend, extra_args=("--drain-timeout", "2s"))
    proc = broker.process.proc
    ended: list[tuple[str, float]] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=30.0)) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        headers = rpc_headers(TOKEN, session, Accept="text/event-stream")
        del headers["Content-Type"]
        async with http.stream("GET", broker.url, headers=headers) as stream:
            assert stream.status_code == 200, stream.status_code
            assert stream.headers["content-type"].startswith("text/event-stream"), stream.headers

            async def read_to_end() -> None:
                try:
                    async for _ in stream.aiter_raw():
                        pass
                    outcome = "closed"
                except httpx.TransportError as error:  # a cut stream is a clear client-side error too
                    outcome = repr(error)
                ended.append((outcome, time.monotonic()))

            with anyio.fail_after(2 + 3):
                async with anyio.create_task_group() as group:
                    group.start_soon(read_to_end)
                    await anyio.sleep(0.3)
                    assert not ended, f"the GET stream ended by itself: {ended}"
                    proc.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                    code, waited = await wait_exit(proc, 2 + 2)
    outcome, at = ended[0]
    print(f"stream ended ({outcome}) {at - signalled:.2f}s after SIGTERM; broker exit {code} at {waited:.2f}s")
    assert code == 0, f"the broker did not exit cleanly within 4 s of SIGTERM with an open stream (status {code})"
    assert at - signalled < 2 + 2.5


async def raw_reconnecting_call(url: str, tool: str, rid: int) -> ToolReply:
    """A fresh client (connection pool, initialize) for one tools/call, like a remote connector."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        session = await raw_initialize(http, url, TOKEN, "claude-ai")
        return await post_call(http, url, session, tool, {}, rid)


async def test_replica_killed_mid_request_another_serves_the_work_session(redis_server, backend_factory, broker_factory):
    backend = backend_factory()
    replica_a = broker_factory(backend, redis=redis_server)
    replica_b = broker_factory(backend, redis=redis_server)
    select = await reconnecting_reply(replica_a.url, TOKEN, "claude-ai", "select_project_for_session", {"name": "linkedin"})
    assert_selected(select, "linkedin")

    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as long_lived:
        session = await raw_initialize(long_lived, replica_a.url, TOKEN, "claude-ai")
        reply = await post_call(long_lived, replica_a.url, session, "get_last_handover", {}, 3)
        assert_on_project(reply, "linkedin", "long-lived session on replica A")

        outcomes: list[ToolReply | BaseException] = []
        state = {"in_flight": 0, "next_id": 100, "at_kill": -1}

        async def worker() -> None:
            while True:
                rid, state["next_id"] = state["next_id"], state["next_id"] + 1
                state["in_flight"] += 1
                try:
                    outcomes.append(await raw_reconnecting_call(replica_a.url, "get_last_handover", rid))
                except httpx.TransportError as error:
                    outcomes.append(error)
                    return
                finally:
                    state["in_flight"] -= 1

        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(worker)
                while not any(isinstance(o, ToolReply) for o in outcomes):
                    await anyio.sleep(0.01)
                await anyio.sleep(0.2)
                state["at_kill"] = state["in_flight"]
                replica_a.process.proc.kill()
        await anyio.to_thread.run_sync(lambda: replica_a.process.proc.wait(timeout=5))

        replies = [o for o in outcomes if isinstance(o, ToolReply)]
        errors = [o for o in outcomes if not isinstance(o, ToolReply)]
        kinds = sorted({type(e).__name__ for e in errors})
        print(f"burst on A: {len(replies)} answered, {state['at_kill']} in flight at SIGKILL, errors: {kinds}")
        assert state["at_kill"] > 0, "no call was in flight when replica A was killed"
        assert len(errors) == 8, f"each worker ends on a transport error: {errors}"
        for reply in replies:
            assert_on_project(reply, "linkedin", "a call answered by replica A before it died")

        # The same conversation, reconnecting per call, now through replica B.
        lock = {"content": "after kill", "topic": "b"}
        for tool, args in (("get_last_handover", {}), ("lock_context", lock), ("explore_context_tree", {})):
            reply = await reconnecting_reply(replica_b.url, TOKEN, "claude-ai", tool, args)
            assert_on_project(reply, "linkedin", f"{tool} through replica B")
        # The long-lived MCP session created through A, its requests now sent to B.
        for rid in (4, 5):
            reply = await post_call(long_lived, replica_b.url, session, "explore_context_tree", {}, rid)
            assert_on_project(reply, "linkedin", "long-lived session from A on replica B")
            assert "topics=b" in reply.text, reply.text

    assert_audit_clean(backend.audit(), {"linkedin"})
