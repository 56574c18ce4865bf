"""Protocol edges through the broker: a legacy backend's 400 to `server/discover` reaches the client as
the backend wrote it (so it falls back to `initialize`), HTTP/2 from clients, bad input refused with
the right status and no state change, the `work_session` handle never reaching the backend, and no
credential or handle stored in Redis in plain form.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from e2e_helpers import (
    BROKER_NONE_SELECTED,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    initialize_body,
    raw_initialize,
    reconnecting_reply,
    rpc_body,
    rpc_headers,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-protocol-credential-do-not-store"
DISCOVER = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}


async def test_legacy_backend_discover_400_reaches_the_client_unchanged_with_bridge_off(make_stack) -> None:
    """With --bridge off the broker passes modern traffic through: a legacy backend's own 400 to
    server/discover reaches the client byte for byte, and the client falls back to initialize. (With
    the default --bridge auto the broker answers server/discover itself: test_protocol_eras.py.)"""
    stack = make_stack(broker_args=("--bridge", "off"))
    headers = rpc_headers(TOKEN, **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"})
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    discover = {**DISCOVER, "params": {"_meta": meta}}  # well formed, as SDK clients send it
    async with httpx.AsyncClient(timeout=10.0) as http:
        direct = await http.post(stack.backend.url, headers=headers, json=discover)
        proxied = await http.post(stack.url, headers=headers, json=discover)
    assert direct.status_code == 400, direct.text
    assert (proxied.status_code, proxied.text) == (direct.status_code, direct.text)


async def test_a_modern_request_without_its_envelope_is_refused_before_the_backend(make_stack) -> None:
    """A request that declares 2026-07-28 but carries no _meta envelope gets the spec's -32602 from the
    broker (bridged or not), and the backend never sees it."""
    stack = make_stack()
    headers = rpc_headers(TOKEN, **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"})
    async with httpx.AsyncClient(timeout=10.0) as http:
        proxied = await http.post(stack.url, headers=headers, json=DISCOVER)
    assert proxied.status_code == 400, proxied.text
    assert proxied.json()["error"]["code"] == -32602, proxied.text


async def test_http2_prior_knowledge_from_clients(make_stack) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is needed for the HTTP/2 check (Debian: apt-get install curl)")
    stack = make_stack(redis=False)
    argv = [curl, "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-X", "POST", stack.url]
    for name, value in rpc_headers(TOKEN).items():
        argv += ["-H", f"{name}: {value}"]
    argv += ["--data", json.dumps(initialize_body("claude-ai"))]
    head = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout.lower()
    assert head.startswith("http/2 200"), head
    assert "mcp-session-id:" in head, head


async def test_bad_input_gets_clear_errors_and_changes_nothing(make_stack) -> None:
    stack = make_stack()
    async with httpx.AsyncClient(timeout=20.0) as http:
        session_id = await raw_initialize(http, stack.url, TOKEN, "claude-ai")
        headers = rpc_headers(TOKEN, session_id)
        cases = [
            (b"{not json", 400, -32700),
            (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x","arguments":[1]}}', 400, -32600),
            (b"[]", 400, -32600),
            (b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}', 400, -32600),
            (b"\xff\xfe\xfd", 400, -32700),
        ]
        for body, status, code in cases:
            response = await http.post(stack.url, headers=headers, content=body)
            assert response.status_code == status, (body, response.status_code, response.text)
            assert response.json()["error"]["code"] == code, (body, response.text)
        huge = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"' + b"x" * (5 << 20) + b'"}}'
        response = await http.post(stack.url, headers=headers, content=huge)
        assert response.status_code == 413, response.status_code
        assert response.headers.get("connection") == "close"
        # Nothing was bound and nothing reached the backend's tools.
        reply = await http.post(stack.url, headers=headers, json=tools_call_body("get_last_handover", {}))
        assert BROKER_NONE_SELECTED in rpc_body(reply)["result"]["content"][0]["text"]
    assert [e["tool"] for e in stack.backend.audit()] == []


async def test_handle_is_stripped_and_nothing_secret_is_stored(make_stack) -> None:
    stack = make_stack(redis=True)
    selected = await reconnecting_reply(stack.url, TOKEN, "claude-ai", "select_project_for_session", {"name": "atlas"})
    handle = assert_selected(selected, "atlas")
    reply = await reconnecting_reply(
        stack.url, TOKEN, "claude-ai", "lock_context", {"content": "c", "topic": "t", "work_session": handle}
    )
    assert_on_project(reply, "atlas", "call with its handle")
    for entry in stack.backend.audit():
        assert "work_session" not in entry["args"], entry

    unknown = await reconnecting_reply(stack.url, "another-credential", "claude-ai", "get_last_handover")
    assert_broker_error(unknown, BROKER_NONE_SELECTED)

    log = stack.broker.log_text()
    for secret in (TOKEN, "another-credential", handle, handle.split(".")[2]):
        assert secret not in log, f"found a secret in the broker's log: {secret[:12]}..."

    dump = redis_dump(stack.redis.url)
    assert dump, "the broker stored nothing in Redis"
    for secret in (TOKEN, "another-credential", handle, handle.split(".")[2]):
        assert secret not in dump, f"found a secret in Redis: {secret[:12]}..."


def redis_dump(url: str) -> str:
    """Every key and value in the database, as text."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail("redis-cli is missing (it comes with the redis-server package)")
    port = url.rsplit(":", 1)[1].split("/")[0]
    keys = subprocess.run([cli, "-p", port, "--scan"], capture_output=True, text=True, check=True).stdout.split()
    parts = []
    for key in keys:
        kind = subprocess.run([cli, "-p", port, "TYPE", key], capture_output=True, text=True, check=True).stdout.strip()
        if kind == "stream" and re.fullmatch(r"msb:\{b:[0-9a-f]\}:finalized", key):
            continue  # the finalizers' streams and consumer groups exist from start-up, whatever the traffic
        # set: a lookup cache's sync acks (msb:acks:<nonce>, the feeds' random ids).
        command = {"hash": ["HGETALL"], "zset": ["ZRANGE", key, "0", "-1", "WITHSCORES"], "string": ["GET"],
                   "stream": ["XRANGE", key, "-", "+"], "set": ["SMEMBERS"]}[kind]
        args = command if kind in ("zset", "stream") else command + [key]
        parts.append(key + " " + subprocess.run([cli, "-p", port, *args], capture_output=True, text=True, check=True).stdout)
    return "\n".join(parts)


