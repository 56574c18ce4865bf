-- Records a call in a live work session and slides the TTL of everything that points at it.
-- KEYS: 1 work session, 2 surface index, 3 MCP-session link, 4 conversation link
-- ARGV: 1 work-session id, 2 now (ms), 3 idle TTL (ms), 4 '1' to set the MCP link, 5 '1' to set the
--       conversation link
-- Returns 1, or 0 when the work session no longer exists (nothing is written then).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'la', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
if ARGV[5] == '1' then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3]) end
return 1
