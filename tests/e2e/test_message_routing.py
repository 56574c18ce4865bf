"""Every MCP message reaches the session that owns it, now that one work backend session serves many
client MCP sessions: parallel connector calls whose JSON-RPC ids are all the same small number,
server-to-client requests (elicitation, sampling) answered from another MCP session or replica,
cancellations of bound calls, and project-scoped requests other than ``tools/call``. Each is audited
against the example backend's own log.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from pydantic import AnyUrl

from e2e_helpers import (
    ToolReply,
    assert_audit_clean,
    assert_selected,
    call,
    initialize_body,
    mcp_session,
    reconnecting_reply,
    rpc_body,
    rpc_headers,
    tools_call_body,
)

pytestmark = pytest.mark.anyio

STORES = [pytest.param(True, id="redis"), pytest.param(False, id="memory")]
WIRES = [pytest.param(False, id="sse"), pytest.param(True, id="json")]
SELECT = "select_project_for_session"
MODERN = "2026-07-28"


async def connector_call(http: httpx.AsyncClient, url: str, token: str, tool: str, args: dict) -> dict:
    """One turn as Claude's connectors make it: a fresh MCP session whose ids start at 0, the call
    with id 1. Returns the JSON-RPC reply the client got."""
    init = initialize_body("claude-ai", request_id=0)
    response = await http.post(url, headers=rpc_headers(token), json=init)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = await http.post(url, headers=rpc_headers(token, session_id), json=note)
    assert response.status_code == 202, response.text
    response = await http.post(url, headers=rpc_headers(token, session_id), json=tools_call_body(tool, args, request_id=1))
    assert response.status_code == 200, response.text
    return rpc_body(response)


def reply_text(reply: dict) -> str:
    assert "result" in reply, f"expected a result, got {reply}"
    return "\n".join(c.get("text", "") for c in reply["result"].get("content", []))


@pytest.mark.parametrize("json_response", WIRES)
@pytest.mark.parametrize("redis", STORES)
async def test_parallel_connector_calls_each_get_their_own_reply(make_stack, redis: bool, json_response: bool) -> None:
    """After one select, 100 parallel connector calls (each a fresh MCP session, each with id 1, each
    with its own arguments) share the work session's backend session: 100 replies, each its own, and
    the backend ran each call exactly once."""
    stack = make_stack(redis=redis, json_response=json_response)
    token = "e2e-token-parallel-connectors"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-ai", SELECT, {"name": "atlas"}), "atlas")
    stack.backend.clear_audit()
    replies: dict[int, dict] = {}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as http:

        async def one(i: int) -> None:
            args = {"content": f"content-{i}", "topic": f"topic-{i}"}
            replies[i] = await connector_call(http, stack.url, token, "lock_context", args)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
    assert len(replies) == 100
    for i, reply in replies.items():
        assert reply["id"] == 1, reply
        text = reply_text(reply)
        assert f"locked topic=topic-{i}" in text and "project=atlas header=atlas" in text, (i, text)
    audit = stack.backend.audit()
    assert_audit_clean(audit, {"atlas"})
    ran = sorted(entry["args"]["topic"] for entry in audit if entry["tool"] == "lock_context")
    assert ran == sorted(f"topic-{i}" for i in range(100)), f"the backend ran {len(ran)} calls: {ran}"


# ------------------------------------------------------------------------ server-to-client requests


@asynccontextmanager
async def answering_session(url: str, token: str, client_name: str, topic_answers: dict[str, bool] | None = None):
    """A Python SDK 1.x client session that answers elicitation (accept, ``confirm`` per topic) and
    sampling (``summary-of-<text>``) the way Claude Code and VS Code do."""

    async def elicit(_context, params: types.ElicitRequestParams):
        topic = params.message.split()[1]
        return types.ElicitResult(action="accept", content={"confirm": (topic_answers or {}).get(topic, True)})

    async def sample(_context, params: types.CreateMessageRequestParams):
        text = params.messages[0].content.text
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"summary-of-{text}"), model="test-model"
        )

    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(30.0, read=60.0))
    async with http, streamable_http_client(url, http_client=http) as (read, write, _):
        info = types.Implementation(name=client_name, version="1.0")
        async with ClientSession(read, write, client_info=info, elicitation_callback=elicit, sampling_callback=sample) as session:
            with anyio.fail_after(30):
                await session.initialize()
            yield session


@pytest.mark.parametrize("redis", STORES)
async def test_bound_tools_that_elicit_or_sample_complete_on_fresh_sessions(make_stack, redis: bool) -> None:
    """After one select, 6 parallel fresh client sessions (ids all alike) call a tool that elicits and
    one that samples: each server request reaches the client whose call caused it, its answer reaches
    the work backend session that asked, and every call completes with its own answer."""
    stack = make_stack(redis=redis)
    token = "e2e-token-eliciting-connectors"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    stack.backend.clear_audit()
    answers = {f"topic-{i}": i % 2 == 0 for i in range(6)}
    replies: dict[int, tuple[ToolReply, ToolReply]] = {}

    async def one(i: int) -> None:
        async with answering_session(stack.url, token, "claude-code", answers) as session:
            confirmed = await call(session, "confirm_lock", {"content": f"c{i}", "topic": f"topic-{i}"})
            summary = await call(session, "summarize", {"text": f"text-{i}"})
            replies[i] = (confirmed, summary)

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
    for i, (confirmed, summary) in replies.items():
        assert not confirmed.is_error and f"topic=topic-{i} confirmed={i % 2 == 0}" in confirmed.text, confirmed.text
        assert "project=atlas header=atlas" in confirmed.text, confirmed.text
        assert not summary.is_error and f"summary=summary-of-text-{i}" in summary.text, summary.text
    marks = sorted(e["tool"] for e in stack.backend.audit() if e["tool"].startswith(("confirm_lock:", "summarize:")))
    expected = sorted(
        [f"confirm_lock:topic-{i}:{'confirmed' if i % 2 == 0 else 'accept'}" for i in range(6)]
        + [f"summarize:summary-of-text-{i}" for i in range(6)]
    )
    assert marks == expected
    assert_audit_clean(stack.backend.audit(), {"atlas"})


async def first_server_request(lines) -> dict:
    """The first JSON-RPC request (method and id) on an SSE reply stream's lines."""
    async for line in lines:
        if line.startswith("data:") and line[5:].strip():
            message = json.loads(line[5:])
            if "method" in message and "id" in message:
                return message
    raise AssertionError("the stream ended without a server request")


