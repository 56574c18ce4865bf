"""Both protocol eras, every pairing, with the official SDK clients (Python 2.x ``mcp.Client`` and the
TypeScript v2 client, each in auto and legacy mode; Python 1.x ``ClientSession``): a modern (2026-07-28, sessionless) client in front of the
legacy FastMCP 1.x backend (bridged), and modern and legacy clients in front of a modern stateless SDK
2.x backend that takes the project from the broker's assertion. Each keeps its project across calls and
reconnects and never mixes two surfaces. Plus the modern request ladder: header mismatches refused with
the spec's codes, nothing reaching the backend.
"""

from __future__ import annotations

from typing import Any

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
    modern_reply,
    project_calls,
    reconnecting_reply,
    rpc_headers,
    run_modern_client,
    run_ts_v2_client,
    ts_v2_reply,
)

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
SELECT = "select_project_for_session"


async def modern(url: str, token: str, client_name: str, steps: list[dict[str, Any]], mode: str = "auto") -> list[dict]:
    """One modern-client run (a fresh connection, as a new chat would make)."""
    return await run_modern_client({"url": url, "token": token, "client_name": client_name, "mode": mode, "steps": steps})


def select(project: str) -> dict[str, Any]:
    return {"call": SELECT, "args": {"name": project}}


HANDOVER = {"call": "get_last_handover"}


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_a_modern_client_in_front_of_a_legacy_backend_is_bridged(make_stack, json_response: bool) -> None:
    stack = make_stack(json_response=json_response, redis=True)
    token = "e2e-token-modern-client"
    first = await modern(stack.url, token, "claude-ai", [select("innkeeper"), HANDOVER, {"list": True}])
    assert all(line["era"] == "modern" for line in first), f"the client fell back to the handshake: {first}"
    handle = assert_selected(modern_reply(first[0]), "innkeeper")
    assert_on_project(modern_reply(first[1]), "innkeeper", "same connection")
    schema = first[2]["tools"]["get_last_handover"]["properties"]["work_session"]
    assert schema.get("x-mcp-header") == "Work-Session", schema
    # A reconnect (a new sessionless connection): the surface continues the work session.
    again = await modern(stack.url, token, "claude-ai", [HANDOVER])
    assert_on_project(modern_reply(again[0]), "innkeeper", "after a reconnect")
    # Another surface is guarded; with the handle (mirrored into Mcp-Param-Work-Session) it works.
    other = await modern(stack.url, token, "claude-code", [HANDOVER, {"call": "get_last_handover", "args": {"work_session": handle}}])
    assert_broker_error(modern_reply(other[0]), BROKER_NONE_SELECTED)
    assert_on_project(modern_reply(other[1]), "innkeeper", "by handle")
    # The same client in legacy mode (the handshake) still works through the broker.
    legacy = await modern(stack.url, token, "claude-ai", [HANDOVER], mode="legacy")
    assert legacy[0]["era"] == "legacy"
    assert_on_project(modern_reply(legacy[0]), "innkeeper", "legacy mode")
    assert_audit_clean(stack.backend.audit(), allowed={"innkeeper"})


