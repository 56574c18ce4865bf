"""Bounded resources, end to end: a request body trickled byte by byte is cut with 408 within
--body-timeout; connections past --max-connections get 503 with Retry-After and a client gets through
once they close, and connections that never send a byte are closed at the header timeout; a broker out
of file descriptors backs off (one warning, not a spin) and serves again
when they are freed; request bodies past --max-inflight-body-bytes get 503 with Retry-After.

Requests are written on raw sockets, to hold connections and bodies open exactly as a slow client would.
"""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest

from conftest import SIGNING_KEY, broker_binary, free_port
from e2e_helpers import initialize_body, rpc_headers

TOKEN = "e2e-limits-credential"


def request_head(port: int, method: str, path: str, length: int, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def trickle_until_answered(sock: socket.socket, every: float, give_up: float) -> float:
    """Sends one body byte every `every` seconds until the broker answers; returns when it did."""
    started = time.monotonic()
    while time.monotonic() - started < give_up:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            return time.monotonic() - started
        try:
            sock.sendall(b" ")
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"no answer within {give_up}s of trickling")


async def healthy_initialize(url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(url, headers=rpc_headers(TOKEN), json=initialize_body("claude-code"))
        assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/mcp", "/audit"])
async def test_a_trickled_body_is_cut_within_the_body_timeout(path, backend_factory, broker_factory) -> None:
    broker = broker_factory(backend_factory(), extra_args=("--body-timeout", "2s"))
    port = broker.process.port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_head(port, "POST", path, 100_000))
        cut_after = trickle_until_answered(sock, every=0.25, give_up=10)
        status, headers, body = read_response(sock)
    assert status == 408, (status, body)
    assert 1.9 <= cut_after <= 3.0, f"cut after {cut_after:.2f}s with --body-timeout 2s"
    assert headers.get("connection") == "close"
    assert "did not arrive within" in json.loads(body)["error"]["message"]
    await healthy_initialize(broker.url)


@pytest.mark.anyio
async def test_connections_past_the_limit_get_503_then_clients_get_through(backend_factory, broker_factory) -> None:
    limit = 8
    broker = broker_factory(backend_factory(), extra_args=("--max-connections", str(limit)))
    port = broker.process.port
    time.sleep(0.5)  # the start-up probe's connection is gone
    held = []
    for _ in range(limit):  # connections that sent half a request and wait
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    time.sleep(0.3)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(extra)
        assert status == 503, (status, body)
        assert headers.get("retry-after") == "1"
        assert "too many connections" in json.loads(body)["error"]["message"]
    for sock in held:
        sock.close()
    time.sleep(0.3)
    await healthy_initialize(broker.url)
    log = broker.log_text()
    assert log.count("connection limit reached") == 1, "one warning per episode"


@pytest.mark.anyio
async def test_silent_connections_are_closed_and_free_their_places(backend_factory, broker_factory) -> None:
    limit = 4
    broker = broker_factory(backend_factory(), extra_args=("--max-connections", str(limit)))
    port = broker.process.port
    time.sleep(0.5)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit)]  # connect, send nothing
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port)) as extra:
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(extra)[0] == 503
    started = time.monotonic()
    for sock in silent:  # the broker closes each at the 10 s header timeout
        sock.settimeout(15)
        assert sock.recv(1) == b"", "a silent connection got bytes"
        sock.close()
    assert time.monotonic() - started < 12
    await healthy_initialize(broker.url)


@pytest.mark.anyio
async def test_out_of_file_descriptors_backs_off_and_recovers(processes, backend_factory) -> None:
    backend = backend_factory()
    port = free_port()
    argv = [
        "bash", "-c", 'ulimit -n 64 && exec "$@"', "broker",
        broker_binary(), "--listen", f"127.0.0.1:{port}", "--upstream", backend.url, "--admin-listen", "off",
    ]  # fmt: skip
    env = {"BROKER_SIGNING_KEY": SIGNING_KEY, "RUST_LOG": "info", "NO_COLOR": "1"}
    broker = processes.spawn("broker", argv, port, env=env)
    held = []
    for _ in range(100):  # more than the broker can have open: the rest wait in the accept queue
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    time.sleep(2.0)
    log = broker.log_text()
    assert log.count("accept failed") == 1, "one warning while out of file descriptors, no spin"
    for sock in held:
        sock.close()
    time.sleep(1.5)
    await healthy_initialize(f"http://127.0.0.1:{port}/mcp")
    assert "accepting connections again" in broker.log_text()


@pytest.mark.anyio
async def test_request_bodies_past_the_inflight_budget_get_503(backend_factory, broker_factory) -> None:
    mib = 1024 * 1024
    broker = broker_factory(
        backend_factory(),
        extra_args=("--max-body", str(mib), "--max-inflight-body-bytes", str(2 * mib), "--body-timeout", "20s"),
    )
    port = broker.process.port
    slow = []
    for _ in range(2):  # two bodies of 1 MiB on their way: the budget is spoken for
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request_head(port, "POST", "/mcp", mib) + b"{")
        slow.append(sock)
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port)) as third:
        # Refused before a byte is kept; the body is read and thrown away, so the 503 is readable.
        third.sendall(request_head(port, "POST", "/mcp", mib) + b" " * mib)
        status, headers, body = read_response(third)
    assert status == 503, (status, body)
    assert headers.get("retry-after") == "1"
    assert "request bytes" in json.loads(body)["error"]["message"]
    for sock in slow:
        sock.close()
    time.sleep(0.3)
    # The budget came back: a real request with a body goes through.
    await healthy_initialize(broker.url)