async def test_initialize_alone_leaves_nothing_in_the_store(make_stack) -> None:
    """Claude's connectors send one initialize per tool call: that must not grow the store."""
    stack = make_stack(redis=True)
    async with httpx.AsyncClient(timeout=10.0) as http:
        for _ in range(5):
            await raw_initialize(http, stack.url, TOKEN, "claude-ai")
            listed = await http.post(stack.url, headers=rpc_headers(TOKEN), json=initialize_body("claude-code"))
            assert listed.status_code == 200, listed.text
    assert redis_dump(stack.redis.url) == ""


async def test_hostile_shapes_get_the_right_status_and_change_nothing(make_stack) -> None:
    stack = make_stack()
    async with httpx.AsyncClient(timeout=20.0) as http:
        session_id = await raw_initialize(http, stack.url, TOKEN, "claude-ai")
        headers = rpc_headers(TOKEN, session_id)
        deep = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":' + b'{"a":' * 5000 + b"1" + b"}" * 5001
        response = await http.post(stack.url, headers=headers, content=deep)
        assert (response.status_code, response.json()["error"]["code"]) == (400, -32700), response.text
        batch = [{"jsonrpc": "2.0", "id": i, "method": "tools/list"} for i in range(1000)]
        response = await http.post(stack.url, headers=headers, json=batch)
        assert (response.status_code, response.json()["error"]["code"]) == (400, -32600), response.text
        for method in ("../../etc/passwd", "tools/call\u0000", "x" * 10_000, "ツール/呼ぶ"):
            response = await http.post(stack.url, headers=headers, json={"jsonrpc": "2.0", "id": 9, "method": method})
            assert response.status_code == 200, (method[:20], response.status_code)
            reply = rpc_body(response)  # the backend's own refusal (FastMCP says -32602), for this request's id
            assert reply["id"] == 9 and reply["error"]["code"] < 0, reply
        unknown = rpc_headers(TOKEN, session_id, **{"MCP-Protocol-Version": "1999-01-01"})
        direct_id = await raw_initialize(http, stack.backend.url, TOKEN, "claude-ai")
        direct = await http.post(stack.backend.url, headers={**unknown, "Mcp-Session-Id": direct_id},
                                 json=tools_call_body("list_projects", {}))
        proxied = await http.post(stack.url, headers=unknown, json=tools_call_body("list_projects", {}))
        assert proxied.status_code == direct.status_code == 400, (proxied.text, direct.text)
        response = await http.post(stack.url, headers={**headers, "X-Padding": "p" * 100_000}, json=initialize_body("x"))
        assert response.status_code == 431, response.status_code
        assert response.headers.get("connection") == "close", "a refused request's connection is not reused"
    async with httpx.AsyncClient(timeout=20.0) as http:
        alive = await http.post(stack.url, headers=headers, json=tools_call_body("get_last_handover", {}))
        assert BROKER_NONE_SELECTED in rpc_body(alive)["result"]["content"][0]["text"], "still serving, nothing bound"
    assert [e["tool"] for e in stack.backend.audit()] == []


async def test_a_slow_client_cannot_hold_a_connection_forever(make_stack) -> None:
    stack = make_stack(redis=False)
    port = int(stack.url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")  # and never finishes the headers
        started = time.monotonic()
        data = slow.recv(4096)  # the broker answers or closes once its header read timeout passes
        waited = time.monotonic() - started
    assert waited < 15.0, f"the connection was held {waited:.1f}s"
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
