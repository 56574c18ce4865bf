-- Finalizes due work sessions of one bucket, exactly once across every replica: each is re-checked
-- (a call may have moved its deadline), marked finalized and its event appended to the bucket's
-- stream, all inside this one script (everything is in the bucket's slot).
-- KEYS: 1 the bucket's deadlines, 2 the bucket's finalized stream, 3.. the work-session hashes
-- ARGV: 1 idle TTL (ms), 2 grace (ms): how long a finalized work session stays readable,
--       3 approximate stream length to keep, 4 the refresh interval (ms, Lifetimes::refresh: a
--       deadline is the last activity plus the idle TTL plus it), 5.. the deadline members of
--       KEYS[3..], in order
-- Returns {finalized, dropped}: dropped work sessions had no data left (they waited for a sweeper
-- longer than the safety TTL); their deadline is removed without an event.
local now = now_ms()
local idle = tonumber(ARGV[1])
local claimed, dropped = 0, 0
for i = 3, #KEYS do
  local key, member = KEYS[i], ARGV[i + 2]
  local principal, id = string.match(member, '^(%x+):(%x+)$')
  local f = redis.call('HMGET', key, 'la', 'f', 'sf', 'pj', 'cr', 'n')
  local last = tonumber(f[1])
  if not last or not principal then
    redis.call('ZREM', KEYS[1], member)
    dropped = dropped + 1
  elseif f[2] then
    redis.call('ZREM', KEYS[1], member) -- finalized already
  elseif is_live(last, false, idle, now) then
    redis.call('ZADD', KEYS[1], last + idle + tonumber(ARGV[4]), member) -- called since: not due yet
  else
    redis.call('HSET', key, 'f', now)
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
    redis.call('ZREM', KEYS[1], member)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
      'ws', id, 'p', principal, 'sf', f[3], 'pj', f[4], 'cr', f[5], 'la', last, 'n', f[6], 'fz', now)
    announce(key)
    claimed = claimed + 1
  end
end
return {claimed, dropped}
