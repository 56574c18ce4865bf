"""A deliberately misbehaving MCP backend for the fault tests. Speaks just enough Streamable HTTP
(initialize, notifications, tools/list, tools/call) and then fails the way it is told to:

    python fault_backend.py --port P        # POST /mode {"mode": "..."} switches the behaviour

modes for tools/call: ok (SSE reply echoing the request id), 5xx, hang, sse-cut (headers and half an
event, then the connection closes), bad-json, bad-sse, 404 (every session unknown); big-init answers
initialize with 64 KiB of instructions.

It records the method, path and headers of every request it gets on any other path:
``GET /received`` lists them, ``DELETE /received`` forgets them.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"mode": "ok"}
LOCK = threading.Lock()
RECEIVED: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str = "application/json", extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def record(self) -> None:
        """Remembers this request's method, path and headers (every copy of each, names lowercased)."""
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        with LOCK:
            RECEIVED.append({"method": self.command, "path": self.path, "headers": headers})

    def received(self) -> bool:
        """Serves ``/received``; True when this request was for it."""
        if self.path != "/received":
            return False
        with LOCK:
            body = json.dumps(RECEIVED).encode()
            if self.command == "DELETE":
                RECEIVED.clear()
        self.reply(200, body)
        return True

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/mode":
            self.record()
        if self.path == "/mode":
            with LOCK:
                STATE["mode"] = json.loads(raw)["mode"]
            return self.reply(200, b"{}")
        if self.path.split("?")[0] != "/mcp":
            return self.reply(200, b"{}")  # a pass-through path
        message = json.loads(raw)
        if isinstance(message, list):  # a batch: each request answered ok
            replies = [{"jsonrpc": "2.0", "id": m.get("id"), "result": {}} for m in message if m.get("id") is not None]
            return self.reply(200, json.dumps(replies).encode()) if replies else self.reply(202, b"")
        method, rid = message.get("method"), message.get("id")
        with LOCK:
            mode = STATE["mode"]
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "fault", "version": "1"}}
            if mode == "big-init":  # a server with long instructions: each cached result weighs 64 KiB
                result["instructions"] = "i" * 65536
            body = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
            return self.reply(200, body, extra={"mcp-session-id": uuid.uuid4().hex})
        if mode == "404":
            return self.reply(404, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}')
        if rid is None:
            return self.reply(202, b"")
        if method == "tools/list":
            result = {"tools": [{"name": "probe", "inputSchema": {"type": "object", "properties": {}}}]}
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode())
        if mode == "5xx":
            return self.reply(503, b"overloaded", "text/plain")
        if mode == "hang":
            time.sleep(20)
            return self.reply(200, b"{}")
        if mode == "bad-json":
            return self.reply(200, b"{not json at all")
        if mode == "bad-sse":
            return self.reply(200, b"data: {broken\n\n", "text/event-stream")
        event = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": f"ok {rid}"}]}})
        if mode == "sse-cut":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", "1000")
            self.end_headers()
            self.wfile.write(f"event: message\ndata: {event[: len(event) // 2]}".encode())
            self.wfile.flush()
            self.close_connection = True
            return None
        return self.reply(200, f"event: message\ndata: {event}\n\n".encode(), "text/event-stream")

    def do_GET(self) -> None:  # noqa: N802
        if not self.received():
            self.record()
            self.reply(405, b"")

    def do_DELETE(self) -> None:  # noqa: N802
        if not self.received():
            self.record()
            self.reply(200, b"")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
    server.daemon_threads = True
    server.serve_forever()