async def test_a_forged_or_foreign_answer_reaches_no_backend(make_stack) -> None:
    """A server request's id is sealed for the principal whose call caused it: answered with another
    principal's credential, or altered, it is refused (400) and the backend still waits; the right
    client's answer then completes the call."""
    stack = make_stack(redis=False)
    owner, intruder = "e2e-token-owner", "e2e-token-intruder"
    assert_selected(await reconnecting_reply(stack.url, owner, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        from e2e_helpers import raw_initialize

        mine = await raw_initialize(http, stack.url, owner, "claude-code")
        theirs = await raw_initialize(http, stack.url, intruder, "claude-code")
        body = tools_call_body("confirm_lock", {"content": "c", "topic": "secret"}, request_id=1)
        async with http.stream("POST", stack.url, headers=rpc_headers(owner, mine), json=body) as stream:
            lines = stream.aiter_lines()
            asked = await first_server_request(lines)
            assert asked["method"] == "elicitation/create" and str(asked["id"]).startswith("msb-s."), asked
            answer = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"confirm": True}}}
            foreign = await http.post(stack.url, headers=rpc_headers(intruder, theirs), json=answer)
            assert foreign.status_code == 400 and "another client" in foreign.text, foreign.text
            forged = {**answer, "id": asked["id"][:-3] + "AAA"}
            refused = await http.post(stack.url, headers=rpc_headers(owner, mine), json=forged)
            assert refused.status_code == 400 and "altered" in refused.text, refused.text
            assert not any(e["tool"].startswith("confirm_lock:") for e in stack.backend.audit())
            accepted = await http.post(stack.url, headers=rpc_headers(owner, mine), json=answer)
            assert accepted.status_code == 202, accepted.text
            rest = "\n".join([line async for line in lines])
        assert '"id":1' in rest.replace(" ", "") and "confirmed=True" in rest, rest
    assert [e["tool"] for e in stack.backend.audit() if e["tool"].startswith("confirm_lock:")] == ["confirm_lock:secret:confirmed"]


# ------------------------------------------------------------------------------------ cancellation


