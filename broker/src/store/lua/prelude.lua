-- Prepended to every script, after the clock (clock/server.lua: Redis's `TIME`; clock/given.lua: a
-- test's clock), which defines now_ms() and ARGC: the one definition of a live work session,
-- mirrored by `store::hash::status_from_flat` in Rust, and what touch and lookup record.

-- Live: it has a last activity, its idle deadline is in the future, and it is not finalized.
local function is_live(last, finalized, idle, now)
  return last ~= nil and not finalized and last + idle > now
end

-- A work session's HGETALL array when it is live, else false.
local function live_fields(key, idle, now)
  local fields = redis.call('HGETALL', key)
  local last, finalized = nil, false
  for i = 1, #fields, 2 do
    if fields[i] == 'la' then last = tonumber(fields[i + 1]) end
    if fields[i] == 'f' then finalized = true end
  end
  if is_live(last, finalized, idle, now) then return fields end
  return false
end

-- Tells every replica's lookup cache (store::redis::cache) that what a settled lookup of this
-- principal reads has changed: publishes the principal, taken from one of its keys
-- ('<prefix>:{b:X}:p:<principal>:...'), on '<prefix>:invalidations'. Called by every script that
-- changes a work session's project or backend sessions, finalizes one, or re-points a link, so
-- that Redis queues the message to every replica before it replies to the writer.
local function announce(key)
  local prefix, principal = string.match(key, '^(.*):{b:%x+}:p:(%x+):')
  if prefix then redis.call('PUBLISH', prefix .. ':invalidations', principal) end
end

-- Records a call in a live work session: its last activity, call count and MCP-session count, and
-- slides the idle TTL of everything that points at it and its idle deadline. Shared by touch.lua and
-- lookup.lua (which records a settled call in the same round trip).
-- k: {work session, its surface index, MCP-session link, conversation link, the bucket's
-- deadlines, the principal's index}; link_mode: '1' set the MCP link, '2' count the MCP session
-- without linking it, else neither; conversation: set the conversation link; member: the deadline
-- member ('<principal>:<work session>'); calls: how many calls this records at once (touches
-- coalesced while the store was slow, or within a refresh interval); prev: the last activity the
-- hash holds; ago: how long before now the last of those calls was made (ms, at most the refresh
-- interval); ahead: the refresh interval (ms, Lifetimes::refresh), by which the deadline is pushed
-- past the idle TTL, so a call a replica counted but never sent cannot make it come early.
-- Returns true when it re-pointed a link that named another work session (announced).
local function record_call(k, id, idle, keep, link_mode, conversation, member, now, calls, prev,
                           ago, ahead)
  local at = math.max(prev or 0, now - ago)
  redis.call('HSET', k[1], 'la', at)
  redis.call('HINCRBY', k[1], 'n', calls)
  redis.call('PEXPIRE', k[1], idle + ahead + keep)
  redis.call('ZADD', k[2], at, id)
  redis.call('ZREMRANGEBYSCORE', k[2], '-inf', now - idle)
  redis.call('PEXPIRE', k[2], idle)
  local repointed = false
  if link_mode == '1' then
    local old = redis.call('GET', k[3])
    if old ~= id then
      redis.call('HINCRBY', k[1], 'm', 1)
      -- A link that named nothing settled no cached lookup: only a change of one is announced.
      if old then repointed = true end
    end
    redis.call('SET', k[3], id, 'PX', idle)
  elseif link_mode == '2' then
    redis.call('HINCRBY', k[1], 'm', calls)
  end
  if conversation then
    local old = redis.call('GET', k[4])
    if old and old ~= id then repointed = true end
    redis.call('SET', k[4], id, 'PX', idle)
  end
  if repointed then announce(k[1]) end
  redis.call('ZADD', k[5], at + idle + ahead, member)
  redis.call('ZADD', k[6], at, id)
  redis.call('PEXPIRE', k[6], idle + ahead + keep)
  return repointed
end
