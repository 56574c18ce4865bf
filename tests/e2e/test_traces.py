"""OpenTelemetry traces (issue 20) from outside: the broker exports OTLP/HTTP protobuf to a real
receiver (this module's, decoding with the official proto definitions, `opentelemetry-proto`), and
one tool call's trace reads client span -> broker server span -> store span -> broker client span
-> backend (the example backend records the `traceparent` it received, in the header and in
`params._meta`), with the MCP semantic conventions' names and attributes. A client's context is
continued from the header or from `params._meta`; a client that sends none starts a new trace; an
exporter that is down changes nothing for clients and its losses are counted.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from conftest import free_port
from e2e_helpers import (
    ToolReply,
    assert_on_project,
    assert_selected,
    raw_call,
    raw_initialize,
)

pytestmark = pytest.mark.anyio

TOKEN = "e2e-traces"
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span it was sent, flattened."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.services: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
                    receiver.services.add(str(resource.get("service.name", "")))
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(
                                {
                                    "trace": span.trace_id.hex(),
                                    "id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "name": span.name,
                                    "kind": span.kind,
                                    "attributes": {a.key: value(a.value) for a in span.attributes},
                                }
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str, want: str, timeout: float = 10.0) -> list[dict]:
        """The spans of `trace_id` once one named `want` arrived (the exporter batches for 1 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = [s for s in self.spans if s["trace"] == trace_id]
            if any(s["name"] == want for s in spans):
                time.sleep(0.2)  # its children may come in the same or the next batch
                return [s for s in self.spans if s["trace"] == trace_id]
            time.sleep(0.05)
        raise AssertionError(f"no span {want!r} of trace {trace_id} in {timeout}s; got {[s['name'] for s in self.spans]}")

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def tracing_env(endpoint: str) -> dict[str, str]:
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}


async def call(http: httpx.AsyncClient, url: str, session: str, tool: str, args: dict | None = None, headers: dict | None = None, meta: dict | None = None) -> ToolReply:
    return await raw_call(http, url, TOKEN, session, tool, args, headers, meta)


def session_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def one(spans: list[dict], **match) -> dict:
    found = [s for s in spans if all(s.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one span with {match}, got {len(found)}: {[(s['name'], s['kind']) for s in spans]}"
    return found[0]


async def test_one_tool_calls_trace_from_client_to_backend(redis_server, backend_factory, broker_factory, receiver) -> None:
    backend = backend_factory()
    broker = broker_factory(backend, redis=redis_server, env=tracing_env(f"http://127.0.0.1:{receiver.port}"))
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        assert_selected(await call(http, broker.url, session, "select_project_for_session", {"name": "linkedin"}), "linkedin")
        reply = await call(http, broker.url, session, "get_last_handover", headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
        assert_on_project(reply, "linkedin")

    spans = receiver.trace(trace_id, "tools/call get_last_handover")
    server = one(spans, kind=SERVER)
    assert server["name"] == "tools/call get_last_handover"
    assert server["parent"] == client_span, "the broker's server span continues the client's"
    attributes = server["attributes"]
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "get_last_handover"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["jsonrpc.request.id"] == "2"
    assert attributes["mcp.protocol.version"]
    # The session's own id (the `sid` the broker's signed Mcp-Session-Id carries), never the token.
    assert attributes["mcp.session.id"] == session_claims(session)["sid"]
    assert attributes["project"] == "linkedin" and attributes["work_session"], attributes
    assert attributes["http.response.status_code"] == 200

    store = one(spans, name="session_store lookup")
    assert store["parent"] == server["id"], "the store lookup is a child of the server span"
    upstream = one(spans, kind=CLIENT, name="tools/call get_last_handover")
    assert upstream["parent"] == server["id"], "the request to the backend is a child of the server span"
    assert upstream["attributes"]["gen_ai.tool.name"] == "get_last_handover"

    audited = [e for e in backend.audit() if e["tool"] == "get_last_handover"][-1]
    carried = f"00-{trace_id}-{upstream['id']}-01"
    assert audited["traceparent"] == carried, "the backend's parent is the broker's client span (header)"
    assert audited["meta_traceparent"] == carried, "... and in params._meta"
    assert receiver.services == {"session-broker"}


async def test_context_in_meta_is_continued_and_none_starts_a_trace(backend_factory, broker_factory, receiver) -> None:
    backend = backend_factory()
    broker = broker_factory(backend, env=tracing_env(f"http://127.0.0.1:{receiver.port}"))
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        meta = {"traceparent": f"00-{trace_id}-{client_span}-01"}
        reply = await call(http, broker.url, session, "select_project_for_session", {"name": "atlas"}, meta=meta)
        assert_selected(reply, "atlas")
        assert_on_project(await call(http, broker.url, session, "get_last_handover"), "atlas")

    spans = receiver.trace(trace_id, "tools/call select_project_for_session")
    server = one(spans, kind=SERVER)
    assert server["parent"] == client_span, "the context in params._meta is continued"
    audited = [e for e in backend.audit() if e["tool"] == "select_project_for_session"][-1]
    upstream = one(spans, kind=CLIENT, name="tools/call select_project_for_session")
    assert audited["meta_traceparent"] == f"00-{trace_id}-{upstream['id']}-01"

    # The call without context: a trace of its own, rooted at the broker's server span.
    deadline = time.monotonic() + 10
    while not (roots := [s for s in receiver.spans if s["name"] == "tools/call get_last_handover" and s["kind"] == SERVER]):
        assert time.monotonic() < deadline, "the uncontexted call's span never arrived"
        time.sleep(0.05)
    assert roots[0]["parent"] == "" and roots[0]["trace"] != trace_id


async def test_an_exporter_that_is_down_changes_nothing_for_clients(backend_factory, broker_factory) -> None:
    backend = backend_factory()
    broker = broker_factory(backend, env=tracing_env(f"http://127.0.0.1:{free_port()}"))  # nothing listens
    async with httpx.AsyncClient(timeout=10.0) as http:
        session = await raw_initialize(http, broker.url, TOKEN, "claude-code")
        assert_selected(await call(http, broker.url, session, "select_project_for_session", {"name": "dementia"}), "dementia")
        started = time.monotonic()
        for _ in range(20):
            assert_on_project(await call(http, broker.url, session, "get_last_handover"), "dementia")
        elapsed = time.monotonic() - started
        assert elapsed < 5.0, f"20 calls took {elapsed:.2f}s with the exporter down"
        deadline = time.monotonic() + 10
        while True:
            metrics = (await http.get(f"{broker.base}/metrics")).text
            lost = [line for line in metrics.splitlines() if line.startswith("session_broker_trace_spans_dropped_total{")]
            if any(float(line.rsplit(" ", 1)[1]) > 0 for line in lost):
                break
            assert time.monotonic() < deadline, f"no dropped spans counted: {lost}"
            time.sleep(0.2)
