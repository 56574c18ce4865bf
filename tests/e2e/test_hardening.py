"""Smaller hardening: a huge clientInfo still yields a session id the broker accepts; the broker's log
file is plain text (no ANSI colour codes) when stdout is not a terminal; and in Redis mode a healthy
store produces no store warnings (the finalizer's blocking read used to time out every second).
"""

from __future__ import annotations

import time

import httpx
import pytest

from e2e_helpers import initialize_body, rpc_body, rpc_headers, tools_call_body

pytestmark = pytest.mark.anyio

TOKEN = "e2e-hardening-credential"


async def test_a_huge_client_name_still_gives_a_working_session_id(make_stack) -> None:
    stack = make_stack(redis=False)
    body = initialize_body("n" * 50_000)
    body["params"]["clientInfo"]["version"] = "v" * 50_000
    body["params"]["clientInfo"]["description"] = "d" * 50_000
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(stack.url, headers=rpc_headers(TOKEN), json=body)
        assert response.status_code == 200, response.text
        session = response.headers["mcp-session-id"]
        assert len(session) < 8192, f"a session id of {len(session)} bytes"
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = await http.post(stack.url, headers=rpc_headers(TOKEN, session), json=note)
        assert response.status_code == 202, response.text
        response = await http.post(
            stack.url, headers=rpc_headers(TOKEN, session), json=tools_call_body("list_projects", {})
        )
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        result = rpc_body(response)["result"]
        assert not result.get("isError"), result
        assert "linkedin" in result["content"][0]["text"]


async def test_logs_are_plain_and_a_healthy_redis_raises_no_warnings(backend_factory, broker_factory, redis_server) -> None:
    backend = backend_factory()
    # NO_COLOR empty: colours are not turned off by the environment, only by stdout not being a terminal.
    broker = broker_factory(backend, redis=redis_server, env={"NO_COLOR": ""})
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(broker.url, headers=rpc_headers(TOKEN), json=initialize_body("claude-code"))
        assert response.status_code == 200, response.text
        assert (await http.get(f"{broker.base}/nope")).status_code == 404
    time.sleep(3.5)  # several of the finalizer's blocking reads (500 ms each) and sweeps
    broker.process.stop()
    log = broker.log_text()
    assert "\x1b[" not in log, "ANSI escape codes in a log file"
    assert " INFO " in log and "request" in log
    warnings = [line for line in log.splitlines() if " WARN " in line or " ERROR " in line]
    assert not warnings, "a healthy Redis produced warnings:\n" + "\n".join(warnings[:5])
