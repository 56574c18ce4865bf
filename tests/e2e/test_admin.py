"""The admin API through the operator subcommands, end to end: a real redis-server, the example backend
and the broker; a project selected with the Python SDK, then `session-broker sessions list|show|rebind|end`,
`token inspect` and `keygen` run as subprocesses. Rebinding moves the next tool call to the new project;
ending finalizes the work session at the next sweep, with its handover tool, once.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time

import anyio
import httpx
import pytest

from conftest import SIGNING_KEY, Broker, broker_binary, free_port, free_ports, port_open
from e2e_helpers import assert_on_project, assert_selected, reconnecting_reply

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
FINALIZE = ("--on-expire-tool", "write_handover", "--idle-ttl", "60s", "--sweep-interval", "100ms")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `session-broker <args>` to completion; no BROKER_* variable leaks in from the test's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    return subprocess.run(
        [broker_binary(), *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout)


def wait_for_admin(broker: Broker) -> None:
    deadline = time.monotonic() + 10
    while not port_open(broker.admin_port):
        assert time.monotonic() < deadline, f"admin API not listening on {broker.admin_url}\n{broker.log_text()[-4000:]}"
        time.sleep(0.05)


async def wait_until(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await anyio.sleep(0.1)


async def test_sessions_list_show_rebind_end_and_token_inspect(backend_factory, broker_factory, redis_server):
    backend = backend_factory()
    broker = broker_factory(backend, redis=redis_server, extra_args=FINALIZE)
    wait_for_admin(broker)
    credential = "e2e-admin-credential-alice"
    url = ("--admin-url", broker.admin_url)
    handle = assert_selected(
        await reconnecting_reply(broker.url, credential, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )

    # list, by credential (flag), then by hash.
    listing = ok_json(cli("sessions", "list", "--credential", credential, *url))
    assert [s["project"] for s in listing["work_sessions"]] == ["linkedin"], listing
    principal = listing["principal"]
    ws = listing["work_sessions"][0]["id"]
    assert ok_json(cli("sessions", "list", "--principal", principal, *url)) == listing

    # show, by credential (environment).
    shown = ok_json(cli("sessions", "show", ws, *url, env={"BROKER_ADMIN_CREDENTIAL": credential}))
    assert shown["id"] == ws and shown["project"] == "linkedin" and shown["surface"] == "claude-ai", shown
    assert shown["live"] is True and shown["finalized"] is False and shown["mcp_sessions"] >= 1, shown
    assert shown["last_active_ms"] >= shown["created_ms"] > 0, shown
    missing = cli("sessions", "show", "0" * 32, "--credential", credential, *url)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr, missing
    stranger = cli("sessions", "show", ws, "--credential", "e2e-admin-credential-mallory", *url)
    assert stranger.returncode == 1 and "HTTP 404" in stranger.stderr, stranger

    # rebind: the next call, keyed or not, works on the new project.
    rebound = ok_json(cli("sessions", "rebind", ws, "innkeeper", "--credential", credential, *url))
    assert rebound["project"] == "innkeeper" and rebound["live"] is True, rebound
    reply = await reconnecting_reply(broker.url, credential, "claude-ai", "get_last_handover")
    assert_on_project(reply, "innkeeper", "unkeyed call after rebind")
    reply = await reconnecting_reply(broker.url, credential, "claude-ai", "lock_context", {"content": "x", "topic": "t", "work_session": handle})
    assert_on_project(reply, "innkeeper", "call with the handle after rebind")
    bad = cli("sessions", "rebind", ws, "bad\tproject", "--credential", credential, *url)
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr, bad

    # token inspect: the select reply's handle names this work session and principal.
    inspected = ok_json(cli("token", "inspect", handle, env={"BROKER_SIGNING_KEY": SIGNING_KEY}))
    assert inspected["kind"] == "handle", inspected
    claims = inspected["claims"]
    assert claims["ws"] == ws and claims["p"] == principal and claims["aud"] == "msb-handle", claims
    assert claims["exp"] > time.time(), claims
    wrong_key = cli("token", "inspect", handle, env={"BROKER_SIGNING_KEY": "another-signing-key-0123456789abcdef"})
    assert wrong_key.returncode == 1 and wrong_key.stdout.startswith("invalid: "), wrong_key
    head, payload, signature = handle.split(".")
    forged = f"{head}.{payload}.{signature[::-1]}"
    tampered = cli("token", "inspect", forged, env={"BROKER_SIGNING_KEY": SIGNING_KEY})
    assert tampered.returncode == 1 and tampered.stdout.startswith("invalid: "), tampered

    # end: finalized by the next sweep, with the handover tool on the (rebound) project, once.
    backend.clear_audit()
    ended = ok_json(cli("sessions", "end", ws, "--credential", credential, *url))
    assert ended["id"] == ws and ended["live"] is False, ended
    handovers = await wait_until(
        "the handover tool", lambda: [e for e in backend.audit() if e["tool"] == "write_handover"]
    )
    assert handovers[0]["session_project"] == "innkeeper" and handovers[0]["header_project"] == "innkeeper", handovers
    again = cli("sessions", "end", ws, "--credential", credential, *url)
    assert again.returncode == 1 and "HTTP 409" in again.stderr, again
    finalized = ok_json(cli("sessions", "show", ws, "--credential", credential, *url))
    assert finalized["finalized"] is True and finalized["live"] is False, finalized
    await anyio.sleep(1.0)
    assert len([e for e in backend.audit() if e["tool"] == "write_handover"]) == 1, "finalized twice"

    # The credential is never written to the broker's log.
    assert credential not in broker.log_text()


async def test_keygen_makes_keys_the_broker_and_inspect_accept(tmp_path):
    secret = cli("keygen")
    assert secret.returncode == 0, secret
    assert len(base64.b64decode(secret.stdout.strip(), validate=True)) == 48
    assert cli("keygen").stdout != secret.stdout, "two keygens gave one key"
    pem = cli("keygen", "--ed25519")
    assert pem.returncode == 0 and pem.stdout.startswith("-----BEGIN PRIVATE KEY-----"), pem
    key_file = tmp_path / "signing.pem"
    key_file.write_text(pem.stdout)
    # A well-formed token signed by another key is refused by name of the reason, not a crash.
    refused = cli("token", "inspect", "e30.e30.e30", "--signing-key-file", str(key_file))
    assert refused.returncode == 1 and refused.stdout.startswith("invalid: "), refused
    no_key = cli("token", "inspect", "e30.e30.e30")
    assert no_key.returncode == 2 and "--signing-key-file" in no_key.stderr, no_key


async def test_admin_token_is_required_when_configured(backend_factory, broker_factory, tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    broker = broker_factory(backend_factory(), extra_args=("--admin-token-file", str(token_file)))
    wait_for_admin(broker)
    credential = "e2e-admin-credential-bob"
    assert_selected(
        await reconnecting_reply(broker.url, credential, "claude-ai", "select_project_for_session", {"name": "atlas"}),
        "atlas",
    )
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{broker.admin_url}/healthz")).status_code == 401
        wrong = await http.get(f"{broker.admin_url}/healthz", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        assert wrong.status_code == 401 and wrong.json() == {"error": wrong.json()["error"]}
        right = await http.get(f"{broker.admin_url}/healthz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert right.status_code == 200 and right.json() == {"status": "ok"}
    refused = cli("sessions", "list", "--credential", credential, "--admin-url", broker.admin_url)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr, refused
    listing = ok_json(
        cli("sessions", "list", "--credential", credential, "--admin-url", broker.admin_url,
            env={"BROKER_ADMIN_TOKEN_FILE": str(token_file)})
    )
    assert [s["project"] for s in listing["work_sessions"]] == ["atlas"], listing
    assert ADMIN_TOKEN not in broker.log_text()


async def test_broker_refuses_an_exposed_or_taken_admin_port():
    upstream = "http://127.0.0.1:9/mcp"
    listen, admin = free_ports(2)
    exposed = cli("--listen", f"127.0.0.1:{listen}", "--upstream", upstream, "--admin-listen", f"0.0.0.0:{admin}")
    assert exposed.returncode == 2, exposed
    assert "not a loopback address" in exposed.stderr and "--admin-token-file" in exposed.stderr, exposed.stderr

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clash = cli("--listen", f"127.0.0.1:{free_port()}", "--upstream", upstream, "--admin-listen", f"127.0.0.1:{port}")
    assert clash.returncode == 2, clash
    assert f"--admin-listen 127.0.0.1:{port}" in clash.stderr, clash.stderr


async def test_a_web_page_cannot_drive_the_admin_api(backend_factory, broker_factory, redis_server):
    """The admin API on loopback without a token, attacked the ways a page the operator visits can: a
    DNS-rebound Host, a cross-site Origin, a `text/plain` JSON body. Each is refused and changes nothing;
    a rebind to a project the backend does not know is refused; a doubled credential header is a 400."""
    backend = backend_factory()
    broker = broker_factory(backend, redis=redis_server)
    wait_for_admin(broker)
    credential = "e2e-admin-credential-carol"
    assert_selected(
        await reconnecting_reply(broker.url, credential, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )
    who = {"X-Principal-Credential": credential}
    admin = broker.admin_url
    json_type = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as http:
        listing = await http.get(f"{admin}/sessions", headers=who)
        assert listing.status_code == 200, listing.text
        ws = listing.json()["work_sessions"][0]["id"]
        # DNS rebinding: the page's own name in Host, reading what a same-origin page could.
        for path in ("/sessions", "/dead-letters", "/healthz"):
            rebound = await http.get(f"{admin}{path}", headers={**who, "Host": f"rebound.attacker.example:{broker.admin_port}"})
            assert rebound.status_code == 403, (path, rebound.status_code, rebound.text)
        # A cross-site POST (fetch or form): refused whatever its content type.
        for kind, headers in {
            "cross-site json": {**who, **json_type, "Origin": "http://evil.example"},
            "cross-site form": {**who, "Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
            "null origin": {**who, **json_type, "Origin": "null"},
            "text/plain, no origin": {**who, "Content-Type": "text/plain"},
            "no content type": who,
        }.items():
            for action in ("end", "rebind"):
                response = await http.post(f"{admin}/sessions/{ws}/{action}", headers=headers, content=b'{"project": "innkeeper"}')
                assert response.status_code in (403, 415), (kind, action, response.status_code, response.text)
        # Its own origin, JSON: served (a read, so nothing changes).
        own = await http.get(f"{admin}/sessions/{ws}", headers={**who, "Origin": admin})
        assert own.status_code == 200 and own.json()["project"] == "linkedin" and own.json()["live"], own.text
        # Two credentials: which one counts would be a guess.
        two = [("X-Principal-Credential", credential), ("X-Principal-Credential", "e2e-admin-credential-mallory")]
        doubled = await http.get(f"{admin}/sessions", headers=two)
        assert doubled.status_code == 400 and "more than once" in doubled.json()["error"], doubled.text
        # A project the backend's select tool refuses is not bound.
        backend.clear_audit()
        unknown = await http.post(f"{admin}/sessions/{ws}/rebind", headers={**who, **json_type}, json={"project": "no-such-project"})
        assert unknown.status_code == 422 and "no-such-project" in unknown.json()["error"], unknown.text
        checked = [e for e in backend.audit() if e["tool"] == "select_project_for_session"]
        assert [e["args"] for e in checked] == [{"name": "no-such-project"}], checked
        after = await http.get(f"{admin}/sessions/{ws}", headers=who)
        assert after.json()["project"] == "linkedin" and after.json()["live"], after.text
        # A project it accepts is, through the admin's own request shape.
        known = await http.post(f"{admin}/sessions/{ws}/rebind", headers={**who, **json_type}, json={"project": "atlas"})
        assert known.status_code == 200 and known.json()["project"] == "atlas", known.text
    reply = await reconnecting_reply(broker.url, credential, "claude-ai", "get_last_handover")
    assert_on_project(reply, "atlas", "after the checked rebind")


async def test_a_rebind_is_checked_on_a_stateless_backend_too(make_stack, tmp_path):
    """A backend without MCP sessions is asked without one: an unknown project is refused, a known one
    bound, and the next call runs on it."""
    key_file = tmp_path / "assertion.key"
    key_file.write_text(SIGNING_KEY)
    stack = make_stack(redis=True, backend_args=("--stateless", "--assertion-key-file", str(key_file)))
    wait_for_admin(stack.broker)
    credential = "e2e-admin-credential-stateless"
    assert_selected(
        await reconnecting_reply(stack.url, credential, "claude-ai", "select_project_for_session", {"name": "linkedin"}),
        "linkedin",
    )
    who = {"X-Principal-Credential": credential, "Content-Type": "application/json"}
    admin = stack.broker.admin_url
    async with httpx.AsyncClient(timeout=30) as http:
        ws = (await http.get(f"{admin}/sessions", headers=who)).json()["work_sessions"][0]["id"]
        stack.backend.clear_audit()
        unknown = await http.post(f"{admin}/sessions/{ws}/rebind", headers=who, json={"project": "no-such-project"})
        assert unknown.status_code == 422, unknown.text
        known = await http.post(f"{admin}/sessions/{ws}/rebind", headers=who, json={"project": "atlas"})
        assert known.status_code == 200 and known.json()["project"] == "atlas", known.text
    checked = [e for e in stack.backend.audit() if e["tool"] == "select_project_for_session"]
    assert [(e["args"]["name"], e["header_project"]) for e in checked] == [
        ("no-such-project", "no-such-project"),
        ("atlas", "atlas"),
    ], checked
    assert_on_project(await reconnecting_reply(stack.url, credential, "claude-ai", "get_last_handover"), "atlas")
