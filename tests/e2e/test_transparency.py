"""The broker as a transparent Streamable HTTP proxy: tools/list gains the optional work_session
argument, the GET SSE stream and DELETE pass through, foreign origins and missing credentials are
refused, and client-sent copies of the broker's trusted headers never reach the backend.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from e2e_helpers import (
    BROKER_NONE_SELECTED,
    assert_audit_clean,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    initialize_body,
    mcp_session,
    raw_initialize,
    reconnecting_reply,
    rpc_headers,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-token-transparency"
BACKEND_TOOLS = {
    "list_projects",
    "select_project_for_session",
    "get_last_handover",
    "lock_context",
    "explore_context_tree",
    "write_handover",
    "wait",
    "confirm_lock",
    "summarize",
    "announce",
}


async def test_tools_list_gains_optional_work_session(make_stack) -> None:
    stack = make_stack()
    async with mcp_session(stack.url, TOKEN, "claude-ai") as (session, _):
        with anyio.fail_after(30):
            tools = (await session.list_tools()).tools
    assert {t.name for t in tools} == BACKEND_TOOLS
    for tool in tools:
        props = tool.inputSchema.get("properties", {})
        assert props.get("work_session", {}).get("type") == "string", f"{tool.name}: {tool.inputSchema}"
        assert "work_session" not in tool.inputSchema.get("required", []), f"{tool.name}: {tool.inputSchema}"
    by_name = {t.name: t.inputSchema for t in tools}
    assert by_name["select_project_for_session"]["required"] == ["name"]
    assert set(by_name["lock_context"]["properties"]) == {"content", "topic", "work_session"}


async def test_get_sse_stream_opens(make_stack) -> None:
    stack = make_stack()
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        session_id = await raw_initialize(http, stack.url, TOKEN, "claude-ai")
        headers = rpc_headers(TOKEN, session_id, Accept="text/event-stream")
        del headers["Content-Type"]
        with anyio.fail_after(10):
            async with http.stream("GET", stack.url, headers=headers) as response:
                assert response.status_code == 200, await response.aread()
                assert response.headers.get("content-type", "").startswith("text/event-stream"), response.headers


async def test_delete_passes_through_then_404(make_stack) -> None:
    stack = make_stack()
    async with httpx.AsyncClient(timeout=10.0) as http:
        direct_id = await raw_initialize(http, stack.backend.url, TOKEN, "claude-ai")
        direct = await http.delete(stack.backend.url, headers=rpc_headers(TOKEN, direct_id))

        session_id = await raw_initialize(http, stack.url, TOKEN, "claude-ai")
        response = await http.delete(stack.url, headers=rpc_headers(TOKEN, session_id))
        assert response.status_code == direct.status_code == 200, (response.status_code, response.text)

        after = await http.post(
            stack.url, headers=rpc_headers(TOKEN, session_id), json=tools_call_body("list_projects", {})
        )
        assert after.status_code == 404, f"POST after DELETE: {after.status_code} {after.text}"


async def test_foreign_origin_refused(make_stack) -> None:
    stack = make_stack()
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.post(
            stack.url, headers=rpc_headers(TOKEN, Origin="https://evil.example"), json=initialize_body("claude-ai")
        )
    assert response.status_code == 403, f"{response.status_code} {response.text}"


async def test_missing_credential_refused(make_stack) -> None:
    stack = make_stack()
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.post(stack.url, headers=rpc_headers(None), json=initialize_body("claude-ai"))
    assert response.status_code == 401, f"{response.status_code} {response.text}"
    assert stack.backend.audit() == []


async def test_spoofed_project_headers_stripped(make_stack) -> None:
    stack = make_stack()
    spoof = {"X-MCP-Project": "zephyr", "X-MCP-Work-Session": "forged.assertion.value"}

    reply = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "get_last_handover", extra_headers=spoof)
    assert_broker_error(reply, BROKER_NONE_SELECTED)

    assert_selected(
        await reconnecting_reply(
            stack.url, TOKEN, "claude-ai", "select_project_for_session", {"name": "linkedin"}, extra_headers=spoof
        ),
        "linkedin",
    )
    reply = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "get_last_handover", extra_headers=spoof)
    assert_on_project(reply, "linkedin", "call with spoofed X-MCP-Project: zephyr")
    assert_audit_clean(stack.backend.audit(), {"linkedin"})
