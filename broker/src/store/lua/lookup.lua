-- What one request needs, first step: every key declared, all in the principal's slot. It writes
-- only to record a settled call (ARGV 9), exactly as touch.lua would right after it.
-- KEYS: 1 ended marker, 2 MCP-session link, 3 conversation link, 4 surface index, 5 recent projects,
--       6 backend-session override, 7 the principal's index of work sessions, 8 the handle's work
--       session, 9 the hinted work session (absent ones are the principal's never-written
--       placeholder), 10 the bucket's deadlines
-- ARGV: 1 surface candidates limit, 2 recent limit, 3 '1' when the request has an MCP session,
--       4 idle TTL (ms), 5 the hinted work-session id ('' for none), 6 '1' to stop as soon as the
--       handle, conversation or link settles the work session, 7 '1' when a handle was presented,
--       8 '1' when the request carries a conversation key, 9 '1' to record the call in the work
--       session it settles on (a call that will be forwarded bound: see decide::record_with_lookup),
--       10 how long the data may wait for a sweeper past its deadline (ms), 11 the principal, 12 the
--       request's surface (a work session of another surface is not recorded here: its surface index
--       is not declared, and the broker touches it separately), 13 the refresh interval (ms,
--       Lifetimes::refresh: a recorded call's deadline is pushed that far past the idle TTL)
-- Returns {ended, handle's work session, linked id, conversation id, {surface ids active within the
-- idle TTL, newest first}, {recent...}, override, work sessions of the principal active within the
-- idle TTL, the hinted work session, 1 when the hinted work session was read, 1 when the call was
-- recorded}; a work session is its
-- HGETALL array, or nil when it is missing, idle past its deadline or finalized. The hint is the id
-- the broker expects one of the pointers to name (it remembers what they held): read only when one
-- does, so that the common request needs no second step. The other ids are read in a second step
-- (sessions.lua), with their keys declared. Stopping early, the surface, recent projects and count
-- are not read: the call is settled without them (a select always reads everything).
local now = now_ms()
local idle = tonumber(ARGV[4])

local hint_id, hinted, hint_read = ARGV[5], false, 0
local function read_hint(id)
  if hint_read == 0 and hint_id ~= '' and id == hint_id then
    hint_read = 1
    hinted = live_fields(KEYS[9], idle, now)
  end
end

local handle = false
if ARGV[7] == '1' then handle = live_fields(KEYS[8], idle, now) end

local ended, override, linked = 0, false, false
if ARGV[3] == '1' then
  ended = redis.call('EXISTS', KEYS[1])
  override = redis.call('GET', KEYS[6])
  linked = redis.call('GET', KEYS[2])
end
local conversation = redis.call('GET', KEYS[3])

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
end

-- Records the settled call, as touch.lua would (it is live: just read in this script).
local recorded = 0
local function record(fields, key, id, link_mode, conversation)
  if ARGV[9] ~= '1' or ended == 1 or field(fields, 'sf') ~= ARGV[12] then return end
  record_call({key, KEYS[4], KEYS[2], KEYS[3], KEYS[10], KEYS[7]}, id, idle, tonumber(ARGV[10]),
    link_mode, conversation, ARGV[11] .. ':' .. id, now, 1, tonumber(field(fields, 'la')), 0,
    tonumber(ARGV[13]))
  recorded = 1
end
local counted = '0'
if ARGV[3] == '1' then counted = '2' end

if ARGV[6] == '1' then
  -- The resolution order: a handle, else the conversation key when sent, else the link.
  if ARGV[7] == '1' then
    if handle then record(handle, KEYS[8], field(handle, 'id'), counted, ARGV[8] == '1') end
    return {ended, handle, false, false, {}, {}, override, 0, false, 0, recorded}
  end
  if ARGV[8] == '1' then
    read_hint(conversation)
    if hinted then
      record(hinted, KEYS[9], hint_id, counted, true)
      return {ended, false, false, conversation, {}, {}, override, 0, hinted, 1, recorded}
    end
  elseif linked then
    read_hint(linked)
    if hinted then
      record(hinted, KEYS[9], hint_id, '1', false)
      return {ended, false, linked, false, {}, {}, override, 0, hinted, 1, recorded}
    end
  end
end

local surface = redis.call('ZREVRANGEBYSCORE', KEYS[4], '+inf', '(' .. (now - idle), 'LIMIT', 0, tonumber(ARGV[1]))
local recent = redis.call('ZREVRANGE', KEYS[5], 0, tonumber(ARGV[2]) - 1)
local active = redis.call('ZCOUNT', KEYS[7], '(' .. (now - idle), '+inf')
if linked then read_hint(linked) end
if conversation then read_hint(conversation) end
for _, id in ipairs(surface) do read_hint(id) end
return {ended, handle, linked, conversation, surface, recent, override, active, hinted, hint_read, 0}
