"""Opens an MCP session on a target (initialize, initialized, select linkedin) and prints its id.

Used by bench/run to give wrk an established, bound session. Standard library only.
"""
import json
import sys
import urllib.request

HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "Authorization": "Bearer bench-credential",
}


def post(url, message, session=None):
    headers = dict(HEADERS)
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-06-18"
    request = urllib.request.Request(url, data=json.dumps(message).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("mcp-session-id"), response.read().decode()


def main(url):
    session, _ = post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "claude-code", "version": "1"}}})
    if not session:
        sys.exit(f"no session id from {url}")
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    _, body = post(url, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "select_project_for_session", "arguments": {"name": "linkedin"}}}, session)
    if "linkedin" not in body:
        sys.exit(f"select failed on {url}: {body[:300]}")
    print(session)


if __name__ == "__main__":
    main(sys.argv[1])
