"""Caches a client can grow (issue 17, item 3): the `initialize` cache is keyed by the client's own
`protocolVersion`; a flood of distinct versions must leave the broker's memory flat. The backend's
`initialize` result carries 64 KiB of instructions, so an unbounded cache would grow by about 64 KiB
per version (190 MiB for this flood); the bound keeps 32 of them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from e2e_helpers import initialize_body, rpc_headers

pytestmark = pytest.mark.anyio

FAULT_BACKEND = Path(__file__).resolve().parent / "fault_backend.py"
FLOOD = 3000
CONCURRENCY = 16


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def initialize_versions(http: httpx.AsyncClient, url: str, versions: list[str]) -> None:
    queue = list(versions)

    async def worker() -> None:
        while queue:
            version = queue.pop()
            body = initialize_body("flood")
            body["params"]["protocolVersion"] = version
            response = await http.post(url, headers=rpc_headers("e2e-flood"), json=body)
            assert response.status_code == 200, response.text

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def test_a_flood_of_distinct_protocol_versions_leaves_rss_flat(processes, broker_factory) -> None:
    port = free_port()
    processes.spawn("fault-backend", [sys.executable, str(FAULT_BACKEND), "--port", str(port)], port)

    class Target:
        url = f"http://127.0.0.1:{port}/mcp"

    broker = broker_factory(Target)
    pid = broker.process.proc.pid
    async with httpx.AsyncClient(timeout=30) as http:
        (await http.post(f"http://127.0.0.1:{port}/mode", json={"mode": "big-init"})).raise_for_status()
        # Warm up past the bound, so the allocator and the connection pools reach their steady state.
        await initialize_versions(http, broker.url, [f"warm-{i}" for i in range(300)])
        before = rss_kib(pid)
        await initialize_versions(http, broker.url, [f"2099-{i:06d}" for i in range(FLOOD)])
        after = rss_kib(pid)
        # A version learned before the flood ended is still answered from the cache (no backend round trip).
        body = initialize_body("after")
        body["params"]["protocolVersion"] = f"2099-{FLOOD - 1:06d}"
        cached = await http.post(broker.url, headers=rpc_headers("e2e-flood"), json=body)
        assert cached.status_code == 200 and len(cached.json()["result"]["instructions"]) == 65536
    growth_mib = (after - before) / 1024
    print(f"RSS before the flood {before / 1024:.1f} MiB, after {FLOOD} distinct versions {after / 1024:.1f} MiB (+{growth_mib:.1f} MiB)")
    assert growth_mib < 16, f"RSS grew by {growth_mib:.1f} MiB over {FLOOD} distinct protocol versions"
