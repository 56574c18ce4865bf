"""Spoofed identity (issue 17, item 2): with `--principal header`, the identity header is believed only
from `--trusted-proxies`, and from any other peer it must never reach the backend, on any path or
request kind; nor may a client's copy of a header the broker owns (`X-MCP-Project`,
`X-MCP-Work-Session`, `Mcp-Param-Work-Session`). Checked black-box, at a backend that records every
request's headers (tests/e2e/fault_backend.py), for every kind of request a client can send.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from e2e_helpers import initialize_body, rpc_headers, tools_call_body

pytestmark = pytest.mark.anyio

RECORDING_BACKEND = Path(__file__).resolve().parent / "fault_backend.py"
IDENTITY = "x-forwarded-user"
SPOOFED = {
    IDENTITY: "admin@example.test",
    "x-mcp-project": "someone-elses-project",
    "x-mcp-work-session": "forged.assertion.value",
    "mcp-param-work-session": "forged-handle",
}
MODERN = "2026-07-28"


def header_args(trusted: str) -> tuple[str, ...]:
    return ("--principal", "header", "--principal-header", IDENTITY, "--trusted-proxies", trusted, "--allow-anonymous")


@pytest.fixture
def recording_backend(processes):
    port = free_port()
    processes.spawn("recording-backend", [sys.executable, str(RECORDING_BACKEND), "--port", str(port)], port)

    class Target:
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/mcp"

    return Target


async def every_request_kind(http: httpx.AsyncClient, broker_url: str, base: str) -> None:
    """Sends each kind of request a client can, every one carrying the spoofed headers."""
    spoof = lambda session=None, **more: {**rpc_headers(None, session), **SPOOFED, **more}  # noqa: E731
    init = await http.post(broker_url, headers=spoof(), json=initialize_body("claude-code"))
    assert init.status_code == 200, init.text
    session = init.headers["mcp-session-id"]
    sends = [
        ("initialized", http.post(broker_url, headers=spoof(session), json={"jsonrpc": "2.0", "method": "notifications/initialized"})),
        ("tools/list", http.post(broker_url, headers=spoof(session), json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})),
        ("select", http.post(broker_url, headers=spoof(session), json=tools_call_body("select_project_for_session", {"name": "atlas"}, 3))),
        ("project tool", http.post(broker_url, headers=spoof(session), json=tools_call_body("get_last_handover", {}, 4))),
        ("exempt tool", http.post(broker_url, headers=spoof(session), json=tools_call_body("probe", {}, 5))),
        ("batch", http.post(broker_url, headers=spoof(session), json=[{"jsonrpc": "2.0", "id": 6, "method": "tools/list"}])),
        ("GET stream", http.get(broker_url, headers=spoof(session))),
        ("no session", http.post(broker_url, headers=spoof(), json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"})),
        ("modern", http.post(broker_url, json={"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "spoofer", "version": "1"}}}},
            headers=spoof(**{"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}))),
        ("pass-through GET", http.get(f"{base}/.well-known/oauth-protected-resource", headers=spoof())),
        ("pass-through POST", http.post(f"{base}/register", headers=spoof(), json={"client_name": "x"})),
        ("DELETE", http.delete(broker_url, headers=spoof(session))),
    ]  # fmt: skip
    for what, send in sends:
        response = await send
        assert response.status_code < 500, f"{what}: {response.status_code} {response.text}"


async def test_an_untrusted_peer_cannot_spoof_identity_or_broker_headers(recording_backend, broker_factory) -> None:
    broker = broker_factory(recording_backend, extra_args=(*header_args("10.0.0.0/8"), "--exempt-tool", "probe"))
    async with httpx.AsyncClient(timeout=20) as http:
        await every_request_kind(http, broker.url, broker.base)
        received = (await http.get(f"{recording_backend.base}/received")).json()
    kinds = {(r["method"], r["path"].split("?")[0]) for r in received}
    for kind in [("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp"), ("GET", "/.well-known/oauth-protected-resource"), ("POST", "/register")]:
        assert kind in kinds, f"the backend never got {kind}: {sorted(kinds)}"
    for request in received:
        headers = request["headers"]
        what = f'{request["method"]} {request["path"]}: {headers}'
        assert IDENTITY not in headers, f"the identity header reached the backend: {what}"
        for name in ("x-mcp-project", "x-mcp-work-session", "mcp-param-work-session"):
            assert SPOOFED[name] not in headers.get(name, []), f"a client's {name} reached the backend: {what}"
            assert len(headers.get(name, [])) <= 1, f"two {name}: {what}"


async def test_a_trusted_proxy_s_identity_header_still_reaches_the_backend(recording_backend, broker_factory) -> None:
    """The control: the recorder does see the header when the broker may believe it."""
    broker = broker_factory(recording_backend, extra_args=header_args("127.0.0.0/8"))
    async with httpx.AsyncClient(timeout=20) as http:
        headers = {**rpc_headers(None), IDENTITY: "alice@example.test"}
        response = await http.post(broker.url, headers=headers, json=initialize_body("claude-code"))
        assert response.status_code == 200, response.text
        passed = await http.get(f"{broker.base}/.well-known/oauth-protected-resource", headers=headers)
        assert passed.status_code == 405, passed.text
        received = (await http.get(f"{recording_backend.base}/received")).json()
    assert received and all(r["headers"].get(IDENTITY) == ["alice@example.test"] for r in received), received
