"""Scale-out on a real Redis Cluster (three masters, three replicas, started by the `redis_cluster`
fixture): the core end-to-end flows of the other modules, run unchanged with every broker on the
cluster (this module's `redis_server` is the cluster, so `make_stack` and the finalization tests use
it), and a failover of every master during load that loses no binding and mixes nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import anyio
import httpx
import pytest

import test_finalization as finalization
import test_isolation as isolation
import test_never_wrong_project as never_wrong
import test_reconnects as reconnects
import test_restarts as restarts
from e2e_helpers import assert_selected, project_calls, reconnecting_reply

pytestmark = pytest.mark.anyio

PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas")
STORE_DOWN = "session-broker: the session store is unavailable"


@pytest.fixture
def redis_server(redis_cluster):
    """Every broker of this module runs on the Redis Cluster."""
    return redis_cluster


@pytest.fixture
def receiver_factory():
    made = []

    def make(fail_first: int = 0):
        made.append(finalization.WebhookReceiver(fail_first))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


# ------------------------------------------------------------------ the core flows, on the cluster


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_production_log_on_a_cluster(make_stack, json_response: bool) -> None:
    await reconnects.test_production_log_replayed(make_stack, json_response)


async def test_typescript_client_on_a_cluster(make_stack) -> None:
    await reconnects.test_typescript_client_production_log(make_stack)


async def test_surfaces_and_principals_isolated_on_a_cluster(make_stack) -> None:
    await isolation.test_two_surfaces_one_key_never_mix(make_stack)
    await isolation.test_second_principal_isolated(make_stack)


async def test_unkeyed_conversations_guarded_on_a_cluster(make_stack) -> None:
    await isolation.test_unkeyed_conversations_guarded(make_stack)


async def test_concurrent_handles_on_a_cluster(make_stack) -> None:
    await never_wrong.test_concurrent_calls_with_two_handles_on_one_mcp_session(make_stack, True, "0")


async def test_a_select_racing_with_calls_on_a_cluster(make_stack) -> None:
    await never_wrong.test_a_select_racing_with_calls(make_stack, True)


async def test_broker_restart_keeps_binding_on_a_cluster(make_stack) -> None:
    await restarts.test_broker_restart_keeps_binding_redis(make_stack)


async def test_handover_on_expiry_on_a_cluster(backend_factory, broker_factory, redis_server) -> None:
    await finalization.test_handover_tool_is_called_on_expiry_with_the_right_project(
        backend_factory, broker_factory, redis_server
    )


async def test_flaky_webhook_on_a_cluster(backend_factory, broker_factory, redis_server, receiver_factory) -> None:
    await finalization.test_webhook_failing_twice_still_gets_the_event(
        backend_factory, broker_factory, redis_server, receiver_factory
    )


# ----------------------------------------------------------------------- failover during load


async def test_every_master_fails_over_during_load_without_losing_or_mixing(
    backend_factory, broker_factory, redis_cluster
) -> None:
    """12 principals each select a project, then call it on a fresh MCP session per call (as Claude's
    connectors do) for 12 s while each of the three masters in turn hands its slots to its replica
    (`CLUSTER FAILOVER`). Every call either runs on its principal's project or is refused; after the
    failovers every principal's binding is still there; the backend's audit shows no call on a
    wrong project."""
    backend = backend_factory()
    broker = broker_factory(backend, redis=redis_cluster)
    expected = {f"e2e-failover-{n}": PROJECTS[n % len(PROJECTS)] for n in range(12)}
    for token, project in expected.items():
        reply = await reconnecting_reply(broker.url, token, "claude-ai", "select_project_for_session", {"name": project})
        assert_selected(reply, project)

    outcomes: Counter[str] = Counter()
    markers: dict[str, str] = {}
    failovers: list[float] = []
    stop = time.monotonic() + 12.0

    async def worker(token: str, project: str) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            marker = f"{token}-{n}"
            markers[marker] = project
            try:
                with anyio.fail_after(20):
                    reply = await reconnecting_reply(
                        broker.url, token, "claude-ai", "lock_context", {"content": marker, "topic": "failover"}
                    )
            except Exception as error:  # noqa: BLE001 - transport failures are counted, not raised
                outcomes[f"transport:{type(error).__name__}"] += 1
                continue
            if not reply.is_error:
                tag = f"project={project} header={project}"
                outcomes["ok" if tag in reply.text else "wrong_project"] += 1
            elif reply.text.startswith(STORE_DOWN):
                outcomes["refused:store_unavailable"] += 1
            else:
                outcomes[f"refused:{reply.text[:60]}"] += 1

    def fail_over_every_master() -> None:
        time.sleep(2.0)
        roles = redis_cluster.roles()
        for port in [p for p, role in roles.items() if role == "slave"]:
            failovers.append(redis_cluster.failover(port))
            time.sleep(1.5)

    async with anyio.create_task_group() as group:
        for token, project in expected.items():
            group.start_soon(worker, token, project)
        group.start_soon(anyio.to_thread.run_sync, fail_over_every_master)

    # After the failovers, every binding is still there (no select again).
    lost = []
    for token, project in expected.items():
        reply = await reconnecting_reply(broker.url, token, "claude-ai", "get_last_handover")
        if reply.is_error or f"project={project} header={project}" not in reply.text:
            lost.append((token, reply.text[:80]))

    audit = project_calls(backend.audit())
    wrong_in_audit = [
        e for e in audit
        if e["tool"] == "lock_context"
        and not (e["session_project"] == e["header_project"] == markers.get(e["args"].get("content")))
    ]
    calls = sum(outcomes.values())
    report = {
        "calls": calls,
        "outcomes": dict(outcomes),
        "failover_seconds": [round(s, 2) for s in failovers],
        "lost_bindings": len(lost),
        "wrong_project_in_audit": len(wrong_in_audit),
        "audited_calls": len([e for e in audit if e["tool"] == "lock_context"]),
    }
    print("FAILOVER REPORT " + json.dumps(report))
    assert len(failovers) == 3, report
    assert outcomes["wrong_project"] == 0 and not wrong_in_audit, (report, wrong_in_audit[:3])
    assert not lost, (report, lost)
    assert outcomes["ok"] >= calls // 2, report
    unexpected = [k for k in outcomes if k not in ("ok", "refused:store_unavailable") and not k.startswith("transport:")]
    assert not unexpected, report
    # The backend ran exactly the calls that succeeded (a refused call never reached it).
    assert report["audited_calls"] == outcomes["ok"], report
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{broker.base}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
