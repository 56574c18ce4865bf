-- wrk script for bench/run: one MCP tools/call per request on an established session.
-- Environment: SESSION (Mcp-Session-Id, from `mcp-load open`), TOOL (default get_last_handover),
-- ARGS (its arguments as JSON, default {}), EXPECT (text every reply must contain).
local tool = os.getenv("TOOL") or "get_last_handover"
local args = os.getenv("ARGS") or "{}"
local expect = os.getenv("EXPECT") or ""

wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool
  .. '","arguments":' .. args .. '}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer bench-credential"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
wrk.headers["Mcp-Session-Id"] = os.getenv("SESSION")

local bad = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, expect, 1, true) then
    bad = bad + 1
  end
end

-- The same BENCH line as mcp-load prints (bench/tools/src/stats.rs).
function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d bad_replies=%d http_requests=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    bad, summary.requests))
end
