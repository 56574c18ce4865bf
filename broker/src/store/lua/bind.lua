-- Creates or updates a work session after a successful select, with its links, indexes and deadline.
-- KEYS: 1 work session, 2 surface index, 3 MCP-session link, 4 conversation link, 5 recent projects,
--       6 the bucket's deadlines, 7 the principal's index of work sessions
-- ARGV: 1 work-session id, 2 idle TTL (ms), 3 how long the data may wait for a sweeper past its
--       deadline (ms), 4 '1' to set the MCP link, 5 '1' to set the conversation link,
--       6 recent-projects TTL (ms), 7 project, 8 deadline member, 9 most live work sessions of the
--       principal (0: no limit), 10 the refresh interval (ms, Lifetimes::refresh: the deadline is
--       pushed that far past the idle TTL, as a touch's), 11 how many field/value pairs follow to
--       set, then those pairs, then
--       pairs to set only where the hash has no such field (store::hash::bind_fields: a bind merges
--       into a work session that calls kept recording since its copy was read; it never writes the
--       last activity or the call count, it stamps the one and adds its call to the other)
-- Returns 1; 0 when that work session was finalized meanwhile (it is never revived); -1 when it is not
-- live and the principal already has the most live work sessions allowed. Nothing is written unless 1.
-- Announced to every replica's lookup cache (prelude's announce) when written.
-- The check and the writes are one script, so concurrent binds can never exceed the cap.
local state = redis.call('HMGET', KEYS[1], 'la', 'f')
if state[2] then return 0 end
local now = now_ms()
local idle = tonumber(ARGV[2])
local cap = tonumber(ARGV[9])
if cap > 0 and not is_live(tonumber(state[1]), false, idle, now) then
  -- The index is scored by last activity, which touch, bind and an operator's `end` (admin.lua)
  -- keep equal to the hash's `la`; a work session is finalized only once `la` is past the idle TTL.
  -- So the work sessions scored within the idle TTL are exactly the live ones: no hash to read (and
  -- no undeclared key).
  if redis.call('ZCOUNT', KEYS[7], '(' .. (now - idle), '+inf') >= cap then return -1 end
end
local ahead = tonumber(ARGV[10])
local set_end = 11 + 2 * tonumber(ARGV[11])
redis.call('HSET', KEYS[1], unpack(ARGV, 12, set_end))
for i = set_end + 1, ARGC, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'la', now)
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], idle + ahead + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - idle)
redis.call('PEXPIRE', KEYS[2], idle)
if ARGV[4] == '1' then
  if redis.call('GET', KEYS[3]) ~= ARGV[1] then redis.call('HINCRBY', KEYS[1], 'm', 1) end
  redis.call('SET', KEYS[3], ARGV[1], 'PX', idle)
end
if ARGV[5] == '1' then redis.call('SET', KEYS[4], ARGV[1], 'PX', idle) end
redis.call('ZADD', KEYS[5], now, ARGV[7])
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -21)
redis.call('PEXPIRE', KEYS[5], ARGV[6])
redis.call('ZADD', KEYS[6], now + idle + ahead, ARGV[8])
redis.call('ZADD', KEYS[7], now, ARGV[1])
redis.call('PEXPIRE', KEYS[7], idle + ahead + tonumber(ARGV[3]))
announce(KEYS[1])
return 1
