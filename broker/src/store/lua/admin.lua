-- Operator actions on one work session, atomically.
-- KEYS: 1 work session, 2 the bucket's deadlines, 3 recent projects, 4 the principal's index
-- ARGV: 1 action ('rebind' or 'end'), 2 idle TTL (ms), 3 deadline member, 4 project (rebind),
--       5 work-session id
-- Returns 1, or 0 when the work session is not live (gone, idle past its deadline, finalized).
-- 'end' makes it due now: the next sweep finalizes it (with its actions), exactly once as always.
local now = now_ms()
local idle = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'la'))
if not is_live(last, redis.call('HEXISTS', KEYS[1], 'f') == 1, idle, now) then
  return 0
end
if ARGV[1] == 'rebind' then
  redis.call('HSET', KEYS[1], 'pj', ARGV[4])
  redis.call('ZADD', KEYS[3], now, ARGV[4])
else
  redis.call('HSET', KEYS[1], 'la', now - idle)
  redis.call('ZADD', KEYS[2], now - 1, ARGV[3])
  -- The index's score follows `la`, so it no longer counts as live (bind's cap, lookup's count).
  redis.call('ZADD', KEYS[4], 'XX', now - idle, ARGV[5])
end
announce(KEYS[1])
return 1
