"""Faults in the middle of a select (issue 17, item 4): a client that leaves while its select runs at
the backend, and a replica killed (SIGKILL) while a select runs through it. The backend may have
switched the backend session the select ran on; the broker never bound it. Every later call, through
every replica, must run on the project the broker asserts: the backend's own audit log shows, for
every project call, the project selected on the backend session it ran on (`session_project`) equal
to the broker's `X-MCP-Project` (`header_project`).

The select runs on a backend session opened for it alone (docs/design.md, "Backend sessions"): an
unbound select leaves that session unrecorded, so no later call can reach it.
"""

from __future__ import annotations

import re
import signal
import time

import anyio
import httpx
import pytest

from e2e_helpers import (
    ToolReply,
    assert_audit_clean,
    project_calls,
    raw_initialize,
    rpc_body,
    rpc_headers,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-faults-mid-select"
SELECT = "select_project_for_session"
SELECT_DELAY = 2.0
OLD, NEW = "linkedin", "zephyr"
HANDLE_RE = re.compile(r"^work_session: (\S+)$")


def reply_of(response: httpx.Response, rid: int) -> ToolReply:
    assert response.status_code == 200, f"request {rid}: {response.status_code} {response.text}"
    message = rpc_body(response)
    assert message.get("id") == rid and "result" in message, message
    result = message["result"]
    return ToolReply(bool(result.get("isError")), [c["text"] for c in result["content"] if c.get("type") == "text"])


async def post(http: httpx.AsyncClient, url: str, session: str, tool: str, args: dict, rid: int) -> ToolReply:
    return reply_of(await http.post(url, headers=rpc_headers(TOKEN, session), json=tools_call_body(tool, args, rid)), rid)


def project_of(reply: ToolReply) -> str:
    """The project a project call ran on; the backend's session and the broker's header must agree."""
    assert not reply.is_error, reply.text
    match = re.search(r"project=(\S+) header=(\S+)", reply.text)
    assert match, reply.text
    assert match.group(1) == match.group(2), f"backend session on {match.group(1)}, broker asserts {match.group(2)}"
    return match.group(1)


async def bound_session(http: httpx.AsyncClient, url: str) -> tuple[str, str]:
    """An MCP session that selected OLD and ran a call on it: (session id, handle)."""
    session = await raw_initialize(http, url, TOKEN, "claude-code")
    selected = await post(http, url, session, SELECT, {"name": OLD}, 2)
    assert not selected.is_error, selected.text
    handle = next((m.group(1) for t in selected.texts if (m := HANDLE_RE.match(t.strip()))), None)
    assert handle, selected.texts
    assert project_of(await post(http, url, session, "lock_context", {"content": "before", "topic": "t"}, 3)) == OLD
    return session, handle


async def select_reached_backend(backend, project: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["tool"] == SELECT and e["args"].get("name") == project for e in backend.audit()):
            return
        await anyio.sleep(0.05)
    pytest.fail(f"the select of {project} never reached the backend")


async def later_calls(urls: list[str], session: str, handle: str) -> list[str]:
    """The project of a call on the same MCP session, and of one with the handle on a fresh MCP
    session, through each replica."""
    projects = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as http:
        for n, url in enumerate(urls):
            args = {"content": f"after-{n}", "topic": "t"}
            projects.append(project_of(await post(http, url, session, "lock_context", args, 10 + n)))
            fresh = await raw_initialize(http, url, TOKEN, "claude-code")
            projects.append(project_of(await post(http, url, fresh, "lock_context", {**args, "work_session": handle}, 20 + n)))
    return projects


def abandoned_sessions(backend) -> set[str]:
    """The backend sessions the select of NEW ran on."""
    return {e["mcp_session"] for e in backend.audit() if e["tool"] == SELECT and e["args"].get("name") == NEW}


async def selected_at_backend(backend, session: str) -> str | None:
    """What the backend itself has selected on `session`, asked directly (not through a broker). Its
    audit then holds a call without the broker's headers: ask only after the audit was checked."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        body = tools_call_body("explore_context_tree", {}, 99)
        result = rpc_body(await http.post(backend.url, headers=rpc_headers(None, session), json=body))["result"]
    match = re.search(r"project=(\S+)", result["content"][0]["text"])
    return None if result.get("isError") or not match else match.group(1)


def assert_backend_and_broker_agree(backend, never_used: set[str] = frozenset()) -> None:
    audit = backend.audit()
    assert_audit_clean(audit, {OLD, NEW})
    calls = project_calls(audit)
    assert calls, "no project call reached the backend"
    for entry in calls:
        assert entry["session_project"] == entry["header_project"], entry
        assert entry["mcp_session"] not in never_used, f"a call ran on the unbound select's backend session: {entry}"


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_a_client_that_leaves_mid_select_leaves_backend_and_broker_agreeing(
    backend_factory, broker_factory, redis_server, json_response: bool
) -> None:
    backend = backend_factory(json_response=json_response, extra_args=("--select-delay", str(SELECT_DELAY)))
    a = broker_factory(backend, redis=redis_server)
    b = broker_factory(backend, redis=redis_server)
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as http:
        session, handle = await bound_session(http, a.url)

    # The client sends a select of NEW and goes away while the backend is still selecting.
    left_at = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as http:
        with anyio.move_on_after(SELECT_DELAY / 4) as scope:
            await http.post(a.url, headers=rpc_headers(TOKEN, session), json=tools_call_body(SELECT, {"name": NEW}, 4))
    assert scope.cancelled_caught, "the select answered before the client left"
    await select_reached_backend(backend, NEW)
    await anyio.sleep(max(0.0, left_at + SELECT_DELAY + 0.5 - time.monotonic()))  # the backend has finished it

    projects = await later_calls([a.url, b.url], session, handle)
    assert projects == [OLD] * 4, projects
    assert not [line for line in a.log_text().splitlines() if " bound " in line and f"project={NEW}" in line]
    abandoned = abandoned_sessions(backend)
    assert len(abandoned) == 1, abandoned
    assert_backend_and_broker_agree(backend, never_used=abandoned)
    # With an SSE reply the broker tells the backend to cancel the select it abandoned; a JSON reply is
    # awaited whole, so the backend finishes it: that backend session is on NEW, and unused.
    switched = await selected_at_backend(backend, next(iter(abandoned)))
    print(f"{'JSON' if json_response else 'SSE'}: the client left mid-select; the backend session it ran on is "
          f"on {switched}; later calls through A and B ran on {projects}")
    if json_response:
        assert switched == NEW, "the case this test is for: the backend switched, the broker never bound"

    # The conversation is not stuck: it can select NEW now, on either replica.
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as http:
        again = await post(http, b.url, session, SELECT, {"name": NEW}, 30)
        assert not again.is_error, again.text
        assert project_of(await post(http, a.url, session, "lock_context", {"content": "x", "topic": "t"}, 31)) == NEW


async def test_a_replica_killed_mid_select_leaves_backend_and_broker_agreeing(
    backend_factory, broker_factory, redis_server
) -> None:
    backend = backend_factory(extra_args=("--select-delay", str(SELECT_DELAY)))
    a = broker_factory(backend, redis=redis_server)
    b = broker_factory(backend, redis=redis_server)
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as http:
        session, handle = await bound_session(http, a.url)

    failed: list[BaseException] = []

    async def select_new() -> None:
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as http:
                await http.post(a.url, headers=rpc_headers(TOKEN, session), json=tools_call_body(SELECT, {"name": NEW}, 4))
        except httpx.TransportError as error:
            failed.append(error)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(select_new)
            await select_reached_backend(backend, NEW)
            a.process.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
    assert failed, "the select through the killed replica got an answer"
    a.process.proc.wait(timeout=5)
    a.process.proc = None
    await anyio.sleep(max(0.0, killed_at + SELECT_DELAY + 0.5 - time.monotonic()))  # the backend has finished it

    through_b = await later_calls([b.url], session, handle)
    a.process.start()  # the killed replica back, same port
    through_both = await later_calls([a.url, b.url], session, handle)
    # Killed before the backend answered, it never bound NEW: the work session stays on OLD everywhere.
    assert through_b == [OLD] * 2 and through_both == [OLD] * 4, (through_b, through_both)
    abandoned = abandoned_sessions(backend)
    assert len(abandoned) == 1, abandoned
    assert_backend_and_broker_agree(backend, never_used=abandoned)
    # Nobody told the backend to cancel: it finished the select, so its session there is on NEW.
    switched = await selected_at_backend(backend, next(iter(abandoned)))
    print(f"a replica killed mid-select: the backend session it ran on is on {switched}; later calls through B "
          f"{through_b}, then through A restarted and B {through_both}")
    assert switched == NEW, switched
