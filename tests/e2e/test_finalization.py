"""Finalization (user rule 4): a work session idle past its TTL is finalized exactly once, across any
number of broker replicas, and its actions (webhook, backend handover tool) run at least once; activity
before the deadline postpones it; a call after finalization starts over with the select guidance.
Idle TTL here is 2 s; every broker shares one real redis-server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest

from conftest import free_port
from e2e_helpers import (
    BROKER_HANDLE_REFUSED,
    BROKER_NONE_SELECTED,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    raw_initialize,
    reconnecting_reply,
    rpc_body,
    rpc_headers,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

FAST = ("--idle-ttl", "2s", "--sweep-interval", "100ms", "--redeliver-after", "2s", "--finalize-grace", "1m")
PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas", "zephyr")


class WebhookReceiver:
    """A real HTTP server recording deliveries; it can fail the first N with 500, and every event of
    the projects in `fail_projects` (a set the test may change: the receiver is then healed)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.deliveries: list[tuple[str, dict]] = []
        self.failed = 0
        self.fail_projects: set[str] = set()
        self.failed_projects: list[str] = []
        self._fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    project = json.loads(body)["work_session"]["project"]
                    if project in receiver.fail_projects:
                        receiver.failed_projects.append(project)
                        status = 500
                    elif receiver.failed < receiver._fail_first:
                        receiver.failed += 1
                        status = 500
                    else:
                        receiver.deliveries.append((self.headers.get("idempotency-key", ""), json.loads(body)))
                        status = 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.deliveries]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver_factory():
    made: list[WebhookReceiver] = []

    def make(fail_first: int = 0) -> WebhookReceiver:
        made.append(WebhookReceiver(fail_first))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


async def wait_until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.1)


def stream_entries(redis_url: str) -> list[str]:
    """Work-session ids of every entry in the broker's finalized streams (one per bucket, see
    broker/src/store/keys.rs); on a cluster, any node's port will do (`redis-cli -c` follows MOVED)."""
    cli = shutil.which("redis-cli") or pytest.fail("redis-cli is missing (it comes with redis-server)")
    port = redis_url.split("://", 1)[1].split(",")[0].rsplit(":", 1)[1].split("/")[0]
    ids = []
    for bucket in "0123456789abcdef":
        out = subprocess.run([cli, "-c", "-p", port, "--no-raw", "XRANGE", f"msb:{{b:{bucket}}}:finalized", "-", "+"],
                             capture_output=True, text=True, check=True).stdout
        lines = [line.split('"')[1] for line in out.splitlines() if '"' in line]
        ids += [lines[i + 1] for i, value in enumerate(lines[:-1]) if value == "ws"]
    return ids


