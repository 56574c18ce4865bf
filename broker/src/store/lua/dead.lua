-- Moves a finalized event whose actions failed every attempt to the bucket's dead letters, and
-- acknowledges it, atomically (both streams are in the bucket's slot): it is never lost and never
-- delivered again until an operator replays it.
-- KEYS: 1 the bucket's finalized stream, 2 the bucket's dead letters
-- ARGV: 1 consumer group, 2 event id, 3 why, 4 deliveries so far, 5 approximate length to keep
-- Returns 1, or 0 when the event is no longer in the stream (it is acknowledged all the same).
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local moved = 0
if entries[1] then
  local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
    'src', ARGV[2], 'why', ARGV[3], 'dl', ARGV[4], 'at', now_ms()}
  for _, value in ipairs(entries[1][2]) do table.insert(args, value) end
  redis.call(unpack(args))
  moved = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return moved