async def wait_for_mark(backend, mark: str, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not any(e["tool"] == mark for e in backend.audit()):
            await anyio.sleep(0.1)


@pytest.mark.parametrize(
    "how", ["notification", "notification-via-another-replica", "closed-stream"], ids=lambda h: h
)
async def test_a_cancelled_bound_call_stops_at_the_backend(make_stack, broker_factory, how: str) -> None:
    """A bound call runs on its work session's backend session, not the client's own: its
    cancellation (a notifications/cancelled on the client's session, sent to this replica or another,
    or the client closing the call's reply stream) reaches that backend session, which stops it."""
    stack = make_stack(redis=True)
    other = broker_factory(stack.backend, redis=stack.redis)
    token = "e2e-token-cancelling-client"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    stack.backend.clear_audit()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        from e2e_helpers import raw_initialize

        session = await raw_initialize(http, stack.url, token, "claude-code")
        body = tools_call_body("wait", {"seconds": 20}, request_id=1)
        async with http.stream("POST", stack.url, headers=rpc_headers(token, session), json=body) as stream:
            assert stream.status_code == 200
            with anyio.fail_after(10):
                while not any(e["tool"] == "wait" for e in stack.backend.audit()):
                    await anyio.sleep(0.1)
            if how != "closed-stream":
                url = other.url if how == "notification-via-another-replica" else stack.url
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "user"}}
                sent = await http.post(url, headers=rpc_headers(token, session), json=cancel)
                assert sent.status_code == 202, sent.text
                await wait_for_mark(stack.backend, "wait:cancelled")
        await wait_for_mark(stack.backend, "wait:cancelled")
    assert not any(e["tool"] == "wait:finished" for e in stack.backend.audit())
    assert_audit_clean(stack.backend.audit(), {"atlas"})


# ------------------------------------------------------------------------ project-scoped requests


@pytest.mark.parametrize("redis", STORES)
async def test_a_project_scoped_resource_read_after_a_reconnect(make_stack, redis: bool) -> None:
    """A resource whose content depends on the selected project, read from a fresh MCP session after
    the select: it runs on the work session's backend session, so on the project (not the backend's
    "project selection required")."""
    stack = make_stack(redis=redis)
    token = "e2e-token-resource-reader"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    locked = await reconnecting_reply(stack.url, token, "claude-code", "lock_context", {"content": "plan-b", "topic": "roadmap"})
    assert not locked.is_error, locked.text
    async with mcp_session(stack.url, token, "claude-code") as (session, _):
        with anyio.fail_after(30):
            read = await session.read_resource(AnyUrl("notes://roadmap"))
    text = read.contents[0].text
    assert "project=atlas header=atlas notes=plan-b" in text, text
    assert_audit_clean(stack.backend.audit(), {"atlas"})


async def test_an_answer_through_another_replica_reaches_the_backend_session_that_asked(make_stack, broker_factory) -> None:
    """Two replicas in front of one backend: a bound call that elicits runs through the first, its
    client answers on a fresh MCP session through the second (a reconnect behind a round-robin
    balancer), and the answer reaches the work backend session that asked: no shared lookup, the
    sealed id names it."""
    stack = make_stack(redis=True)
    other = broker_factory(stack.backend, redis=stack.redis)
    token = "e2e-token-round-robin"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        from e2e_helpers import raw_initialize

        first = await raw_initialize(http, stack.url, token, "claude-code")
        body = tools_call_body("confirm_lock", {"content": "c", "topic": "handoff"}, request_id=1)
        async with http.stream("POST", stack.url, headers=rpc_headers(token, first), json=body) as stream:
            lines = stream.aiter_lines()
            asked = await first_server_request(lines)
            second = await raw_initialize(http, other.url, token, "claude-code")
            answer = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"confirm": True}}}
            accepted = await http.post(other.url, headers=rpc_headers(token, second), json=answer)
            assert accepted.status_code == 202, accepted.text
            rest = "\n".join([line async for line in lines])
        assert "topic=handoff confirmed=True" in rest and "project=atlas header=atlas" in rest, rest
    marks = [e["tool"] for e in stack.backend.audit() if e["tool"].startswith("confirm_lock:")]
    assert marks == ["confirm_lock:handoff:confirmed"]


# ------------------------------------------------------------------ the official clients, legacy era


# Legacy era: server requests on the call's stream, answered by POST. Modern era (auto: the clients
# go sessionless against the broker, which bridges them onto the legacy backend): the call is
# parked, answered input_required, and completed by the client's retry with inputResponses.
CLIENTS = ["ts-sdk-1", "ts-sdk-2-legacy", "python-sdk-2-legacy", "ts-sdk-2-auto", "python-sdk-2-auto"]


