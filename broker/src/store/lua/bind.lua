-- Creates or updates a work session after a successful select, with its links, indexes and deadline.
-- KEYS: 1 work session, 2 surface index, 3 MCP-session link, 4 conversation link, 5 recent projects,
--       6 the bucket's deadlines, 7 the principal's index of work sessions
-- ARGV: 1 work-session id, 2 idle TTL (ms), 3 how long the data may wait for a sweeper past its
--       deadline (ms), 4 '1' to set the MCP link, 5 '1' to set the conversation link,
--       6 recent-projects TTL (ms), 7 project, 8 deadline member, 9.. field/value pairs of the hash
-- Returns 1, or 0 when that work session was finalized meanwhile (it is never revived).
if redis.call('HEXISTS', KEYS[1], 'f') == 1 then return 0 end
local now = now_ms()
local idle = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('HSET', KEYS[1], 'la', now)
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], idle + tonumber(ARGV[3]))
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
redis.call('ZADD', KEYS[6], now + idle, ARGV[8])
redis.call('ZADD', KEYS[7], now, ARGV[1])
redis.call('PEXPIRE', KEYS[7], idle + tonumber(ARGV[3]))
return 1
