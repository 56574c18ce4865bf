"""Restarts: a backend restart is invisible to a connected client (the broker re-initializes the backend
session and replays the selection), the Redis store keeps bindings and client sessions across a broker
restart, and the in-memory store forgets them cleanly (asks again, never a wrong project).
"""

from __future__ import annotations

import anyio
import pytest

from e2e_helpers import (
    BROKER_NONE_SELECTED,
    assert_audit_clean,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    call,
    mcp_session,
    project_calls,
    reconnecting_reply,
)

pytestmark = pytest.mark.anyio


async def test_backend_restart_invisible(make_stack) -> None:
    token = "e2e-token-backend-restart"
    stack = make_stack()

    async with mcp_session(stack.url, token, "claude-ai") as (session, _):
        assert_selected(await call(session, "select_project_for_session", {"name": "linkedin"}), "linkedin")
        assert_on_project(await call(session, "get_last_handover"), "linkedin", "before the backend restart")

        await anyio.to_thread.run_sync(stack.backend.restart)

        assert_on_project(await call(session, "get_last_handover"), "linkedin", "first call after the backend restart")
        assert_on_project(
            await call(session, "lock_context", {"content": "after restart", "topic": "restart"}),
            "linkedin",
            "second call after the backend restart",
        )

    audit = stack.backend.audit()  # the restarted backend's log only
    assert_audit_clean(audit, {"linkedin"})
    replays = [e for e in audit if e["tool"] == "select_project_for_session"]
    assert replays and all(e["args"] == {"name": "linkedin"} for e in replays), audit
    assert [c["tool"] for c in project_calls(audit)] == ["get_last_handover", "lock_context"], audit
    assert all(c["session_project"] == "linkedin" for c in project_calls(audit)), audit


async def test_broker_restart_keeps_binding_redis(make_stack) -> None:
    token = "e2e-token-broker-restart-redis"
    stack = make_stack(redis=True)

    assert_selected(
        await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )
    async with mcp_session(stack.url, token, "claude-ai") as (session, get_session_id):
        assert_on_project(await call(session, "get_last_handover"), "linkedin", "long-lived session before restart")
        session_id = get_session_id()

        await anyio.to_thread.run_sync(stack.broker.restart)

        reply = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover")
        assert_on_project(reply, "linkedin", "reconnecting call after the broker restart")

        assert get_session_id() == session_id
        assert_on_project(
            await call(session, "explore_context_tree"), "linkedin", "long-lived session after the broker restart"
        )

    audit = stack.backend.audit()
    assert_audit_clean(audit, {"linkedin"})
    assert [c["tool"] for c in project_calls(audit)] == [
        "get_last_handover",
        "get_last_handover",
        "explore_context_tree",
    ], audit


async def test_memory_store_until_restart(make_stack) -> None:
    token = "e2e-token-memory-store"
    stack = make_stack(redis=False)

    assert_selected(
        await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )
    for attempt in range(2):
        reply = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover")
        assert_on_project(reply, "linkedin", f"reconnect {attempt} before the broker restart")

    await anyio.to_thread.run_sync(stack.broker.restart)
    before = len(project_calls(stack.backend.audit()))

    reply = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover")
    assert_broker_error(reply, BROKER_NONE_SELECTED)

    audit = stack.backend.audit()
    assert len(project_calls(audit)) == before, "a call without a binding reached the backend"
    assert_audit_clean(audit, {"linkedin"})
