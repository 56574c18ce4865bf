-- Finalizes work sessions whose idle deadline has passed, exactly once across every replica: each
-- due one is re-checked (a call may have moved its deadline), marked finalized and its event appended
-- to the stream, all inside this one script.
-- KEYS: 1 deadlines, 2 finalized stream
-- ARGV: 1 limit, 2 idle TTL (ms), 3 key prefix, 4 approximate stream length to keep
-- Returns how many work sessions this call finalized.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local idle = tonumber(ARGV[2])
local claimed = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  local principal, id = string.match(member, '^(%x+):(%x+)$')
  if not principal then
    redis.call('ZREM', KEYS[1], member)
  else
    local key = ARGV[3] .. ':{p:' .. principal .. '}:ws:' .. id
    local f = redis.call('HMGET', key, 'la', 'f', 'sf', 'pj', 'cr', 'n')
    local last = tonumber(f[1])
    if not last or f[2] then
      redis.call('ZREM', KEYS[1], member) -- its data is gone, or it was finalized already
    elseif last + idle > now then
      redis.call('ZADD', KEYS[1], last + idle, member) -- called since: not due yet
    else
      redis.call('HSET', key, 'f', now)
      redis.call('ZREM', KEYS[1], member)
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
        'ws', id, 'p', principal, 'sf', f[3], 'pj', f[4], 'cr', f[5], 'la', last, 'n', f[6], 'fz', now)
      claimed = claimed + 1
    end
  end
end
return claimed
