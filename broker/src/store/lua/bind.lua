-- Creates or updates a work session after a successful select, with its links and indexes.
-- KEYS: 1 work session, 2 surface index, 3 MCP-session link, 4 conversation link, 5 recent projects
-- ARGV: 1 work-session id, 2 now (ms), 3 idle TTL (ms), 4 '1' to set the MCP link, 5 '1' to set the
--       conversation link, 6 recent-projects TTL (ms), 7 project, 8.. field/value pairs of the hash
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
if ARGV[5] == '1' then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3]) end
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[7])
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -21)
redis.call('PEXPIRE', KEYS[5], ARGV[6])
return 1
