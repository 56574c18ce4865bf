"""Backend faults (issue 4): a backend that answers 5xx, hangs, cuts an SSE stream, sends malformed JSON
or SSE, forgets every session, or dies. The client sees either its real answer or a clear error, never a
reply meant for another request, and the broker leaks no connections or file descriptors.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from e2e_helpers import raw_initialize, rpc_body, rpc_headers, tools_call_body

pytestmark = pytest.mark.anyio

TOKEN = "e2e-backend-faults"
FAULT_BACKEND = Path(__file__).resolve().parent / "fault_backend.py"


@pytest.fixture
def fault_stack(processes, broker_factory):
    port = free_port()
    backend = processes.spawn("fault-backend", [sys.executable, str(FAULT_BACKEND), "--port", str(port)], port)

    class Target:
        url = f"http://127.0.0.1:{port}/mcp"

    broker = broker_factory(Target, extra_args=("--exempt-tool", "probe", "--upstream-timeout", "2s"))
    return backend, f"http://127.0.0.1:{port}", broker


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def tasks_alive(http_base: str) -> float:
    for line in httpx.get(f"{http_base}/metrics", timeout=5).text.splitlines():
        if line.startswith("session_broker_runtime_tasks_alive "):
            return float(line.split()[1])
    raise AssertionError("no session_broker_runtime_tasks_alive in /metrics")


async def set_mode(http: httpx.AsyncClient, backend_base: str, mode: str) -> None:
    (await http.post(f"{backend_base}/mode", json={"mode": mode})).raise_for_status()


async def probe(http: httpx.AsyncClient, url: str, session: str, rid: int) -> httpx.Response:
    return await http.post(url, headers=rpc_headers(TOKEN, session), json=tools_call_body("probe", {}, rid))


async def test_each_backend_fault_gets_a_clear_answer_and_nothing_leaks(fault_stack) -> None:
    backend, backend_base, broker = fault_stack
    pid = broker.process.proc.pid
    async with httpx.AsyncClient(timeout=15.0) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        ok = await probe(http, broker.url, session, 1)
        # The client gets its own id back; the backend saw the id the broker gave the request on
        # its session (it echoes it), never the client's.
        # (The id's bytes are spliced into the backend's text, which keeps its own spacing.)
        assert ok.status_code == 200, ok.text
        answer = rpc_body(ok)
        assert answer["id"] == 1 and answer["result"]["content"][0]["text"].startswith("ok msb-c-"), ok.text
        # Fill the keep-alive pools (client side and upstream side) to the concurrency used below, so
        # that growth after the faults means leaked connections, not pooled ones.
        await asyncio.gather(*(probe(http, broker.url, session, 2) for _ in range(20)))
        await asyncio.sleep(0.5)
        baseline = open_fds(pid)
        tasks_before = tasks_alive(broker.base)

        for round_ in range(3):
            await set_mode(http, backend_base, "5xx")
            reply = await probe(http, broker.url, session, 10)
            assert (reply.status_code, reply.text) == (503, "overloaded"), "a backend error passes through as it is"

            await set_mode(http, backend_base, "bad-json")
            reply = await probe(http, broker.url, session, 11)
            assert (reply.status_code, reply.text) == (200, "{not json at all"), "malformed bytes are not rewritten"

            await set_mode(http, backend_base, "bad-sse")
            reply = await probe(http, broker.url, session, 12)
            assert reply.text == "data: {broken\n\n"

            await set_mode(http, backend_base, "sse-cut")
            with pytest.raises(httpx.HTTPError):
                await probe(http, broker.url, session, 13)  # the cut reaches the client as a broken body

            await set_mode(http, backend_base, "hang")
            started = time.monotonic()
            reply = await probe(http, broker.url, session, 14)
            waited = time.monotonic() - started
            assert reply.status_code == 504 and "did not answer" in reply.text, reply.text
            assert waited < 4.0, f"the upstream timeout is 2 s; the client waited {waited:.1f}s"

            await set_mode(http, backend_base, "404")
            reply = await probe(http, broker.url, session, 15)
            # The broker re-initializes once; this backend refuses even the new session's handshake,
            # so the client is told the backend is broken rather than handed a session-level 404.
            assert reply.status_code == 502 and "initialize" in reply.text, reply.text

            await set_mode(http, backend_base, "ok")
            replies = await asyncio.gather(*(probe(http, broker.url, session, 100 + i) for i in range(20)))
            for i, reply in enumerate(replies):
                assert reply.status_code == 200 and '"ok msb-c-' in reply.text, (i, reply.text)
                assert f'"id":{100 + i}' in reply.text.replace(" ", ""), "a reply meant for another request"
            # Each request carried its own id on the backend session (the backend echoes it).
            upstream_ids = {reply.text.split('"ok ')[1].split('"')[0] for reply in replies}
            assert len(upstream_ids) == 20, upstream_ids

        await asyncio.sleep(0.5)
        after = open_fds(pid)
        tasks_after = tasks_alive(broker.base)
        print(f"broker fds: baseline {baseline}, after 3 rounds of faults {after}; "
              f"tasks: {tasks_before:.0f} -> {tasks_after:.0f}")
        assert after <= baseline + 8, f"file descriptors grew from {baseline} to {after}"
        assert tasks_after <= tasks_before + 4, f"tasks grew from {tasks_before} to {tasks_after}"

        backend.stop()
        started = time.monotonic()
        reply = await probe(http, broker.url, session, 200)
        assert reply.status_code == 502 and "unreachable" in reply.text, reply.text
        assert time.monotonic() - started < 3.0
        assert broker.process.alive()
