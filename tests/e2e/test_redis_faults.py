"""Redis faults (issue 4): Redis stopped, paused (SIGSTOP) and restarted empty, under a broker in Redis
mode. A call that needs the store fails fast with a clear tool error and nothing runs; calls that need no
project keep working; readiness follows the store; the broker recovers by itself once Redis is back;
a call is never bound to a wrong project: a binding lost with Redis's data means "select again".
"""

from __future__ import annotations

import os
import signal
import time

import anyio
import httpx
import pytest

from e2e_helpers import (
    BROKER_NONE_SELECTED,
    assert_audit_clean,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    reconnecting_reply,
)

pytestmark = pytest.mark.anyio

STORE_DOWN = "session-broker: the session store is unavailable"
TOKEN = "e2e-redis-faults"


async def timed(coro):
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


async def ready_status(broker_base: str) -> int:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return (await http.get(f"{broker_base}/readyz")).status_code


async def wait_ready(broker_base: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await ready_status(broker_base) == 200:
            return time.monotonic() - started
        await anyio.sleep(0.02)
    raise AssertionError(f"not ready {timeout}s after Redis came back")


async def test_redis_stopped_fails_fast_then_restarted_empty_asks_again(make_stack) -> None:
    stack = make_stack(redis=True)
    url, base = stack.url, stack.broker.base
    assert_selected(await reconnecting_reply(url, TOKEN, "claude-ai", "select_project_for_session", {"name": "linkedin"}), "linkedin")
    assert_on_project(await reconnecting_reply(url, TOKEN, "claude-ai", "get_last_handover"), "linkedin")
    before = len(stack.backend.audit())

    stack.redis.process.stop()
    reply, seconds = await timed(reconnecting_reply(url, TOKEN, "claude-ai", "get_last_handover"))
    assert_broker_error(reply, STORE_DOWN)
    assert seconds < 3.0, f"a store-dependent call took {seconds:.2f}s with Redis down"
    select, _ = await timed(reconnecting_reply(url, TOKEN, "claude-ai", "select_project_for_session", {"name": "innkeeper"}))
    assert_broker_error(select, STORE_DOWN)
    listed = await reconnecting_reply(url, TOKEN, "claude-ai", "list_projects")
    assert not listed.is_error and "linkedin" in listed.text, "a call that needs no project keeps working"
    assert await ready_status(base) == 503
    during = stack.backend.audit()[before:]
    assert [e["tool"] for e in during] == ["list_projects"], f"only the exempt call may reach the backend: {during}"

    stack.redis.process.start()  # no persistence: Redis comes back empty
    recovered = await wait_ready(base, timeout=5.0)
    assert recovered < 1.0, f"readiness took {recovered:.2f}s after Redis returned"
    reply = await reconnecting_reply(url, TOKEN, "claude-ai", "get_last_handover")
    assert_broker_error(reply, BROKER_NONE_SELECTED)  # the binding died with Redis's data: ask, never guess
    assert_selected(await reconnecting_reply(url, TOKEN, "claude-ai", "select_project_for_session", {"name": "linkedin"}), "linkedin")
    assert_on_project(await reconnecting_reply(url, TOKEN, "claude-ai", "get_last_handover"), "linkedin")
    assert_audit_clean(stack.backend.audit(), {"linkedin"})


async def test_redis_paused_fails_fast_and_resumes_with_the_binding(make_stack) -> None:
    stack = make_stack(redis=True)
    url = stack.url
    assert_selected(await reconnecting_reply(url, TOKEN, "claude-code", "select_project_for_session", {"name": "atlas"}), "atlas")
    pid = stack.redis.process.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        results = []
        async with anyio.create_task_group() as group:
            async def one() -> None:
                results.append(await timed(reconnecting_reply(url, TOKEN, "claude-code", "get_last_handover")))
            for _ in range(8):  # concurrent calls: none may hang, none may queue without bound
                group.start_soon(one)
        for reply, seconds in results:
            assert_broker_error(reply, STORE_DOWN)
            assert seconds < 3.0, f"a call took {seconds:.2f}s with Redis paused"
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    while True:
        reply = await reconnecting_reply(url, TOKEN, "claude-code", "get_last_handover")
        if not reply.is_error:
            break
        assert time.monotonic() - resumed < 2.0, f"still failing after Redis resumed: {reply.text}"
        await anyio.sleep(0.05)
    assert_on_project(reply, "atlas", "first call after Redis resumed")
    assert_audit_clean(stack.backend.audit(), {"atlas"})
