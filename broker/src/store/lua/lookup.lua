-- What one request needs, first step: read only, every key declared, all in the principal's slot.
-- KEYS: 1 ended marker, 2 MCP-session link, 3 conversation link, 4 surface index, 5 recent projects,
--       6 backend-session override, 7 the principal's index of work sessions, 8 the handle's work
--       session (absent ones are the principal's never-written placeholder)
-- ARGV: 1 surface candidates limit, 2 recent limit, 3 '1' when the request has an MCP session,
--       4 idle TTL (ms)
-- Returns {ended, handle's work session, linked id, conversation id, {surface ids active within the
-- idle TTL, newest first}, {recent...}, override, work sessions of the principal active within the
-- idle TTL}; a work session is its HGETALL array, or nil when it is missing, idle past its deadline
-- or finalized. The ids are read in a second step (sessions.lua), with their keys declared.
local now = now_ms()
local idle = tonumber(ARGV[4])

local handle = false
local fields = redis.call('HGETALL', KEYS[8])
if #fields > 0 then
  local last, finalized = nil, false
  for i = 1, #fields, 2 do
    if fields[i] == 'la' then last = tonumber(fields[i + 1]) end
    if fields[i] == 'f' then finalized = true end
  end
  if is_live(last, finalized, idle, now) then handle = fields end
end

local ended, override, linked = 0, false, false
if ARGV[3] == '1' then
  ended = redis.call('EXISTS', KEYS[1])
  override = redis.call('GET', KEYS[6])
  linked = redis.call('GET', KEYS[2])
end
local conversation = redis.call('GET', KEYS[3])
local surface = redis.call('ZREVRANGEBYSCORE', KEYS[4], '+inf', '(' .. (now - idle), 'LIMIT', 0, tonumber(ARGV[1]))
local recent = redis.call('ZREVRANGE', KEYS[5], 0, tonumber(ARGV[2]) - 1)
local active = redis.call('ZCOUNT', KEYS[7], '(' .. (now - idle), '+inf')
return {ended, handle, linked, conversation, surface, recent, override, active}
