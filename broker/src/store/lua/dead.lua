-- Moves a finalized event whose actions failed every attempt to the bucket's dead letters, and
-- acknowledges it, atomically (both streams are in the bucket's slot): it is never lost and never
-- delivered again until an operator replays it. Only an event still pending moves (handed out and
-- not acknowledged): one that another taker acknowledged meanwhile succeeded, and a dead letter of
-- it would be false. Its delivery count is the group's (every taker's deliveries, not just the
-- caller's).
-- KEYS: 1 the bucket's finalized stream, 2 the bucket's dead letters
-- ARGV: 1 consumer group, 2 event id, 3 why, 4 approximate length to keep
-- Returns 1, or 0 when the event is no longer pending or in the stream (it is acknowledged all the
-- same).
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local moved = 0
if pending[1] and entries[1] then
  local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
    'src', ARGV[2], 'why', ARGV[3], 'dl', pending[1][4], 'at', now_ms()}
  for _, value in ipairs(entries[1][2]) do table.insert(args, value) end
  redis.call(unpack(args))
  moved = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return moved
