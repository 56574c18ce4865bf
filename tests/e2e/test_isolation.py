"""Isolation: surfaces sharing one credential, several conversations on one surface, and a second
principal never see each other's project; ambiguity gets a clear tool error, never a guess.
"""

from __future__ import annotations

import httpx
import pytest

from e2e_helpers import (
    BROKER_HANDLE_REFUSED,
    BROKER_NONE_SELECTED,
    BROKER_SEVERAL_LIVE,
    assert_audit_clean,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    call,
    mcp_session,
    project_calls,
    reconnecting_reply,
    rpc_body,
    rpc_headers,
    run_ts_client_async,
    tools_call_body,
    ts_reply,
)

pytestmark = pytest.mark.anyio

SURFACE_PROJECT = {"claude-ai": "linkedin", "claude-code": "innkeeper"}


def lock_contents_by_project(audit: list[dict]) -> dict[str, str]:
    return {e["args"]["content"]: e["header_project"] for e in audit if e["tool"] == "lock_context"}


async def test_two_surfaces_one_key_never_mix(make_stack) -> None:
    token = "e2e-token-shared-by-two-surfaces"
    stack = make_stack()

    assert_selected(
        await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )
    # The claude-code surface is driven by the TypeScript SDK client for its select.
    lines = await run_ts_client_async(
        {
            "url": stack.url,
            "token": token,
            "client_name": "claude-code",
            "steps": [{"call": "select_project_for_session", "args": {"name": "innkeeper"}}],
        }
    )
    assert_selected(ts_reply(lines[0]), "innkeeper")

    expected: dict[str, str] = {}
    topics: dict[str, list[str]] = {"claude-ai": [], "claude-code": []}
    for i in range(10):
        surface = "claude-ai" if i % 2 == 0 else "claude-code"
        project = SURFACE_PROJECT[surface]
        if (i // 2) % 2 == 0:
            content = f"note {i} from {surface}"
            tool, args = "lock_context", {"content": content, "topic": f"t{i}"}
            expected[content] = project
            topics[surface].append(f"t{i}")
        else:
            tool, args = "get_last_handover", {}
        if surface == "claude-code" and i in (1, 7):
            step = {"call": tool, "args": args}
            line = (await run_ts_client_async({"url": stack.url, "token": token, "client_name": surface, "steps": [step]}))[0]
            reply = ts_reply(line)
        else:
            # claude-code's Python calls also DELETE their MCP session on close: that must not end the work session.
            reply = await reconnecting_reply(
                stack.url, token, surface, tool, args, terminate_on_close=(surface == "claude-code")
            )
        assert_on_project(reply, project, f"call {i} ({tool}) from {surface}")

    for surface, project in SURFACE_PROJECT.items():
        tree = await reconnecting_reply(stack.url, token, surface, "explore_context_tree")
        assert_on_project(tree, project, f"explore_context_tree from {surface}")
        assert f"topics={','.join(sorted(topics[surface]))}" in tree.text, tree.text

    audit = stack.backend.audit()
    assert_audit_clean(audit, {"linkedin", "innkeeper"})
    assert lock_contents_by_project(audit) == expected


async def test_unkeyed_conversations_guarded(make_stack) -> None:
    token = "e2e-token-two-conversations"
    stack = make_stack()

    handle1 = assert_selected(
        await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )
    handle2 = assert_selected(
        await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session", {"name": "innkeeper"}),
        "innkeeper",
    )
    assert handle1 != handle2

    before = len(project_calls(stack.backend.audit()))
    unkeyed = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover")
    assert_broker_error(unkeyed, BROKER_SEVERAL_LIVE, "linkedin", "innkeeper", "work_session")
    assert len(project_calls(stack.backend.audit())) == before, "an ambiguous call reached the backend"

    for handle, project, conv in ((handle1, "linkedin", "conv1"), (handle2, "innkeeper", "conv2")):
        reply = await reconnecting_reply(stack.url, token, "claude-ai", "get_last_handover", {"work_session": handle})
        assert_on_project(reply, project, f"{conv} get_last_handover with its handle")
        args = {"content": f"{conv} note", "topic": conv, "work_session": handle}
        reply = await reconnecting_reply(stack.url, token, "claude-ai", "lock_context", args)
        assert_on_project(reply, project, f"{conv} lock_context with its handle")

    audit = stack.backend.audit()
    assert_audit_clean(audit, {"linkedin", "innkeeper"})
    assert lock_contents_by_project(audit) == {"conv1 note": "linkedin", "conv2 note": "innkeeper"}


async def test_second_principal_isolated(make_stack) -> None:
    token_a, token_b = "e2e-token-principal-a", "e2e-token-principal-b"
    stack = make_stack()

    async with mcp_session(stack.url, token_a, "claude-ai") as (session_a, get_session_id):
        handle_a = assert_selected(await call(session_a, "select_project_for_session", {"name": "linkedin"}), "linkedin")
        assert_on_project(await call(session_a, "get_last_handover"), "linkedin", "principal A")
        session_id_a = get_session_id()
        assert session_id_a, "principal A's client has no Mcp-Session-Id"
        before = len(project_calls(stack.backend.audit()))

        none = await reconnecting_reply(stack.url, token_b, "claude-ai", "get_last_handover")
        assert_broker_error(none, BROKER_NONE_SELECTED)
        assert "linkedin" not in none.text, f"principal B was shown A's project: {none.text!r}"

        stolen = await reconnecting_reply(
            stack.url, token_b, "claude-ai", "get_last_handover", {"work_session": handle_a}
        )
        assert_broker_error(stolen, BROKER_HANDLE_REFUSED)

        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                stack.url, headers=rpc_headers(token_b, session_id_a), json=tools_call_body("get_last_handover", {})
            )
        assert response.status_code == 404, f"B reusing A's Mcp-Session-Id: {response.status_code} {response.text}"
        error = rpc_body(response).get("error") or {}
        assert error.get("code") == -32001, f"expected JSON-RPC error -32001, got {response.text}"

        assert len(project_calls(stack.backend.audit())) == before, "a call of principal B reached the backend"

        # B selecting its own project changes nothing for A.
        assert_selected(
            await reconnecting_reply(stack.url, token_b, "claude-ai", "select_project_for_session", {"name": "zephyr"}),
            "zephyr",
        )
        assert_on_project(await call(session_a, "get_last_handover"), "linkedin", "principal A after B selected")
        assert_on_project(
            await reconnecting_reply(stack.url, token_b, "claude-ai", "get_last_handover"), "zephyr", "principal B"
        )

    assert_audit_clean(stack.backend.audit(), {"linkedin", "zephyr"})
