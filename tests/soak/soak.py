"""Soak test with an audit: many principals and surfaces, every call on a fresh MCP session (as Claude's
connectors do), two broker replicas sharing Redis, Redis faults injected while it runs, and at the end
an audit of every call the backend saw against the project its conversation selected.

    .venv/bin/python tests/soak/soak.py --seconds 300          # the long run (docs/reliability.md)
    .venv/bin/python tests/soak/soak.py --seconds 20 --json    # what CI runs (tests/e2e/test_soak.py)

Loopback only, bounded by --seconds. Needs BROKER_BIN (or target/debug/session-broker), redis-server and
the example backend's venv. Exit status 0 only when no call was mixed and no binding was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from ports import free_ports  # noqa: E402  (every port at once, below the ephemeral range)

PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas", "zephyr")
SURFACES = ("claude-ai", "claude-code", "cursor-vscode")
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-06-18"}


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def body_of(response: httpx.Response) -> dict:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:])
        raise ValueError("no data in SSE reply")
    return response.json()


@dataclass
class Conversation:
    """One conversation: a principal, a surface, the project it works on, and maybe a handle."""

    number: int
    credential: str
    surface: str
    project: str
    keyed: bool  # passes its work_session handle on every call (several share its principal+surface)
    handle: str | None = None
    selected: bool = False


@dataclass
class Tally:
    calls: int = 0
    ok: int = 0
    mixed: int = 0
    lost_bindings: int = 0
    errors: Counter = field(default_factory=Counter)


async def rpc(http: httpx.AsyncClient, url: str, conv: Conversation, session: str | None, message: dict) -> httpx.Response:
    headers = dict(HEADERS, Authorization=f"Bearer {conv.credential}")
    if session:
        headers["Mcp-Session-Id"] = session
    return await http.post(url, headers=headers, json=message)


async def fresh_session(http: httpx.AsyncClient, url: str, conv: Conversation) -> str:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": conv.surface, "version": "1"}}}
    response = await rpc(http, url, conv, None, init)
    response.raise_for_status()
    session = response.headers["mcp-session-id"]
    await rpc(http, url, conv, session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session


async def call(http, url, conv, tool, args) -> tuple[bool, str]:
    session = await fresh_session(http, url, conv)
    message = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}}
    response = await rpc(http, url, conv, session, message)
    if response.status_code != 200:
        return True, f"HTTP {response.status_code}"
    result = body_of(response).get("result") or {}
    texts = [c.get("text", "") for c in result.get("content", [])]
    if conv.handle is None or tool == "select_project_for_session":
        for text in texts:
            if text.startswith("work_session: "):
                conv.handle = text.split(": ", 1)[1]
    return bool(result.get("isError")), "\n".join(texts)


def classify(text: str) -> str:
    for marker, kind in (("store is unavailable", "store_unavailable"), ("no project is selected", "no_project"),
                         ("several projects are live", "ambiguous"), ("handle was refused", "handle_refused"),
                         ("could not be restored", "replay_failed"), ("HTTP ", "http")):
        if marker in text:
            return kind
    return "other"


async def converse(conv: Conversation, urls: list[str], until: float, tally: Tally, rng: random.Random) -> None:
    async with httpx.AsyncClient(timeout=20.0) as http:
        step = 0
        while time.monotonic() < until:
            url = rng.choice(urls)  # any replica serves any work session
            try:
                if not conv.selected:
                    failed, text = await call(http, url, conv, "select_project_for_session", {"name": conv.project})
                    if failed:
                        tally.errors["select:" + classify(text)] += 1
                        await asyncio.sleep(0.2)
                    else:
                        conv.selected = True
                    continue
                step += 1
                args = {"content": f"conv-{conv.number}-call-{step}", "topic": conv.project}
                if conv.keyed:
                    args["work_session"] = conv.handle
                failed, text = await call(http, url, conv, "lock_context", args)
                tally.calls += 1
                if not failed:
                    tally.ok += 1
                    if f"project={conv.project} header={conv.project}" not in text:
                        tally.mixed += 1
                        print(f"MIXED conversation {conv.number} wanted {conv.project}: {text}", file=sys.stderr)
                    continue
                kind = classify(text)
                tally.errors[kind] += 1
                if kind in ("no_project", "handle_refused", "ambiguous"):
                    tally.lost_bindings += 1  # Redis keeps its data here: a binding must never vanish
                    print(f"LOST conversation {conv.number}: {text}", file=sys.stderr)
                    conv.selected = False
                else:
                    await asyncio.sleep(0.1)
            except (httpx.HTTPError, ValueError, KeyError) as error:
                tally.errors["client:" + type(error).__name__] += 1
                await asyncio.sleep(0.1)


async def inject_faults(redis: subprocess.Popen, restart, until: float, log: list[str], rng: random.Random) -> subprocess.Popen:
    """Every few seconds: pause Redis (SIGSTOP) for a while, or restart it (it keeps its data on disk)."""
    while time.monotonic() + 4 < until:
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        if rng.random() < 0.5:
            pause = rng.uniform(0.3, 1.5)
            os.kill(redis.pid, signal.SIGSTOP)
            log.append(f"pause {pause:.1f}s")
            await asyncio.sleep(pause)
            os.kill(redis.pid, signal.SIGCONT)
        else:
            redis = await asyncio.to_thread(restart, redis)
            log.append("restart")
    return redis


def audit(backend_url: str, conversations: dict[int, Conversation]) -> tuple[int, int]:
    """(calls audited, calls on a wrong project) from the backend's own log."""
    entries = httpx.get(f"{backend_url}/audit", timeout=30).json()
    audited = wrong = 0
    for entry in entries:
        if entry["tool"] != "lock_context":
            continue
        audited += 1
        number = int(entry["args"]["content"].split("-")[1])
        want = conversations[number].project
        if entry["header_project"] != want or entry["session_project"] != want or "work_session" in entry["args"]:
            wrong += 1
            print(f"AUDIT wrong project: {entry}", file=sys.stderr)
    return audited, wrong


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--conversations", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    broker_bin = os.environ.get("BROKER_BIN", str(REPO / "target/debug/session-broker"))
    if not Path(broker_bin).is_file():
        raise SystemExit(f"no broker binary at {broker_bin}: cargo build --bin session-broker, or set BROKER_BIN")
    work = Path(tempfile.mkdtemp(prefix="msb-soak-"))
    children: list[subprocess.Popen] = []

    def spawn(argv: list[str], port: int, name: str, env: dict | None = None) -> subprocess.Popen:
        log = open(work / f"{name}.log", "ab")
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        children.append(child)
        wait_port(port)
        return child

    redis_port, backend_port, *broker_ports = free_ports(4)
    redis_argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "yes", "--appendfsync", "always", "--dir", str(work)]

    def restart_redis(old: subprocess.Popen) -> subprocess.Popen:
        old.terminate()
        old.wait(timeout=10)
        return spawn(redis_argv, redis_port, "redis")

    try:
        redis = spawn(redis_argv, redis_port, "redis")
        spawn([sys.executable, str(REPO / "examples/backend/server.py"), "--port", str(backend_port)], backend_port, "backend")
        urls = []
        admin = ["--admin-listen", "off"]  # replicas must not share the default admin port
        for replica, port in enumerate(broker_ports):
            spawn([broker_bin, "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{backend_port}/mcp",
                   "--redis-url", f"redis://127.0.0.1:{redis_port}/0", *admin], port, f"broker{replica}",
                  env={"BROKER_SIGNING_KEY": "soak-signing-key-0123456789abcdef0123456789", "RUST_LOG": "warn"})
            urls.append(f"http://127.0.0.1:{port}/mcp")

        conversations: dict[int, Conversation] = {}
        for number in range(args.conversations):
            principal, surface = number % 8, SURFACES[number % 3]
            # Conversations 0..7 are alone on their principal+surface and go unkeyed; later ones share a
            # principal+surface with an earlier one and pass their handle, as a model following the
            # broker's guidance does.
            conversations[number] = Conversation(number, f"soak-credential-{principal}", surface,
                                                 rng.choice(PROJECTS), keyed=number >= 8)
        tally, faults = Tally(), []
        until = time.monotonic() + args.seconds
        workers = [converse(c, urls, until, tally, random.Random(args.seed + c.number)) for c in conversations.values()]
        results = await asyncio.gather(inject_faults(redis, restart_redis, until, faults, rng), *workers)
        children[0] = results[0]
        audited, wrong = audit(f"http://127.0.0.1:{backend_port}", conversations)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGCONT)
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    summary = {"seconds": args.seconds, "conversations": args.conversations, "calls": tally.calls, "ok": tally.ok,
               "mixed_in_replies": tally.mixed, "audited": audited, "wrong_project_in_audit": wrong,
               "lost_bindings": tally.lost_bindings, "errors": dict(tally.errors), "faults": Counter(f.split()[0] for f in faults)}
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
    healthy = tally.mixed == 0 and wrong == 0 and tally.lost_bindings == 0 and audited >= tally.ok > 0
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
