"""The production log, replayed: a client that re-initializes before every tool call keeps its project.

Without the broker the example backend loses the selection at every new MCP session ("Project
selection required"); through the broker every call after the select runs on the selected project.
Driven by the Python SDK client (both backend reply modes) and by the TypeScript SDK client.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from e2e_helpers import (
    assert_audit_clean,
    assert_on_project,
    assert_selected,
    mcp_session,
    project_calls,
    raw_initialize,
    reconnecting_reply,
    rpc_headers,
    run_ts_client_async,
    tools_call_body,
    ts_reply,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-token-production-log"


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_production_log_replayed(make_stack, json_response: bool) -> None:
    stack = make_stack(json_response=json_response)

    listing = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "list_projects")
    assert not listing.is_error, listing.text
    assert "linkedin" in listing.text

    select = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "select_project_for_session", {"name": "linkedin"})
    assert_selected(select, "linkedin")

    handover = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "get_last_handover")
    assert_on_project(handover, "linkedin", "get_last_handover after re-initialize")

    tree = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "explore_context_tree")
    assert_on_project(tree, "linkedin", "explore_context_tree after re-initialize")

    audit = stack.backend.audit()
    assert_audit_clean(audit, {"linkedin"})
    calls = project_calls(audit)
    assert [c["tool"] for c in calls] == ["get_last_handover", "explore_context_tree"], audit
    assert all(c["header_project"] == "linkedin" for c in calls), calls


async def test_without_broker_the_backend_shows_the_bug(backend_factory) -> None:
    """Control: the same sequence straight to the backend fails, so the scenario above is meaningful."""
    backend = backend_factory()
    select = await reconnecting_reply(backend.url, TOKEN, "claude-ai", "select_project_for_session", {"name": "linkedin"})
    assert not select.is_error, select.text
    handover = await reconnecting_reply(backend.url, TOKEN, "claude-ai", "get_last_handover")
    assert handover.is_error, handover.text
    assert "Project selection required for session" in handover.text


async def test_typescript_client_production_log(make_stack) -> None:
    stack = make_stack()
    steps = [
        {"reconnect": True},
        {"call": "list_projects"},
        {"reconnect": True},
        {"call": "select_project_for_session", "args": {"name": "linkedin"}},
        {"reconnect": True},
        {"call": "get_last_handover"},
        {"reconnect": True},
        {"call": "explore_context_tree"},
    ]
    lines = await run_ts_client_async({"url": stack.url, "token": TOKEN, "client_name": "claude-ai", "steps": steps})

    assert all(line.get("error") is None for line in lines), lines
    assert all(line.get("session_id") for line in lines if line.get("reconnect")), lines

    listing = ts_reply(lines[1])
    assert not listing.is_error and "linkedin" in listing.text, listing
    assert_selected(ts_reply(lines[3]), "linkedin")
    assert_on_project(ts_reply(lines[5]), "linkedin", "TS get_last_handover")
    assert_on_project(ts_reply(lines[7]), "linkedin", "TS explore_context_tree")

    audit = stack.backend.audit()
    assert_audit_clean(audit, {"linkedin"})
    assert [c["tool"] for c in project_calls(audit)] == ["get_last_handover", "explore_context_tree"], audit


async def test_connector_turns_cost_the_backend_only_the_call(make_stack) -> None:
    """Claude's connectors send initialize + notifications/initialized + tools/call per turn. With the
    initialize cache (the default), after the first turn the broker answers initialize itself and the
    backend sees only the call, on the work session's one backend session; a client that needs its own
    backend session (tools/list) gets it opened then."""
    stack = make_stack(redis=True)
    token = "e2e-token-connector-turns"
    sessions_created = lambda: stack.backend.process.log_text().count("Created new transport with session ID")  # noqa: E731
    assert_selected(await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session", {"name": "atlas"}), "atlas")
    before = sessions_created()
    async with httpx.AsyncClient(timeout=15) as http:
        for turn in range(5):
            session_id = await raw_initialize(http, stack.url, token, "claude-ai")
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            done = await http.post(stack.url, json=initialized, headers=rpc_headers(token, session_id))
            assert done.status_code == 202, done.text
            reply = await http.post(stack.url, json=tools_call_body("get_last_handover", {}, turn + 10), headers=rpc_headers(token, session_id))
            assert reply.status_code == 200 and "project=atlas header=atlas" in reply.text, reply.text
            ended = await http.delete(stack.url, headers=rpc_headers(token, session_id))
            assert ended.status_code == 200, ended.text
    assert sessions_created() == before, f"the backend opened {sessions_created() - before} sessions for 5 cached turns"
    # A client that lists tools gets its own backend session, opened when needed.
    async with mcp_session(stack.url, token, "claude-ai") as (session, _):
        with anyio.fail_after(30):
            listed = await session.list_tools()
    assert any(t.name == "get_last_handover" for t in listed.tools)
    assert sessions_created() > before
    assert_audit_clean(stack.backend.audit(), allowed={"atlas"})


async def test_initialize_cache_off_forwards_every_initialize(make_stack) -> None:
    stack = make_stack(redis=False, broker_args=("--initialize-cache", "off"))
    token = "e2e-token-no-cache"
    created = lambda: stack.backend.process.log_text().count("Created new transport with session ID")  # noqa: E731
    async with httpx.AsyncClient(timeout=15) as http:
        before = created()
        for _ in range(3):
            await raw_initialize(http, stack.url, token, "claude-ai")
    assert created() - before == 3
