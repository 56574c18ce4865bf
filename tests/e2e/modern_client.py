"""Drive the official Python SDK 2.x client (``mcp.Client``) through a scenario, for the end-to-end tests.

Runs under the ``.venv-modern`` interpreter (pinned ``mcp`` 2.x; the test process itself runs ``mcp``
1.x). Reads a JSON scenario on stdin:

    {"url": ..., "token": ..., "client_name": ..., "mode": "auto" | "legacy",
     "headers": {...}, "steps": [{"call": TOOL, "args": {...}, "meta": {...}} | {"list": true}],
     "answers": {"confirm": true}}   # optional: answer elicitation and sampling (``summary-of-<text>``)

and prints one JSON line per step: ``{"is_error": bool, "texts": [...], "era": "modern"|"legacy"}``
(``{"tools": {name: inputSchema}}`` for a list step), or ``{"error": "..."}`` for a step that raised.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import httpx2
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation


async def run(scenario: dict[str, Any]) -> None:
    headers = dict(scenario.get("headers") or {})
    if scenario.get("token"):
        headers["Authorization"] = f"Bearer {scenario['token']}"
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0))
    transport = streamable_http_client(scenario["url"], http_client=http)
    info = Implementation(name=scenario.get("client_name", "modern-client"), version="1.0")
    callbacks: dict[str, Any] = {}
    if (answers := scenario.get("answers")) is not None:

        async def elicit(_context: Any, _params: Any) -> types.ElicitResult:
            return types.ElicitResult(action="accept", content={"confirm": answers.get("confirm", True)})

        async def sample(_context: Any, params: Any) -> types.CreateMessageResult:
            text = params.messages[0].content.text
            content = types.TextContent(type="text", text=f"summary-of-{text}")
            return types.CreateMessageResult(role="assistant", content=content, model="test-model")

        callbacks = {"elicitation_callback": elicit, "sampling_callback": sample}
    client = Client(transport, mode=scenario.get("mode", "auto"), client_info=info, **callbacks)
    async with http, client:
        era = "modern" if client.session.discover_result is not None else "legacy"
        for step in scenario["steps"]:
            try:
                with anyio.fail_after(30):
                    if step.get("list"):
                        listed = await client.list_tools()
                        line: dict[str, Any] = {"tools": {t.name: t.input_schema for t in listed.tools}, "era": era}
                    else:
                        result = await client.call_tool(step["call"], step.get("args") or {}, meta=step.get("meta"))
                        texts = [c.text for c in result.content if hasattr(c, "text")]
                        line = {"is_error": bool(result.is_error), "texts": texts, "era": era}
            except Exception as error:  # noqa: BLE001 - reported to the test, which decides
                line = {"error": f"{type(error).__name__}: {error}", "era": era}
            print(json.dumps(line), flush=True)


def main() -> None:
    anyio.run(run, json.load(sys.stdin))


if __name__ == "__main__":
    main()
