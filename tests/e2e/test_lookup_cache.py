"""The lookup cache (issue 19) from outside: a steady call's lookup is answered from the replica's
memory, with no Redis round trip, and never serves what Redis no longer holds.

- Two replicas on one Redis, one MCP session used on both (raw HTTP, so each request goes exactly
  where the test sends it): a select on one replica is seen by the very next call on the other,
  forty times in a row, alternating, each time after the reader had the old binding cached. Every
  backend's audit shows only the project selected at the time.
- Steady calls really skip Redis: 40 calls make at most a handful of script calls
  (`INFO commandstats`).
- Redis stopped: a cached call fails fast like any other once the replica notices; restarted empty: "select again", never the
  cached project.
"""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import pytest

from e2e_helpers import (
    BROKER_NONE_SELECTED,
    ToolReply,
    assert_audit_clean,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    raw_call,
    raw_initialize,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-lookup-cache"
PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas")
STORE_DOWN = "session-broker: the session store is unavailable"


async def call(http: httpx.AsyncClient, url: str, session: str, tool: str, args: dict | None = None) -> ToolReply:
    return await raw_call(http, url, TOKEN, session, tool, args)


def script_calls(port: int) -> int:
    """EVALSHA + EVAL calls Redis has served."""
    stats = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, timeout=10).stdout
    return sum(int(n) for n in re.findall(r"cmdstat_eval(?:sha)?:calls=(\d+)", stats))


async def test_a_select_on_one_replica_is_seen_by_the_next_call_on_another(redis_server, backend_factory, broker_factory) -> None:
    backends = [backend_factory(), backend_factory()]
    a, b = (broker_factory(backend, redis=redis_server) for backend in backends)
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await raw_initialize(http, a.url, TOKEN, "claude-code")
        assert_selected(await call(http, a.url, session, "select_project_for_session", {"name": "linkedin"}), "linkedin")
        for broker in (a, b):
            for _ in range(2):  # the second answered from the cache
                assert_on_project(await call(http, broker.url, session, "get_last_handover"), "linkedin")

        for round_ in range(40):
            project = PROJECTS[round_ % len(PROJECTS)]
            writer, reader = (a, b) if round_ % 2 == 0 else (b, a)
            assert_on_project(await call(http, reader.url, session, "get_last_handover"), PROJECTS[(round_ - 1) % len(PROJECTS)] if round_ else "linkedin", f"round {round_}: before")
            assert_selected(await call(http, writer.url, session, "select_project_for_session", {"name": project}), project)
            assert_on_project(await call(http, reader.url, session, "get_last_handover"), project, f"round {round_}: the other replica's next call")
            assert_on_project(await call(http, writer.url, session, "get_last_handover"), project, f"round {round_}: the selecting replica's next call")
    for backend in backends:
        assert_audit_clean(backend.audit(), set(PROJECTS))


async def test_steady_calls_skip_redis(redis_server, backend_factory, broker_factory) -> None:
    broker = broker_factory(backend_factory(), redis=redis_server)
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        assert_selected(await call(http, broker.url, session, "select_project_for_session", {"name": "atlas"}), "atlas")
        assert_on_project(await call(http, broker.url, session, "get_last_handover"), "atlas")
        before = script_calls(redis_server.process.port)
        for _ in range(40):
            assert_on_project(await call(http, broker.url, session, "get_last_handover"), "atlas")
        scripts = script_calls(redis_server.process.port) - before
    # One refresh per interval (5 s) and at most one re-read per interval: a handful, not 40.
    assert scripts <= 4, f"40 steady calls ran {scripts} Redis scripts"


async def test_redis_restarted_empty_never_serves_the_cached_project(make_stack) -> None:
    stack = make_stack(redis=True)
    url = stack.url
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await raw_initialize(http, url, TOKEN, "claude-code")
        assert_selected(await call(http, url, session, "select_project_for_session", {"name": "dementia"}), "dementia")
        for _ in range(3):
            assert_on_project(await call(http, url, session, "get_last_handover"), "dementia")
        stack.redis.process.stop()
        # The binding Redis held when it died may still be served until the replica notices (its
        # feed's connection closed, or at most the 1 s lease); then calls fail fast.
        stopped = time.monotonic()
        while not (reply := await call(http, url, session, "get_last_handover")).is_error:
            assert_on_project(reply, "dementia", "a call while Redis is going down")
            assert time.monotonic() - stopped < 1.5, "still served from the cache 1.5 s after Redis stopped"
        assert_broker_error(reply, STORE_DOWN)
        stack.redis.process.start()  # no persistence: Redis comes back empty
        for _ in range(100):
            reply = await call(http, url, session, "get_last_handover")
            if not reply.text.startswith(STORE_DOWN):
                break
        assert_broker_error(reply, BROKER_NONE_SELECTED)
        assert_selected(await call(http, url, session, "select_project_for_session", {"name": "atlas"}), "atlas")
        assert_on_project(await call(http, url, session, "get_last_handover"), "atlas")
    assert_audit_clean(stack.backend.audit(), {"dementia", "atlas"})
