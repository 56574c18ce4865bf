-- Everything one request needs, read in one round trip (all keys share the principal's slot).
-- KEYS: 1 ended marker, 2 MCP-session link, 3 conversation link, 4 surface index, 5 recent projects,
--       6 backend-session override, 7 the principal's index of work sessions
--       (absent ones are the principal's never-written placeholder)
-- ARGV: 1 work-session key prefix, 2 handle's work-session id or '', 3 surface limit,
--       4 recent limit, 5 '1' when the request has an MCP session, 6 idle TTL (ms)
-- Returns {ended, handle, linked, conversation, {live...}, {recent...}, override,
-- work sessions of the principal active within the idle TTL};
-- a work session is its HGETALL array; one that is missing, idle past its deadline or finalized is
-- nil (its data outlives the deadline for the finalizer). Dead surface entries are removed.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local idle = tonumber(ARGV[6])

local function work_session(id)
  if not id or id == '' then return false end
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields == 0 then return false end
  local last, finalized = 0, false
  for i = 1, #fields, 2 do
    if fields[i] == 'la' then last = tonumber(fields[i + 1]) or 0 end
    if fields[i] == 'f' then finalized = true end
  end
  if finalized or last + idle <= now then return false end
  return fields
end

local has_mcp = ARGV[5] == '1'
local ended, override, linked = 0, false, false
if has_mcp then
  ended = redis.call('EXISTS', KEYS[1])
  override = redis.call('GET', KEYS[6])
  linked = work_session(redis.call('GET', KEYS[2]))
end
local conversation = work_session(redis.call('GET', KEYS[3]))

local live = {}
local limit = tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[4], 0, 49)) do
  local fields = work_session(id)
  if fields then
    if #live < limit then table.insert(live, fields) end
  else
    redis.call('ZREM', KEYS[4], id)
  end
end
local recent = redis.call('ZREVRANGE', KEYS[5], 0, tonumber(ARGV[4]) - 1)
local active = redis.call('ZCOUNT', KEYS[7], '(' .. (now - idle), '+inf')
return {ended, work_session(ARGV[2]), linked, conversation, live, recent, override, active}