async def test_the_broker_answers_discover_for_a_legacy_backend(make_stack) -> None:
    stack = make_stack(redis=False)
    body = {"jsonrpc": "2.0", "id": "d1", "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    }}}  # fmt: skip
    headers = {"Authorization": "Bearer raw", "MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover",
               "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}  # fmt: skip
    async with httpx.AsyncClient(timeout=15) as http:
        response = await http.post(stack.url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["supportedVersions"] == [MODERN]
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "example-memory-backend"
    assert "mcp-session-id" not in response.headers, "a modern client never gets a session id"


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_modern_and_legacy_clients_in_front_of_a_modern_backend(
    modern_backend_factory, broker_factory, redis_server, json_response: bool
) -> None:
    backend = modern_backend_factory(json_response=json_response)
    broker = broker_factory(backend, redis=redis_server)
    token = "e2e-token-modern-backend"
    first = await modern(broker.url, token, "claude-ai", [select("atlas"), HANDOVER])
    assert first[0]["era"] == "modern"
    assert_selected(modern_reply(first[0]), "atlas")
    assert_on_project(modern_reply(first[1]), "atlas", "modern client")
    # The SDK 2.x client in legacy mode and the SDK 1.x client, each on a fresh connection.
    legacy = await modern(broker.url, token, "claude-ai", [HANDOVER], mode="legacy")
    assert legacy[0]["era"] == "legacy"
    assert_on_project(modern_reply(legacy[0]), "atlas", "SDK 2.x legacy mode")
    assert_on_project(await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover"), "atlas", "SDK 1.x")
    # Another surface never sees it.
    other = await modern(broker.url, token, "claude-code", [HANDOVER])
    assert_broker_error(modern_reply(other[0]), BROKER_NONE_SELECTED)
    audit = backend.audit()
    assert_audit_clean(audit, allowed={"atlas"})
    modern_calls = [e for e in project_calls(audit) if e["protocol_version"] == MODERN]
    assert modern_calls, "no modern call reached the modern backend unbridged"


async def test_modern_requests_whose_headers_disagree_are_refused(make_stack) -> None:
    stack = make_stack(redis=False)
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}

    def call(tool: str, meta: dict | None = meta) -> dict:
        params: dict[str, Any] = {"name": tool, "arguments": {}}
        if meta is not None:
            params["_meta"] = meta
        return {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}

    def headers(**over: str) -> dict[str, str]:
        base = {"Authorization": "Bearer ladder", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                "Mcp-Name": "get_last_handover", "Accept": "application/json, text/event-stream"}  # fmt: skip
        base.update(over)
        return {k: v for k, v in base.items() if v}

    cases = [
        ("Mcp-Method says another method", call("get_last_handover"), headers(**{"Mcp-Method": "tools/list"}), -32020),
        ("Mcp-Name says another tool", call("get_last_handover"), headers(**{"Mcp-Name": "write_handover"}), -32020),
        ("no Mcp-Name", call("get_last_handover"), headers(**{"Mcp-Name": ""}), -32020),
        ("the version header disagrees with _meta", call("get_last_handover", {**meta, "io.modelcontextprotocol/protocolVersion": "2026-09-01"}), headers(**{"MCP-Protocol-Version": "2026-07-28"}), -32020),
        ("an unsupported version", call("get_last_handover", {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}), headers(**{"MCP-Protocol-Version": "2099-01-01"}), -32022),
        ("no _meta envelope", call("get_last_handover", None), headers(), -32602),
        # A request is modern when either the header or _meta says so.
        ("a modern header, a legacy _meta", call("list_projects", {**meta, "io.modelcontextprotocol/protocolVersion": "2025-06-18"}), headers(**{"Mcp-Name": "list_projects"}), -32020),
        ("a legacy header, a modern _meta", call("list_projects"), headers(**{"MCP-Protocol-Version": "2025-06-18", "Mcp-Name": "list_projects"}), -32020),
        # 2026-07-28 has no batches; nor does a version the broker does not know.
        ("a batch under the modern header", [call("list_projects", None), call("list_projects", None)], headers(**{"Mcp-Method": "", "Mcp-Name": ""}), -32600),
        ("a batch of modern _meta under a legacy header", [call("list_projects")], headers(**{"MCP-Protocol-Version": "2025-06-18", "Mcp-Method": "", "Mcp-Name": ""}), -32600),
        ("a batch under an unknown version", [call("list_projects", None)], headers(**{"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "", "Mcp-Name": ""}), -32022),
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=15) as http:
        for what, body, hdrs, code in cases:
            response = await http.post(stack.url, json=body, headers=hdrs)
            assert response.status_code == 400, f"{what}: {response.status_code} {response.text}"
            error = response.json()["error"]
            assert error["code"] == code, f"{what}: {error}"
            if code == -32022:
                assert error["data"]["supported"] == [MODERN], error
    assert stack.backend.audit() == [], "a refused request reached a tool"


async def test_bridge_off_lets_the_client_fall_back(make_stack) -> None:
    stack = make_stack(redis=False, broker_args=("--bridge", "off"))
    token = "e2e-token-bridge-off"
    lines = await modern(stack.url, token, "claude-ai", [select("zephyr"), HANDOVER])
    assert lines[0]["era"] == "legacy", "a legacy backend answers discover with 400: the client falls back"
    assert_selected(modern_reply(lines[0]), "zephyr")
    assert_on_project(modern_reply(lines[1]), "zephyr")


@pytest.mark.parametrize("backend_kind", ["legacy", "modern"])
async def test_the_typescript_v2_client_in_both_modes(
    backend_kind: str, backend_factory, modern_backend_factory, broker_factory, redis_server
) -> None:
    """The TypeScript SDK v2 client, auto (sessionless against the broker) and legacy (the handshake),
    in front of the legacy backend (bridged) and the modern one: its project across reconnects, and
    another surface guarded."""
    backend = backend_factory() if backend_kind == "legacy" else modern_backend_factory()
    broker = broker_factory(backend, redis=redis_server)
    token = f"e2e-token-ts-v2-{backend_kind}"

    def scenario(mode: str, client: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return {"url": broker.url, "token": token, "client_name": client, "mode": mode, "steps": steps}

    first = await run_ts_v2_client(scenario("auto", "claude-ai", [select("dementia"), HANDOVER]))
    assert first[0]["version"] == MODERN, f"the v2 client did not go sessionless: {first}"
    assert_selected(ts_v2_reply(first[0]), "dementia")
    assert_on_project(ts_v2_reply(first[1]), "dementia", "auto mode")
    legacy = await run_ts_v2_client(scenario("legacy", "claude-ai", [HANDOVER]))
    assert legacy[0]["version"] != MODERN
    assert_on_project(ts_v2_reply(legacy[0]), "dementia", "legacy mode, reconnected")
    other = await run_ts_v2_client(scenario("auto", "cursor", [HANDOVER]))
    assert_broker_error(ts_v2_reply(other[0]), BROKER_NONE_SELECTED)
    assert_audit_clean(backend.audit(), allowed={"dementia"})


async def test_a_modern_client_that_closes_its_request_cancels_it_at_the_backend(make_stack) -> None:
    """On the modern wire a client cancels by closing its reply stream; bridged, the legacy backend is
    sent notifications/cancelled and its tool stops."""
    stack = make_stack(redis=False)
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "claude-ai", "version": "1"}}  # fmt: skip

    def request(tool: str, args: dict) -> tuple[dict, dict]:
        body = {"jsonrpc": "2.0", "id": f"r-{tool}", "method": "tools/call", "params": {"name": tool, "arguments": args, "_meta": meta}}
        headers = {"Authorization": "Bearer e2e-cancel", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
                   "Mcp-Name": tool, "Accept": "application/json, text/event-stream"}  # fmt: skip
        return body, headers

    async with httpx.AsyncClient(timeout=15) as http:
        body, headers = request(SELECT, {"name": "linkedin"})
        selected = await http.post(stack.url, json=body, headers=headers)
        assert selected.status_code == 200 and "Selected project linkedin" in selected.text, selected.text
    async with httpx.AsyncClient(timeout=httpx.Timeout(15, read=1.0)) as http:
        body, headers = request("wait", {"seconds": 6})
        with pytest.raises(httpx.ReadTimeout):
            await http.post(stack.url, json=body, headers=headers)
    deadline = anyio.current_time() + 5
    events: list[str] = []
    while anyio.current_time() < deadline:
        events = [e["tool"] for e in stack.backend.audit() if e["tool"].startswith("wait:")]
        if events:
            break
        await anyio.sleep(0.2)
    assert events == ["wait:cancelled"], f"the backend's tool was not cancelled: {events}"


async def test_legacy_clients_in_front_of_a_backend_that_speaks_only_2026(modern_backend_factory, broker_factory) -> None:
    """The backend refuses the handshake: the broker answers initialize from its server/discover and
    turns each later request into a modern one (_meta envelope, routing headers)."""
    backend = modern_backend_factory(modern_only=True)
    broker = broker_factory(backend)
    token = "e2e-token-modern-only"
    async with httpx.AsyncClient(timeout=10) as http:
        direct = await http.post(backend.url, json=initialize_body("claude-ai"), headers=rpc_headers(None))
        assert direct.status_code == 400, "the backend must refuse the handshake for this test to mean anything"
    lines = await modern(broker.url, token, "claude-ai", [select("linkedin"), HANDOVER], mode="legacy")
    assert lines[0]["era"] == "legacy"
    assert_selected(modern_reply(lines[0]), "linkedin")
    assert_on_project(modern_reply(lines[1]), "linkedin", "SDK 2.x legacy mode")
    assert_on_project(await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover"), "linkedin", "SDK 1.x")
    other = await reconnecting_reply(broker.url, token, "claude-code", "get_last_handover")
    assert_broker_error(other, BROKER_NONE_SELECTED)
    audit = backend.audit()
    assert_audit_clean(audit, allowed={"linkedin"})
    assert all(e["protocol_version"] == MODERN for e in audit), "a request reached the backend unmodernized"