async def run_client(kind: str, scenario: dict) -> list[ToolReply]:
    """Runs one official SDK client driver; returns its call steps' replies."""
    from e2e_helpers import (
        modern_reply,
        run_modern_client,
        run_ts_client_async,
        run_ts_v2_client,
        ts_reply,
        ts_v2_reply,
    )

    mode = "auto" if kind.endswith("auto") else "legacy"
    if kind == "ts-sdk-1":
        return [ts_reply(line) for line in await run_ts_client_async(scenario)]
    if kind.startswith("ts-sdk-2"):
        lines = await run_ts_v2_client({**scenario, "mode": mode})
        assert all((line.get("version") == MODERN) == (mode == "auto") for line in lines), lines
        return [ts_v2_reply(line) for line in lines]
    lines = await run_modern_client({**scenario, "mode": mode})
    assert all((line.get("era") == "modern") == (mode == "auto") for line in lines), lines
    return [modern_reply(line) for line in lines]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("redis", STORES)
async def test_official_clients_answer_a_bound_tool_that_elicits_and_samples(make_stack, redis: bool, kind: str) -> None:
    """The official SDK clients' elicitation and sampling callbacks, on a fresh MCP session after the
    select (made by another client of the same UI): the bound tool's requests reach the client, its
    answers the work backend session that asked, and both calls complete on the project."""
    stack = make_stack(redis=redis)
    token = f"e2e-token-official-{kind}"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    stack.backend.clear_audit()
    scenario = {
        "url": stack.url,
        "token": token,
        "client_name": "claude-code",
        "answers": {"confirm": True},
        "steps": [
            {"call": "confirm_lock", "args": {"content": "c", "topic": kind}},
            {"call": "summarize", "args": {"text": kind}},
        ],
    }
    confirmed, summary = await run_client(kind, scenario)
    assert not confirmed.is_error and f"topic={kind} confirmed=True" in confirmed.text, confirmed.text
    assert "project=atlas header=atlas" in confirmed.text, confirmed.text
    assert not summary.is_error and f"summary=summary-of-{kind}" in summary.text, summary.text
    marks = sorted(e["tool"] for e in stack.backend.audit() if ":" in e["tool"])
    assert marks == sorted([f"confirm_lock:{kind}:confirmed", f"summarize:summary-of-{kind}"])


def modern_call(name: str, args: dict, request_id: int, extra: dict | None = None) -> tuple[dict, dict]:
    """A 2026-07-28 tools/call by hand: (headers without credential, body)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "version": "1.0"},
    }
    params = {"name": name, "arguments": args, "_meta": meta, **(extra or {})}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }
    return headers, {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_a_parked_call_completes_when_its_retry_lands_on_another_replica(make_stack, broker_factory) -> None:
    """A modern client in front of a legacy backend whose bound tool elicits: replica A answers
    input_required (the elicitation under a sealed key, a sealed requestState); the client retries
    with inputResponses through replica B, which delivers the answer to the backend session that
    asked and answers with the call's result, which A left in Redis."""
    stack = make_stack(redis=True)
    other = broker_factory(stack.backend, redis=stack.redis)
    token = "e2e-token-modern-round-trips"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
        headers, body = modern_call("confirm_lock", {"content": "c", "topic": "rounds"}, 1)
        first = rpc_body(await http.post(stack.url, headers={**headers, **auth}, json=body))
        result = first["result"]
        assert first["id"] == 1 and result["resultType"] == "input_required", first
        (key, asked), = result["inputRequests"].items()
        assert asked["method"] == "elicitation/create" and key.startswith("msb-s."), result
        assert result["requestState"].startswith("msb-r."), result
        retry = {"inputResponses": {key: {"action": "accept", "content": {"confirm": True}}}, "requestState": result["requestState"]}
        headers, body = modern_call("confirm_lock", {"content": "c", "topic": "rounds"}, 2, retry)
        second = rpc_body(await http.post(other.url, headers={**headers, **auth}, json=body))
    assert second["id"] == 2 and second["result"]["resultType"] == "complete", second
    text = second["result"]["content"][0]["text"]
    assert "topic=rounds confirmed=True" in text and "project=atlas header=atlas" in text, text
    marks = [e["tool"] for e in stack.backend.audit() if e["tool"].startswith("confirm_lock:")]
    assert marks == ["confirm_lock:rounds:confirmed"]


