"""Many replicas, no sticky sessions: three brokers (each with its own example backend, one shared
Redis) behind a round-robin TCP forwarder that sends every new connection to the next replica, and
clients that open a new connection for every request, so consecutive requests of one MCP session
(initialize, notifications/initialized, the GET stream, each tools/call) land on different
replicas. One replica is killed (SIGKILL) mid-run and restarted. Every call runs on its
conversation's project (audited by each backend), no binding is lost, and each work session is
finalized exactly once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation, TextContent

from conftest import free_port
from e2e_helpers import ToolReply, assert_selected
from test_finalization import WebhookReceiver, stream_entries, wait_until

pytestmark = pytest.mark.anyio

PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas", "zephyr", "linkedin")
# The idle TTL must outlast the longest stall of one conversation (a call cut by the kill waits for
# its timeout, CALL_TIMEOUT): a conversation that makes no call for longer is rightly finalized.
CALL_TIMEOUT = 4.0
ARGS = ("--idle-ttl", "10s", "--sweep-interval", "200ms", "--redeliver-after", "2s")


class RoundRobin:
    """A TCP forwarder on loopback: each accepted connection goes to the next upstream port that
    accepts one (a load balancer with no affinity that skips a dead replica)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.port = free_port()
        self.connections: Counter[int] = Counter()
        self._next = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(10), "the forwarder did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in range(len(self.ports)):
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                self.connections[port] += 1
                break
            except OSError:
                continue
        if upstream is None:
            client_writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


@asynccontextmanager
async def session_without_affinity(url: str, token: str):
    """A Python SDK session whose every request opens a new connection (no keep-alive)."""
    http = httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10.0, read=30.0),
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    async with http, streamable_http_client(url, http_client=http) as (read, write, _):
        async with ClientSession(read, write, client_info=Implementation(name="claude-ai", version="1")) as session:
            with anyio.fail_after(CALL_TIMEOUT):
                await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, args: dict) -> ToolReply:
    with anyio.fail_after(CALL_TIMEOUT):
        result = await session.call_tool(tool, args)
    return ToolReply(bool(result.isError), [c.text for c in result.content if isinstance(c, TextContent)])


async def test_three_replicas_round_robin_with_one_killed_and_restarted(
    backend_factory, broker_factory, redis_server
) -> None:
    receiver = WebhookReceiver()
    backends = [backend_factory() for _ in range(3)]
    brokers = [
        broker_factory(b, redis=redis_server, extra_args=(*ARGS, "--on-expire-webhook", receiver.url)) for b in backends
    ]
    balancer = RoundRobin([b.process.port for b in brokers])
    expected = {f"e2e-round-robin-{n}": PROJECTS[n] for n in range(6)}
    outcomes: Counter[str] = Counter()
    markers: dict[str, str] = {}
    try:
        for token, project in expected.items():
            async with session_without_affinity(balancer.url, token) as session:
                assert_selected(await call(session, "select_project_for_session", {"name": project}), project)
        stop = time.monotonic() + 10.0

        def record(token: str, project: str, reply: ToolReply | None, error: Exception | None) -> None:
            if error is not None:
                outcomes[f"transport:{type(error).__name__}"] += 1
            elif reply is not None and not reply.is_error:
                outcomes["ok" if f"project={project} header={project}" in reply.text else "wrong_project"] += 1
            elif reply is not None:
                outcomes[f"refused:{reply.text[:70]}"] += 1

        async def reconnecting(token: str, project: str) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                marker = f"{token}-{n}"
                markers[marker] = project
                reply, error = None, None
                try:
                    async with session_without_affinity(balancer.url, token) as session:
                        reply = await call(session, "lock_context", {"content": marker, "topic": "rr"})
                except Exception as exc:  # noqa: BLE001 - a call cut by the kill is counted
                    error = exc
                record(token, project, reply, error)

        async def long_lived(token: str, project: str) -> None:
            n = 0
            while time.monotonic() < stop:
                try:
                    async with session_without_affinity(balancer.url, token) as session:
                        while time.monotonic() < stop:
                            n += 1
                            marker = f"{token}-{n}"
                            markers[marker] = project
                            reply = await call(session, "lock_context", {"content": marker, "topic": "rr"})
                            record(token, project, reply, None)
                except Exception as exc:  # noqa: BLE001 - the session broke with the kill: open another
                    record(token, project, None, exc)

        def kill_and_restart() -> None:
            time.sleep(3.0)
            brokers[1].process.proc.kill()
            brokers[1].process.stop()
            time.sleep(2.0)
            brokers[1].process.start()

        async with anyio.create_task_group() as group:
            for n, (token, project) in enumerate(expected.items()):
                group.start_soon(reconnecting if n % 2 == 0 else long_lived, token, project)
            group.start_soon(anyio.to_thread.run_sync, kill_and_restart)

        lost = []
        for token, project in expected.items():
            async with session_without_affinity(balancer.url, token) as session:
                reply = await call(session, "get_last_handover", {})
            if reply.is_error or f"project={project} header={project}" not in reply.text:
                lost.append((token, reply.text[:80]))

        audit = [e for b in backends for e in b.audit() if e["tool"] == "lock_context"]
        wrong = [
            e for e in audit
            if not (e["session_project"] == e["header_project"] == markers.get(e["args"].get("content")))
        ]
        # Finalization: one event per work session (one per conversation), exactly once.
        keys = await wait_until("six finalizations", lambda: len(set(receiver.keys())) >= 6 and receiver.keys(), 40)
        await anyio.sleep(1.5)
        keys = receiver.keys()
        events = stream_entries(redis_server.url)
        report = {
            "calls": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "connections_per_replica": list(balancer.connections.values()),
            "audited_calls": len(audit),
            "wrong_project_in_audit": len(wrong),
            "lost_bindings": len(lost),
            "finalized_events": len(events),
            "webhook_deliveries": len(keys),
        }
        print("ROUND ROBIN REPORT " + json.dumps(report))
        assert outcomes["wrong_project"] == 0 and not wrong, (report, wrong[:3])
        assert not lost, (report, lost)
        assert not [k for k in outcomes if k.startswith("refused:")], report
        assert outcomes["ok"] >= 20, report
        assert all(count > 0 for count in balancer.connections.values()) and len(balancer.connections) == 3, report
        assert len(events) == 6 and len(set(events)) == 6, report
        assert sorted(keys) == sorted(events), report
        assert brokers[1].process.starts == 2 and "listening" in brokers[1].log_text()
    finally:
        balancer.close()
        receiver.close()
