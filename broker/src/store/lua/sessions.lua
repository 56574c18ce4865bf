-- Reads work sessions by their declared keys (all in one principal's slot), second step of a lookup.
-- KEYS: the work-session hashes
-- ARGV: 1 idle TTL (ms)
-- Returns one entry per key: its HGETALL array, or nil when it is missing, idle past its deadline
-- or finalized (its data outlives the deadline for the finalizer).
local now = now_ms()
local idle = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = live_fields(key, idle, now)
end
return out