async def test_a_legacy_client_answers_a_modern_only_backend_that_asks(modern_backend_factory, broker_factory, redis_server) -> None:
    """A legacy client (Python SDK 1.x, with its elicitation callback) in front of a backend that
    speaks only 2026-07-28: the backend's input_required becomes a real elicitation/create on the
    call's reply stream, the client's answer (through another replica) is handed to the replica
    holding the call, which retries it with inputResponses; the client gets the tool's result."""
    backend = modern_backend_factory(modern_only=True)
    first = broker_factory(backend, redis=redis_server)
    second = broker_factory(backend, redis=redis_server)
    token = "e2e-token-legacy-to-modern"
    assert_selected(await reconnecting_reply(first.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    async with answering_session(first.url, token, "claude-code", {"sdk": True}) as session:
        confirmed = await call(session, "confirm_lock", {"content": "c", "topic": "sdk"})
    assert not confirmed.is_error and "topic=sdk confirmed=True" in confirmed.text, confirmed.text
    assert "project=atlas header=atlas" in confirmed.text, confirmed.text
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        from e2e_helpers import raw_initialize

        # The backend asks only clients that declared elicitation (else 400, as the spec wants).
        init = initialize_body("claude-code")
        init["params"]["capabilities"] = {"elicitation": {}}
        opened = await http.post(first.url, headers=rpc_headers(token), json=init)
        session_id = opened.headers["mcp-session-id"]
        body = tools_call_body("confirm_lock", {"content": "c", "topic": "raw"}, request_id=1)
        async with http.stream("POST", first.url, headers=rpc_headers(token, session_id), json=body) as stream:
            lines = stream.aiter_lines()
            asked = await first_server_request(lines)
            assert asked["method"] == "elicitation/create" and asked["id"].startswith("msb-q."), asked
            other = await raw_initialize(http, second.url, token, "claude-code")
            answer = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"confirm": False}}}
            accepted = await http.post(second.url, headers=rpc_headers(token, other), json=answer)
            assert accepted.status_code == 202, accepted.text
            rest = "\n".join([line async for line in lines])
        assert '"id":1' in rest.replace(" ", "") and "topic=raw confirmed=False" in rest, rest
    marks = sorted(e["tool"] for e in backend.audit() if e["tool"].startswith("confirm_lock:"))
    assert marks == ["confirm_lock:raw:not", "confirm_lock:sdk:confirmed"]


# --------------------------------------------------------- three replicas, per-request round robin


@asynccontextmanager
async def answering_without_affinity(url: str, token: str):
    """A Python SDK 1.x session that opens a new connection for every request (so a round-robin
    balancer spreads them over the replicas) and answers elicitation (accept) and sampling."""

    async def elicit(_context, _params):
        return types.ElicitResult(action="accept", content={"confirm": True})

    async def sample(_context, params: types.CreateMessageRequestParams):
        text = f"summary-of-{params.messages[0].content.text}"
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=text), model="m")

    http = httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10.0, read=30.0),
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    async with http, streamable_http_client(url, http_client=http) as (read, write, _):
        info = types.Implementation(name="claude-code", version="1")
        async with ClientSession(read, write, client_info=info, elicitation_callback=elicit, sampling_callback=sample) as session:
            with anyio.fail_after(10):
                await session.initialize()
            yield session


