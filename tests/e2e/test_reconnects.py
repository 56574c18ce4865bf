"""The production log, replayed: a client that re-initializes before every tool call keeps its project.

Without the broker the example backend loses the selection at every new MCP session ("Project
selection required"); through the broker every call after the select runs on the selected project.
Driven by the Python SDK client (both backend reply modes) and by the TypeScript SDK client.
"""

from __future__ import annotations

import pytest

from e2e_helpers import (
    assert_audit_clean,
    assert_on_project,
    assert_selected,
    project_calls,
    reconnecting_reply,
    run_ts_client_async,
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
