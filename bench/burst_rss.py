"""The broker's resident memory around a burst of large request bodies: RSS before, at its peak, and
after, for BURST concurrent tools/call of about 4 MiB each (lock_context on one selected session),
through a broker in front of the example backend, in memory mode. Prints one JSON line.

Usage (from the repo root, after scripts/test has made .venv):
    .venv/bin/python bench/burst_rss.py target/debug/session-broker [broker flags...]
Env: BURST (default 50), BODY_BYTES (default 4,000,000 characters of content), ROUNDS (default 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-burst-credential"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    binary, flags = sys.argv[1], sys.argv[2:]
    burst = int(os.environ.get("BURST", "50"))
    size = int(os.environ.get("BODY_BYTES", "4000000"))
    rounds = int(os.environ.get("ROUNDS", "1"))
    backend_port, broker_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "examples/backend/server.py"), "--port", str(backend_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),  # fmt: skip
    ]
    wait_port(backend_port)
    env = {**os.environ, "BROKER_SIGNING_KEY": "bench-signing-key-0123456789abcdef0123456789", "RUST_LOG": "warn"}
    broker = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{broker_port}", "--upstream", f"http://127.0.0.1:{backend_port}/mcp",
         "--admin-listen", "off", *flags],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs.append(broker)
    url = f"http://127.0.0.1:{broker_port}/mcp"
    try:
        wait_port(broker_port)
        async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=httpx.Limits(max_connections=burst)) as http:
            auth = {**HEADERS, "Authorization": f"Bearer {TOKEN}"}
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "claude-code", "version": "1"}}}  # fmt: skip
            response = await http.post(url, headers=auth, json=init)
            session = {**auth, "Mcp-Session-Id": response.headers["mcp-session-id"]}
            await http.post(url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            select = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "select_project_for_session", "arguments": {"name": "linkedin"}}}  # fmt: skip
            await http.post(url, headers=session, json=select)
            time.sleep(1.0)
            before = rss_mib(broker.pid)
            peak = before
            statuses: dict[int, int] = {}
            started = time.monotonic()
            for round_ in range(rounds):
                content = "x" * size

                async def one(n: int) -> None:
                    body = {"jsonrpc": "2.0", "id": 100 + n, "method": "tools/call",
                            "params": {"name": "lock_context", "arguments": {"content": content, "topic": f"t{round_}-{n}"}}}  # fmt: skip
                    reply = await http.post(url, headers=session, content=json.dumps(body))
                    statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1

                async def sample() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, rss_mib(broker.pid))
                        await asyncio.sleep(0.02)

                sampler = asyncio.create_task(sample())
                await asyncio.gather(*(one(n) for n in range(burst)))
                sampler.cancel()
            took = time.monotonic() - started
            after = {}
            ended = time.monotonic()
            for wait in (1, 5, 15):
                time.sleep(max(0.0, ended + wait - time.monotonic()))
                after[wait] = round(rss_mib(broker.pid), 1)
        print(json.dumps({
            "flags": flags, "burst": burst, "body_bytes": size, "rounds": rounds, "statuses": statuses,
            "burst_seconds": round(took, 1), "rss_mib": {"before": round(before, 1), "peak": round(peak, 1), "after_s": after},
        }))  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
