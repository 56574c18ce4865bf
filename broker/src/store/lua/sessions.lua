-- Reads work sessions by their declared keys (all in one principal's slot), second step of a lookup.
-- KEYS: the work-session hashes
-- ARGV: 1 idle TTL (ms)
-- Returns one entry per key: its HGETALL array, or nil when it is missing, idle past its deadline
-- or finalized (its data outlives the deadline for the finalizer).
local now = now_ms()
local idle = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  local last, finalized = nil, false
  for j = 1, #fields, 2 do
    if fields[j] == 'la' then last = tonumber(fields[j + 1]) end
    if fields[j] == 'f' then finalized = true end
  end
  if is_live(last, finalized, idle, now) then out[i] = fields else out[i] = false end
end
return out
