"""Never the wrong project: concurrent calls with different handles on one MCP session, a select racing
with calls, keyed conversations that must be asked, the continuity window of unkeyed calls, and a
stateless backend that reads the project from the broker. Each is audited against what the example
backend actually did (its per-call audit log), on both stores.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from conftest import SIGNING_KEY
from e2e_helpers import (
    BROKER_NONE_SELECTED,
    BROKER_SEVERAL_LIVE,
    ToolReply,
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

STORES = [pytest.param(True, id="redis"), pytest.param(False, id="memory")]
SELECT = "select_project_for_session"


async def call_with_meta(session, tool: str, args: dict, meta: dict) -> ToolReply:
    with anyio.fail_after(30):
        result = await session.call_tool(tool, args, meta=meta)
    return ToolReply(bool(result.isError), [c.text for c in result.content if hasattr(c, "text")])


@pytest.mark.parametrize("threads", ["0", "1"], ids=["threads-per-cpu", "one-thread"])
@pytest.mark.parametrize("redis", STORES)
async def test_concurrent_calls_with_two_handles_on_one_mcp_session(make_stack, redis: bool, threads: str) -> None:
    """One MCP session carries two conversations' handles; 40 concurrent calls alternating them, three
    rounds: every reply and every backend call on its handle's project. With a thread per CPU and with
    everything on one thread (`--worker-threads 1`)."""
    stack = make_stack(redis=redis, broker_args=("--worker-threads", threads))
    token = "e2e-token-multiplexing-agent"
    async with mcp_session(stack.url, token, "agent-platform") as (session, _):
        handles = {
            "linkedin": assert_selected(await call(session, SELECT, {"name": "linkedin"}), "linkedin"),
            "innkeeper": assert_selected(await call(session, SELECT, {"name": "innkeeper"}), "innkeeper"),
        }
        stack.backend.clear_audit()
        replies: dict[int, tuple[str, ToolReply]] = {}

        async def one(i: int) -> None:
            project = "linkedin" if i % 2 == 0 else "innkeeper"
            reply = await call(session, "get_last_handover", {"work_session": handles[project]})
            replies[i] = (project, reply)

        for _round in range(3):
            replies.clear()
            async with anyio.create_task_group() as group:
                for i in range(40):
                    group.start_soon(one, i)
            wrong = [(p, r.text) for p, r in replies.values() if r.is_error or f"project={p} header={p}" not in r.text]
            assert not wrong, f"{len(wrong)} of 40 calls not on their handle's project: {wrong[:3]}"
    audit = project_calls(stack.backend.audit())
    assert len(audit) == 120, f"the backend ran {len(audit)} project calls, expected 120"
    assert_audit_clean(audit, allowed={"linkedin", "innkeeper"})
    # One backend session per project served all of them (opened once each, not once per call).
    sessions = {(e["mcp_session"], e["session_project"]) for e in audit}
    assert len(sessions) == 2, f"expected one backend session per project, saw {sessions}"


@pytest.mark.parametrize("redis", STORES)
async def test_a_select_racing_with_calls(make_stack, redis: bool) -> None:
    """Calls in flight on the session's project while the session selects another: each call runs on a
    project it resolved (the backend's session project equals the broker's header), and the session
    is on the selected project afterwards."""
    stack = make_stack(redis=redis)
    token = "e2e-token-select-race"
    async with mcp_session(stack.url, token, "racer") as (session, _):
        assert_selected(await call(session, SELECT, {"name": "linkedin"}), "linkedin")
        stack.backend.clear_audit()
        replies: list[ToolReply] = []
        selected: list[ToolReply] = []

        async def worker() -> None:
            replies.append(await call(session, "get_last_handover"))

        async def switch() -> None:
            await anyio.sleep(0.05)
            selected.append(await call(session, SELECT, {"name": "atlas"}))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(worker)
            group.start_soon(switch)
            for _ in range(20):
                group.start_soon(worker)
        assert_selected(selected[0], "atlas")
        for reply in replies:
            assert not reply.is_error, reply.text
            project = "linkedin" if "project=linkedin" in reply.text else "atlas"
            assert_on_project(reply, project, "racing call")
        after = await call(session, "get_last_handover")
        assert_on_project(after, "atlas", "after the select")
    assert_audit_clean(stack.backend.audit(), allowed={"linkedin", "atlas"})


@pytest.mark.parametrize("redis", STORES)
async def test_a_new_keyed_conversation_is_asked(make_stack, redis: bool) -> None:
    """conv-old selects linkedin; conv-new on the same credential and UI (even on the same MCP session)
    is asked, with the recent projects listed; conv-old keeps its own."""
    stack = make_stack(redis=redis)
    token = "e2e-token-chatgpt-user"
    old = {"openai/session": "conv-old"}
    new = {"openai/session": "conv-new"}
    async with mcp_session(stack.url, token, "openai-mcp") as (session, _):
        assert_selected(await call_with_meta(session, SELECT, {"name": "linkedin"}, old), "linkedin")
        assert_on_project(await call_with_meta(session, "get_last_handover", {}, old), "linkedin")
        asked = await call_with_meta(session, "get_last_handover", {}, new)
        assert_broker_error(asked, BROKER_NONE_SELECTED, "Recent projects: linkedin")
        otel = {"gen_ai.conversation.id": "otel-conversation-1"}
        assert_broker_error(await call_with_meta(session, "get_last_handover", {}, otel), BROKER_NONE_SELECTED)
        assert_selected(await call_with_meta(session, SELECT, {"name": "zephyr"}, new), "zephyr")
        assert_on_project(await call_with_meta(session, "get_last_handover", {}, new), "zephyr")
        assert_on_project(await call_with_meta(session, "get_last_handover", {}, old), "linkedin")
    # A fresh connection of the old conversation still finds its project by its key.
    async with mcp_session(stack.url, token, "openai-mcp") as (session, _):
        assert_on_project(await call_with_meta(session, "get_last_handover", {}, old), "linkedin")
    assert_audit_clean(stack.backend.audit(), allowed={"linkedin", "zephyr"})


@pytest.mark.parametrize("redis", STORES)
async def test_unkeyed_calls_inherit_only_within_the_window(make_stack, redis: bool) -> None:
    """Connector traffic (a fresh initialize per call, no key): inside the continuity window the seed's
    replay works; past it the call is asked again, and the handle still works."""
    stack = make_stack(redis=redis, broker_args=("--surface-window", "3s"))
    token = "e2e-token-connector-window"
    handle = assert_selected(
        await reconnecting_reply(stack.url, token, "claude-ai", SELECT, {"name": "dementia"}), "dementia"
    )
    for _ in range(2):
        assert_on_project(await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover"), "dementia")
    time.sleep(3.5)
    late = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover")
    assert_broker_error(late, BROKER_NONE_SELECTED, "dementia")
    with_handle = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover", {"work_session": handle})
    assert_on_project(with_handle, "dementia", "with the handle")
    # The handle's call refreshed the work session: unkeyed calls continue it again.
    assert_on_project(await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover"), "dementia")
    assert_audit_clean(stack.backend.audit(), allowed={"dementia"})


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_a_stateless_backend_gets_the_project_from_the_broker(make_stack, tmp_path: Path, json_response: bool) -> None:
    """A backend with no MCP sessions: select, reconnect, the next call sees the project in X-MCP-Project
    (checked by the backend against the broker's verified assertion); another surface is guarded."""
    key_file = tmp_path / "assertion.key"
    key_file.write_text(SIGNING_KEY)
    stack = make_stack(
        json_response=json_response,
        redis=True,
        backend_args=("--stateless", "--assertion-key-file", str(key_file)),
    )
    token = "e2e-token-stateless-backend"
    async with mcp_session(stack.url, token, "claude-ai") as (session, get_session_id):
        assert get_session_id(), "the broker minted a session id although the backend has none"
        assert_selected(await call(session, SELECT, {"name": "innkeeper"}), "innkeeper")
        assert_on_project(await call(session, "get_last_handover"), "innkeeper", "same session")
    reply = await reconnecting_reply(stack.url, token, "claude-ai", "lock_context", {"topic": "t", "content": "c"})
    assert_on_project(reply, "innkeeper", "after a reconnect")
    other_ui = await reconnecting_reply(stack.url, token, "claude-code", "get_last_handover")
    assert_broker_error(other_ui, BROKER_NONE_SELECTED)
    # Two live projects on one surface: ambiguous, never a guess.
    assert_selected(await reconnecting_reply(stack.url, token, "claude-ai", SELECT, {"name": "atlas"}), "atlas")
    ambiguous = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover")
    assert_broker_error(ambiguous, BROKER_SEVERAL_LIVE)
    audit = stack.backend.audit()
    assert_audit_clean(audit, allowed={"innkeeper", "atlas"})
    assert all(e["session_project"] for e in project_calls(audit)), "the backend could not verify an assertion"


async def test_a_select_the_broker_cannot_bind_is_not_run(make_stack) -> None:
    """A project name the broker would not bind as sent never reaches the backend; the binding stays."""
    stack = make_stack(redis=False)
    token = "e2e-token-bad-select"
    async with mcp_session(stack.url, token, "claude-ai") as (session, _):
        assert_selected(await call(session, SELECT, {"name": "atlas"}), "atlas")
        for name in ("beta\x1f", " zephyr", 7):
            reply = await call(session, SELECT, {"name": name})
            assert_broker_error(reply, "session-broker: select_project_for_session was not run")
        assert_on_project(await call(session, "get_last_handover"), "atlas", "after refused selects")
    selects = [e for e in stack.backend.audit() if e["tool"] == SELECT]
    assert [e["args"]["name"] for e in selects] == ["atlas"], selects
