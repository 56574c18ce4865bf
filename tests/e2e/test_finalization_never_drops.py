"""Finalization that never drops a work session: a sweeper that comes long after the deadline still
finalizes it exactly once; a poisoned event is retried a bounded number of times, then kept as a
dead letter (listed and replayed with `session-broker sessions`) while every other event flows; the
handover tool is called with the operator's credential and its backend session is closed.
"""

from __future__ import annotations

import json
import subprocess
import time

import anyio
import httpx
import pytest

from conftest import broker_binary
from e2e_helpers import assert_on_project, assert_selected, reconnecting_reply, rpc_headers, tools_call_body
from test_finalization import FAST, WebhookReceiver, select_as, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver():
    made = WebhookReceiver()
    yield made
    made.close()


async def test_a_late_sweeper_still_finalizes_exactly_once(backend_factory, broker_factory, redis_server, receiver):
    """The only broker dies before the deadline; nothing runs for longer than the idle TTL plus the
    grace; a broker that starts then finalizes the work session, once, with its data."""
    backend = backend_factory()
    late = ("--idle-ttl", "2s", "--finalize-grace", "1s", "--sweep-interval", "100ms",
            "--redeliver-after", "2s", "--on-expire-webhook", receiver.url)
    first = broker_factory(backend, redis=redis_server, extra_args=late)
    async with httpx.AsyncClient(timeout=10.0) as http:
        await select_as(http, first.url, "e2e-late-sweeper", "atlas")
    first.process.proc.kill()  # SIGKILL before the 2 s deadline: no sweeper anywhere now
    await anyio.sleep(4.5)  # past the deadline by more than the grace
    assert receiver.keys() == [], "nothing ran, so nothing can have been delivered"

    second = broker_factory(backend, redis=redis_server, extra_args=late)
    keys = await wait_until("the late finalization", receiver.keys, timeout=15)
    await anyio.sleep(1.5)  # a duplicate would show now
    assert receiver.keys() == keys and len(keys) == 1, receiver.keys()
    event = receiver.deliveries[0][1]["work_session"]
    assert event["project"] == "atlas" and event["calls"] == 1, event
    assert "finalized idle work sessions" in second.log_text()


def sessions_cli(broker, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [broker_binary(), "sessions", *args, "--admin-url", broker.admin_url],
        capture_output=True, text=True, timeout=30,
    )
    return proc.returncode, proc.stdout, proc.stderr


async def test_a_poisoned_event_is_dead_lettered_without_blocking_others_and_replays(
    backend_factory, broker_factory, redis_server, receiver
):
    backend = backend_factory()
    receiver.fail_projects = {"innkeeper"}
    broker = broker_factory(
        backend, redis=redis_server,
        extra_args=("--idle-ttl", "2s", "--sweep-interval", "100ms", "--redeliver-after", "300ms",
                    "--finalize-attempts", "2", "--on-expire-webhook", receiver.url),
    )
    async with httpx.AsyncClient(timeout=10.0) as http:
        await select_as(http, broker.url, "e2e-poisoned", "innkeeper")
        for n, project in enumerate(("linkedin", "atlas", "zephyr")):
            await select_as(http, broker.url, f"e2e-healthy-{n}", project)

    # The healthy events are delivered while the poisoned one keeps failing.
    await wait_until("three healthy deliveries", lambda: len(receiver.keys()) >= 3, timeout=20)
    assert sorted(b["work_session"]["project"] for _, b in receiver.deliveries) == ["atlas", "linkedin", "zephyr"]

    def dead_letters() -> list[dict]:
        code, out, err = sessions_cli(broker, "dead-letters")
        assert code == 0, err
        return json.loads(out)["dead_letters"]

    dead = await wait_until("the dead letter", dead_letters, timeout=20)
    assert len(dead) == 1, dead
    assert dead[0]["event"]["project"] == "innkeeper", dead
    assert dead[0]["deliveries"] == 2 and "HTTP 500" in dead[0]["reason"], dead
    async with httpx.AsyncClient(timeout=10.0) as http:
        metrics = (await http.get(f"{broker.base}/metrics")).text
    assert "session_broker_finalization_dead_letters_total 1" in metrics.splitlines(), "the dead letter is counted"
    # Bounded: two deliveries of three quick attempts each, then nothing more.
    await anyio.sleep(1.5)
    assert receiver.failed_projects == ["innkeeper"] * 6, receiver.failed_projects

    receiver.fail_projects = set()
    code, out, err = sessions_cli(broker, "replay", dead[0]["id"])
    assert code == 0, err
    assert json.loads(out)["replayed"] == dead[0]["id"]
    await wait_until("the replayed delivery", lambda: len(receiver.keys()) == 4, timeout=15)
    await anyio.sleep(1.0)
    assert len(receiver.keys()) == 4 and receiver.keys().count(dead[0]["event"]["work_session"]) == 1
    assert dead_letters() == []
    code, _, err = sessions_cli(broker, "replay", dead[0]["id"])
    assert code == 1 and "no such dead letter" in err, err


async def test_the_handover_tool_gets_the_operators_credential_and_its_session_is_closed(
    backend_factory, broker_factory, redis_server, tmp_path
):
    backend = backend_factory()
    credential = tmp_path / "handover.token"
    credential.write_text("handover-secret-token\n")
    broker = broker_factory(
        backend, redis=redis_server,
        extra_args=(*FAST, "--on-expire-tool", "write_handover", "--on-expire-tool-auth-file", str(credential)),
    )
    token = "e2e-handover-credential"
    assert_selected(
        await reconnecting_reply(broker.url, token, "claude-ai", "select_project_for_session", {"name": "dementia"}),
        "dementia",
    )
    assert_on_project(await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover"), "dementia")
    handovers = await wait_until(
        "the handover tool", lambda: [e for e in backend.audit() if e["tool"] == "write_handover"], timeout=20
    )
    assert len(handovers) == 1 and handovers[0]["session_project"] == "dementia", handovers
    assert handovers[0]["authorization"] == "Bearer handover-secret-token", handovers
    # Its backend session is gone once the finalizer is done with it (DELETE).
    session = handovers[0]["mcp_session"]

    async def closed() -> bool:
        async with httpx.AsyncClient(timeout=5.0) as http:
            reply = await http.post(backend.url, headers=rpc_headers(None, session), json=tools_call_body("list_projects", {}))
        return reply.status_code == 404

    deadline = time.monotonic() + 10
    while not await closed():
        assert time.monotonic() < deadline, f"the finalizer's backend session {session[:8]} is still open"
        await anyio.sleep(0.2)
