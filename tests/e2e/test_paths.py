"""One canonical path: a request whose path is another spelling of the MCP path (or of a broker-owned
path), which the backend would decode or fold into it, is refused with 400 and never reaches the
backend; the trailing-slash spelling gets the broker's own redirect; and no redirect or other response
tells the client the upstream's address.

Requests are written on a raw socket, so the request target is exactly what the test says (HTTP
clients normalize paths).
"""

from __future__ import annotations

import json
import socket

import pytest

from e2e_helpers import initialize_body

ENCODED_MCP = [
    "/%6dcp",
    "/mc%70",
    "/%6D%63%70",
    "/%256dcp",
    "//mcp",
    "/x/../mcp",
    "/x/%2e%2e/mcp",
    "/./mcp",
    "/mcp%2f",
    "/mcp;x",
    "/MCP",
    "/mcp/x",
    "\\mcp",
]
ENCODED_OWNED = ["/%68ealthz", "/%6detrics", "/.well-known/jwks%2ejson", "//readyz"]


def raw_request(port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None):
    """(status, headers dict with lowercase names, body) of one HTTP/1.1 request sent as written."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, rest


def backend_requests(backend) -> int:
    """How many HTTP requests the backend has logged (uvicorn's access log)."""
    return sum(1 for line in backend.process.log_text().splitlines() if ' HTTP/1.1" ' in line)


def test_encoded_mcp_paths_are_refused_and_never_forwarded(make_stack) -> None:
    stack = make_stack(redis=False)
    port = stack.broker.process.port
    body = json.dumps(initialize_body("anonymous")).encode()
    rpc = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    before = backend_requests(stack.backend)
    for target in ENCODED_MCP:
        status, headers, reply = raw_request(port, "POST", target, body, rpc)  # no Authorization
        assert status == 400, f"POST {target}: {status} {reply!r}"
        if reply:  # (hyper itself refuses a target it cannot parse, such as a backslash, with no body)
            message = json.loads(reply)["error"]["message"]
            assert "another spelling of /mcp" in message, message
    for target in ENCODED_OWNED:
        status, _, reply = raw_request(port, "GET", target)
        assert status == 400, f"GET {target}: {status} {reply!r}"
    assert backend_requests(stack.backend) == before, "a refused request reached the backend"
    # The real paths still work: the MCP path checks the credential, health answers.
    status, _, _ = raw_request(port, "POST", "/mcp", body, rpc)
    assert status == 401
    status, _, _ = raw_request(port, "POST", "/mcp", body, {**rpc, "Authorization": "Bearer e2e-paths"})
    assert status == 200
    assert backend_requests(stack.backend) == before + 1, "the access log counts forwarded requests"
    status, _, reply = raw_request(port, "GET", "/healthz")
    assert (status, reply) == (200, b"ok\n")


def test_redirects_never_show_the_upstream_address(make_stack) -> None:
    stack = make_stack(redis=False)
    port = stack.broker.process.port
    upstream = f"127.0.0.1:{stack.backend.process.port}"
    # The trailing-slash spelling of the MCP path: the broker's own redirect, nothing forwarded.
    before = backend_requests(stack.backend)
    status, headers, _ = raw_request(port, "POST", "/mcp/?x=1", b"{}")
    assert status == 307
    assert headers["location"] == "/mcp?x=1"
    assert backend_requests(stack.backend) == before
    # A pass-through path the backend redirects (Starlette adds the slash-less URL on its own host).
    status, headers, body = raw_request(port, "GET", "/audit/")
    assert status == 307, (status, headers, body)
    assert headers["location"] == "/audit"
    for name, value in headers.items():
        assert str(stack.backend.process.port) not in value, f"{name}: {value} shows the upstream {upstream}"
    assert upstream.encode() not in body