def scrape(base: str) -> dict[str, float]:
    """A broker's /metrics, parsed: `name{labels}` -> value; every family must declare its TYPE."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        family = name.split("{")[0]
        assert any(family == t or family.startswith(t + "_") for t in typed), f"untyped sample {line}"
        samples[name] = float(value)
    assert text.rstrip().endswith("# EOF"), "OpenMetrics text ends with # EOF"
    return samples


async def select_as(http: httpx.AsyncClient, url: str, credential: str, project: str) -> None:
    session_id = await raw_initialize(http, url, credential, "claude-ai")
    body = tools_call_body("select_project_for_session", {"name": project})
    reply = await http.post(url, headers=rpc_headers(credential, session_id), json=body)
    assert reply.status_code == 200, reply.text
    assert not rpc_body(reply)["result"].get("isError"), reply.text


async def test_handover_tool_is_called_on_expiry_with_the_right_project(backend_factory, broker_factory, redis_server):
    backend = backend_factory()
    broker = broker_factory(backend, redis=redis_server, extra_args=(*FAST, "--on-expire-tool", "write_handover"))
    token = "e2e-finalize-handover"
    handle = assert_selected(
        await reconnecting_reply(broker.url, token, "claude-ai", "select_project_for_session", {"name": "innkeeper"}),
        "innkeeper",
    )
    reply = await reconnecting_reply(broker.url, token, "claude-ai", "lock_context", {"content": "x", "topic": "t"})
    assert_on_project(reply, "innkeeper", "work before going idle")

    handovers = await wait_until(
        "the handover tool", lambda: [e for e in backend.audit() if e["tool"] == "write_handover"], timeout=20
    )
    assert len(handovers) == 1, handovers
    assert handovers[0]["session_project"] == "innkeeper", handovers
    assert handovers[0]["header_project"] == "innkeeper", handovers
    assert handovers[0]["has_assertion"], handovers

    # After finalization the next call starts over: the model is asked to select, nothing is guessed.
    reply = await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover")
    assert_broker_error(reply, BROKER_NONE_SELECTED)
    # The handle of the finalized work session is refused, not revived.
    reply = await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover", {"work_session": handle})
    assert_broker_error(reply, BROKER_HANDLE_REFUSED, "ended")
    await anyio.sleep(2.5)
    assert len([e for e in backend.audit() if e["tool"] == "write_handover"]) == 1, "finalized twice"


@pytest.mark.parametrize("kill_one", [False, True], ids=["three-replicas", "one-killed-mid-sweep"])
async def test_three_replicas_finalize_each_work_session_exactly_once(
    backend_factory, broker_factory, redis_server, receiver_factory, kill_one: bool
):
    backend = backend_factory()
    receiver = receiver_factory()
    replicas = [
        broker_factory(backend, redis=redis_server, extra_args=(*FAST, "--on-expire-webhook", receiver.url))
        for _ in range(3)
    ]
    limit = anyio.Semaphore(12)

    async def one(n: int) -> None:
        async with limit:
            await select_as(http, replicas[n % 3].url, f"e2e-finalize-principal-{n}", PROJECTS[n % len(PROJECTS)])

    async with httpx.AsyncClient(timeout=30.0) as http:
        async with anyio.create_task_group() as group:
            for n in range(200):
                group.start_soon(one, n)

    if kill_one:
        await wait_until("the first finalization", receiver.keys, timeout=20)
        replicas[0].process.proc.kill()  # SIGKILL: no drain, no acknowledgement of what it held

    await wait_until("200 distinct webhook deliveries", lambda: len(set(receiver.keys())) >= 200, timeout=45)
    await anyio.sleep(1.0)  # anything late or duplicated would show now
    events = stream_entries(redis_server.url)
    assert len(events) == 200 and len(set(events)) == 200, f"{len(events)} events, {len(set(events))} distinct"
    keys = receiver.keys()
    assert set(keys) == set(events), "the webhook saw other work sessions than the stream"
    if not kill_one:
        assert len(keys) == 200, f"{len(keys) - 200} duplicate deliveries without any failure"
        metrics = [scrape(replica.base) for replica in replicas]
        finalized = sum(m.get("session_broker_work_sessions_finalized_total", 0) for m in metrics)
        assert finalized == 200, f"the replicas' finalized counters add up to {finalized}"
        assert all(m.get("session_broker_work_sessions_live", -1) == 0 for m in metrics), metrics
        calls = sum(v for m in metrics for k, v in m.items() if k.startswith("session_broker_requests_total{") and 'tools/call' in k)
        assert calls == 200, f"{calls} tools/call requests counted"
    bodies = [body for _, body in receiver.deliveries]
    assert all(b["type"] == "work_session.finalized" and b["work_session"]["project"] in PROJECTS for b in bodies)


async def test_webhook_failing_twice_still_gets_the_event(backend_factory, broker_factory, redis_server, receiver_factory):
    backend = backend_factory()
    receiver = receiver_factory(fail_first=2)
    broker = broker_factory(backend, redis=redis_server, extra_args=(*FAST, "--on-expire-webhook", receiver.url))
    async with httpx.AsyncClient(timeout=10.0) as http:
        await select_as(http, broker.url, "e2e-finalize-flaky-webhook", "atlas")
    keys = await wait_until("a delivery after two failures", receiver.keys, timeout=20)
    assert receiver.failed == 2
    assert len(keys) == 1 and receiver.deliveries[0][1]["work_session"]["project"] == "atlas"


async def test_activity_before_the_deadline_postpones_it(backend_factory, broker_factory, redis_server, receiver_factory):
    backend = backend_factory()
    receiver = receiver_factory()
    broker = broker_factory(backend, redis=redis_server, extra_args=(*FAST, "--on-expire-webhook", receiver.url))
    token = "e2e-finalize-busy"
    assert_selected(
        await reconnecting_reply(broker.url, token, "claude-ai", "select_project_for_session", {"name": "zephyr"}),
        "zephyr",
    )
    started = time.monotonic()
    while time.monotonic() - started < 5.0:  # 5 s of work, one call a second, on a 2 s idle TTL
        await anyio.sleep(1.0)
        assert_on_project(await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover"), "zephyr")
    assert receiver.keys() == [], "finalized while in use"
    await wait_until("finalization once idle", receiver.keys, timeout=15)
    await anyio.sleep(1.0)
    assert len(receiver.keys()) == 1
