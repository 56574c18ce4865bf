"""The store grows with live work sessions, never with the number of calls (issue 8, "Store size").

Claude's connectors open a fresh MCP session for nearly every tool call. Through a real redis-server:
- CALLS connector-style calls (initialize + notifications/initialized + tools/call, the call resolved
  through the surface) in one work session may add at most MAX_NEW_KEYS keys: the issue's target is
  "10k connector calls add <= 10 keys", run here with fewer calls so it stays quick;
- one live work session (a select and a call, as a connector makes them) costs at most 1 KiB of
  Redis memory (`MEMORY USAGE` of every key it added).

The first holds: a touch counts a connector's MCP session without linking it, so calls add no keys.
The second is still missed (1,834 bytes, mostly per-principal keys a new principal pays in full, and
the bucket's deadlines kept as a skiplist since a member is one byte over the listpack limit: see
docs/performance.md, "Issue 19, third step", for the key layout that meets it and why it takes two
releases), so it is `xfail(strict=True)` on the size check alone (any other failure fails): it flips,
and must then lose the mark, when the store meets the target.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import httpx
import pytest

from e2e_helpers import (
    assert_on_project,
    assert_selected,
    raw_initialize,
    reconnecting_reply,
    rpc_body,
    rpc_headers,
    tools_call_body,
    ToolReply,
)

pytestmark = pytest.mark.anyio

CALLS = 200
MAX_NEW_KEYS = 10
MAX_BYTES_PER_WORK_SESSION = 1024
WORK_SESSIONS = 20


class StoreGrowth(AssertionError):
    """The store grew past the issue's target (the only failure the xfail marks expect)."""


class RedisCli:
    """redis-cli against the test's redis-server; commands are piped, one reply per line."""

    def __init__(self, url: str) -> None:
        self.binary = shutil.which("redis-cli") or pytest.fail("redis-cli is missing (it comes with redis-server)")
        self.port = url.rsplit(":", 1)[1].split("/")[0]

    def run(self, *commands: str) -> list[str]:
        proc = subprocess.run([self.binary, "-p", self.port], input="\n".join(commands) + "\n",
                              capture_output=True, text=True, check=True, timeout=60)
        return proc.stdout.splitlines()

    def keys(self) -> set[str]:
        out = subprocess.run([self.binary, "-p", self.port, "--scan"], capture_output=True, text=True,
                             check=True, timeout=60)
        return set(out.stdout.split())

    def bytes_of(self, keys: set[str]) -> dict[str, int]:
        ordered = sorted(keys)
        replies = self.run(*(f"MEMORY USAGE {key} SAMPLES 0" for key in ordered)) if ordered else []
        return {key: int(reply) if reply.strip().isdigit() else 0 for key, reply in zip(ordered, replies)}


def kinds(keys: set[str]) -> str:
    """Keys counted by their schema prefix (the part before the first `:` after the hash tag)."""
    counted = Counter(key.split("}", 1)[1].lstrip(":").split(":", 1)[0] if "}" in key else key for key in keys)
    return ", ".join(f"{kind}: {n}" for kind, n in counted.most_common())


async def connector_call(http: httpx.AsyncClient, url: str, token: str, tool: str) -> ToolReply:
    """One connector turn: a fresh MCP session, one tools/call on it."""
    session = await raw_initialize(http, url, token, "claude-ai")
    response = await http.post(url, headers=rpc_headers(token, session), json=tools_call_body(tool, {}))
    assert response.status_code == 200, f"{tool}: {response.status_code} {response.text}"
    result = rpc_body(response)["result"]
    return ToolReply(bool(result.get("isError")), [c["text"] for c in result["content"] if c.get("type") == "text"])


async def test_connector_calls_add_at_most_ten_keys(make_stack) -> None:
    stack = make_stack(json_response=True)
    token = "e2e-token-store-size"
    assert_selected(await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session",
                                             {"name": "linkedin"}), "linkedin")
    redis = RedisCli(stack.redis.url)
    before = redis.keys()
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(CALLS):
            reply = await connector_call(http, stack.url, token, "get_last_handover")
            assert_on_project(reply, "linkedin", f"connector call {n}")
    added = redis.keys() - before
    if len(added) > MAX_NEW_KEYS:
        raise StoreGrowth(f"{CALLS} connector calls in one work session added {len(added)} keys "
                          f"(at most {MAX_NEW_KEYS}): {kinds(added)}")


@pytest.mark.xfail(raises=StoreGrowth, strict=True,
                   reason="issue 8: a live work session costs more than 1 KiB of Redis")
async def test_a_live_work_session_costs_at_most_one_kib(make_stack) -> None:
    stack = make_stack(json_response=True)
    redis = RedisCli(stack.redis.url)
    before = redis.keys()
    base = sum(redis.bytes_of(before).values())
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(WORK_SESSIONS):
            token = f"e2e-token-store-bytes-{n}"
            select = await reconnecting_reply(stack.url, token, "claude-ai", "select_project_for_session",
                                              {"name": "linkedin"})
            assert_selected(select, "linkedin")
            assert_on_project(await connector_call(http, stack.url, token, "get_last_handover"), "linkedin")
    after = redis.bytes_of(redis.keys())
    per_session = (sum(after.values()) - base) / WORK_SESSIONS
    if per_session > MAX_BYTES_PER_WORK_SESSION:
        added = set(after) - before
        raise StoreGrowth(f"{per_session:.0f} bytes of Redis per live work session (at most "
                          f"{MAX_BYTES_PER_WORK_SESSION}); {len(added)} keys for {WORK_SESSIONS}: {kinds(added)}")
