"""What a newcomer meets first: `--help`, a port already in use, and the health endpoints.

A port in use (main or admin) stops the broker with exit status 2 and one line on stderr naming the
flag, before anything logs `listening`. The main listener's `/healthz` and `/readyz` answer plain
text with a content type; the admin API's `/healthz` answers JSON like the rest of that API.
"""

from __future__ import annotations

import os
import socket
import subprocess
from types import SimpleNamespace

import httpx

from conftest import broker_binary, free_port

UPSTREAM = "http://127.0.0.1:9/mcp"  # never contacted: the broker stops before, or only health is asked
TEXT_PLAIN = "text/plain; charset=utf-8"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs `session-broker <args>` to completion, with no BROKER_* variable from the test's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update({"RUST_LOG": "info", "NO_COLOR": "1"})
    return subprocess.run([broker_binary(), *args], capture_output=True, text=True, timeout=30, env=env)


def taken_port() -> socket.socket:
    """A listening socket on a free loopback port (close it when done)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_help_is_for_users_and_lists_the_subcommands():
    shown = run("--help")
    assert shown.returncode == 0, shown
    text = shown.stdout
    assert "hyper" not in text and "interception" not in text, text
    for command in ("sessions", "token inspect", "keygen", "check"):
        assert f"session-broker {command}" in text, f"--help does not show `session-broker {command}`:\n{text}"
    assert "docs/operations.md" in text, text


def test_main_port_in_use_exits_2_with_one_line_before_listening():
    with taken_port() as taken:
        port = taken.getsockname()[1]
        clash = run("--listen", f"127.0.0.1:{port}", "--upstream", UPSTREAM, "--admin-listen", f"127.0.0.1:{free_port()}")
    assert clash.returncode == 2, clash
    lines = clash.stderr.strip().splitlines()
    assert len(lines) == 1, clash.stderr
    assert lines[0].startswith(f"session-broker: --listen 127.0.0.1:{port}: cannot listen: "), clash.stderr
    assert "Os {" not in clash.stderr and "kind:" not in clash.stderr, clash.stderr  # not debug-quoted
    assert "listening" not in clash.stdout + clash.stderr, clash


def test_admin_port_in_use_exits_2_before_listening():
    with taken_port() as taken:
        port = taken.getsockname()[1]
        clash = run("--listen", f"127.0.0.1:{free_port()}", "--upstream", UPSTREAM, "--admin-listen", f"127.0.0.1:{port}")
    assert clash.returncode == 2, clash
    lines = clash.stderr.strip().splitlines()
    assert len(lines) == 1, clash.stderr
    assert lines[0].startswith(f"session-broker: --admin-listen 127.0.0.1:{port}: cannot listen: "), clash.stderr
    assert "listening" not in clash.stdout + clash.stderr, clash


def test_health_endpoints_say_what_they_answer(broker_factory):
    broker = broker_factory(SimpleNamespace(url=UPSTREAM))
    with httpx.Client(timeout=10) as http:
        healthz = http.get(f"{broker.base}/healthz")
        assert (healthz.status_code, healthz.headers.get("content-type"), healthz.text) == (200, TEXT_PLAIN, "ok\n")
        readyz = http.get(f"{broker.base}/readyz")
        assert (readyz.status_code, readyz.headers.get("content-type"), readyz.text) == (200, TEXT_PLAIN, "ready\n")
        admin = http.get(f"{broker.admin_url}/healthz")
        assert admin.status_code == 200 and admin.headers.get("content-type") == "application/json", admin.headers
        assert admin.json() == {"status": "ok"}
