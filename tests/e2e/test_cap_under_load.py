"""The per-credential cap under load: 200 selects at once from one credential, each on its own surface
(its own X-Anthropic-Client), under --max-work-sessions 10, bind exactly 10 work sessions, on the memory
store and on Redis. The cap is enforced where work sessions are created (inside the store's bind), so the
selects racing past the early check on the lookup are refused there with a tool error.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from e2e_helpers import initialize_body, rpc_body, rpc_headers, tools_call_body

pytestmark = pytest.mark.anyio

TOKEN = "e2e-cap-under-load-credential"
CAP = 10
SELECTS = 200
SELECT_DELAY = 0.5
CONNECTIONS = 64  # client-side connections; the selects still overlap at the broker
PROJECTS = ("linkedin", "innkeeper", "dementia", "atlas", "zephyr")  # the example backend's
TOO_MANY = f"session-broker: this credential already has {CAP} live work sessions"


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_concurrent_selects_bind_exactly_the_cap(store, request, backend_factory, broker_factory) -> None:
    redis = request.getfixturevalue("redis_server") if store == "redis" else None
    # Each select waits at the backend, so the selects overlap between the broker's lookup and its bind.
    backend = backend_factory(extra_args=("--select-delay", str(SELECT_DELAY)))
    broker = broker_factory(backend, redis=redis, extra_args=("--max-work-sessions", str(CAP)))
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    timeout = httpx.Timeout(120.0)
    sessions: dict[int, str] = {}
    replies: dict[int, dict] = {}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:

        async def open_session(n: int) -> None:
            surface = {"X-Anthropic-Client": f"load-{n}"}
            http_headers = rpc_headers(TOKEN, **surface)
            response = await http.post(broker.url, headers=http_headers, json=initialize_body(f"load-client-{n}"))
            assert response.status_code == 200, response.text
            sessions[n] = response.headers["mcp-session-id"]
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            response = await http.post(broker.url, headers=rpc_headers(TOKEN, sessions[n], **surface), json=note)
            assert response.status_code == 202, response.text

        async def select(n: int, start: anyio.Event) -> None:
            await start.wait()
            headers = rpc_headers(TOKEN, sessions[n], **{"X-Anthropic-Client": f"load-{n}"})
            body = tools_call_body("select_project_for_session", {"name": PROJECTS[n % len(PROJECTS)]}, 1000 + n)
            response = await http.post(broker.url, headers=headers, json=body)
            assert response.status_code == 200, f"select {n}: {response.status_code} {response.text}"
            replies[n] = rpc_body(response)

        async with anyio.create_task_group() as group:
            for n in range(SELECTS):
                group.start_soon(open_session, n)
        assert len(sessions) == SELECTS
        start = anyio.Event()
        async with anyio.create_task_group() as group:
            for n in range(SELECTS):
                group.start_soon(select, n, start)
            start.set()

        bound, refused, other = [], [], []
        for n, reply in replies.items():
            result = reply.get("result", {})
            texts = [c.get("text", "") for c in result.get("content", [])]
            if not result.get("isError") and any(t.startswith("work_session: ") for t in texts):
                bound.append(n)
            elif result.get("isError") and texts and texts[0].startswith(TOO_MANY):
                refused.append(n)
            else:
                other.append((n, reply))
        assert not other, f"neither bound nor refused by the cap: {other[:3]}"
        assert len(bound) == CAP, f"{len(bound)} selects bound under a cap of {CAP}"
        assert len(refused) == SELECTS - CAP

        listed = await http.get(f"{broker.admin_url}/sessions", headers={"X-Principal-Credential": TOKEN})
        assert listed.status_code == 200, listed.text
        live = [s for s in listed.json()["work_sessions"] if s["live"]]
        assert len(live) == CAP, f"{len(live)} live work sessions in the {store} store under a cap of {CAP}"
        assert sorted(s["project"] for s in live) == sorted(PROJECTS[n % len(PROJECTS)] for n in bound)