async def test_three_replicas_round_robin_tools_that_ask_with_one_restarted(backend_factory, broker_factory, redis_server) -> None:
    """Three replicas, each with its own backend (sidecars), one Redis, behind a balancer that sends
    every request to the next replica; one replica killed (SIGKILL) and restarted mid-run. Clients on
    fresh sessions call a bound tool that elicits and one that samples: the answers, POSTed through
    whichever replica the balancer picks, reach the backend session that asked (directly, or left in
    Redis for the replica relaying that stream). No call gets another's answer or project; every
    confirmed lock ran exactly once; calls cut by the kill are counted, not lost silently."""
    from test_replicas import RoundRobin

    backends = [backend_factory() for _ in range(3)]
    brokers = [broker_factory(b, redis=redis_server) for b in backends]
    balancer = RoundRobin([b.process.port for b in brokers])
    conversations = {f"e2e-rr-asking-{n}": project for n, project in enumerate(("atlas", "zephyr", "linkedin", "innkeeper"))}
    outcomes: Counter[str] = Counter()
    confirmed_topics: dict[str, str] = {}
    try:
        for token, project in conversations.items():
            assert_selected(await reconnecting_reply(balancer.url, token, "claude-code", SELECT, {"name": project}), project)
        stop = anyio.current_time() + 10.0

        async def conversation(token: str, project: str) -> None:
            n = 0
            while anyio.current_time() < stop:
                n += 1
                topic = f"{token}-{n}"
                try:
                    async with answering_without_affinity(balancer.url, token) as session:
                        with anyio.fail_after(15):
                            confirmed = await call(session, "confirm_lock", {"content": topic, "topic": topic})
                            summary = await call(session, "summarize", {"text": topic})
                except Exception as exc:  # noqa: BLE001 - a call cut by the kill is counted
                    outcomes[f"transport:{type(exc).__name__}"] += 1
                    continue
                tag = f"project={project} header={project}"
                if not confirmed.is_error and f"topic={topic} confirmed=True" in confirmed.text and tag in confirmed.text:
                    outcomes["confirmed"] += 1
                    confirmed_topics[topic] = project
                else:
                    outcomes[f"confirm:{confirmed.text[:60]}"] += 1
                if not summary.is_error and f"summary=summary-of-{topic}" in summary.text and tag in summary.text:
                    outcomes["sampled"] += 1
                else:
                    outcomes[f"sample:{summary.text[:60]}"] += 1

        def kill_and_restart() -> None:
            import time as clock

            clock.sleep(3.0)
            brokers[1].process.proc.kill()
            brokers[1].process.stop()
            clock.sleep(2.0)
            brokers[1].process.start()

        async with anyio.create_task_group() as group:
            for token, project in conversations.items():
                group.start_soon(conversation, token, project)
            group.start_soon(anyio.to_thread.run_sync, kill_and_restart)
        audit = [e for b in backends for e in b.audit()]
        marks = Counter(e["tool"] for e in audit if e["tool"].startswith("confirm_lock:"))
        report = {"outcomes": dict(outcomes), "connections_per_replica": list(balancer.connections.values())}
        print("ROUND ROBIN ASKING REPORT " + json.dumps(report))
        wrong = [k for k in outcomes if k.startswith(("confirm:", "sample:"))]
        assert not wrong, report
        assert outcomes["confirmed"] >= 8 and outcomes["sampled"] >= 8, report
        for topic in confirmed_topics:
            assert marks[f"confirm_lock:{topic}:confirmed"] == 1, (topic, marks)
        assert all(count == 1 for count in marks.values()), marks
        assert_audit_clean(audit, set(conversations.values()))
        assert brokers[1].process.starts == 2
    finally:
        balancer.close()


# ------------------------------------------------------------ what a work backend session sends alone


@pytest.mark.parametrize("redis", STORES)
async def test_what_a_work_backend_session_sends_outside_a_call_reaches_its_clients(make_stack, redis: bool) -> None:
    """A log message a bound tool sends outside its call (on the backend session's GET stream, tied to
    no request) comes from the work backend session, which no client holds a GET stream on: it reaches
    the GET stream of a client of that work session, and not another credential's client."""
    stack = make_stack(redis=redis)
    token, stranger = "e2e-token-listener", "e2e-token-stranger"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-code", SELECT, {"name": "atlas"}), "atlas")
    assert_selected(await reconnecting_reply(stack.url, stranger, "claude-code", SELECT, {"name": "zephyr"}), "zephyr")
    heard: dict[str, list[str]] = {token: [], stranger: []}

    @asynccontextmanager
    async def listening(who: str):
        async def log(params: types.LoggingMessageNotificationParams) -> None:
            heard[who].append(str(params.data))

        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {who}"}, timeout=httpx.Timeout(30.0, read=60.0))
        async with http, streamable_http_client(stack.url, http_client=http) as (read, write, _):
            info = types.Implementation(name="claude-code", version="1.0")
            async with ClientSession(read, write, client_info=info, logging_callback=log) as session:
                with anyio.fail_after(30):
                    await session.initialize()
                yield session

    async with listening(token), listening(stranger):
        await anyio.sleep(1.0)  # their GET streams are open
        said = await reconnecting_reply(stack.url, token, "claude-code", "announce", {"text": "hello-from-the-work-session"})
        assert not said.is_error and "project=atlas header=atlas" in said.text, said.text
        with anyio.fail_after(10):
            while not heard[token]:
                await anyio.sleep(0.1)
        await anyio.sleep(0.5)
    assert heard[token] == ["atlas: hello-from-the-work-session"], heard
    assert heard[stranger] == [], heard
