-- Puts a dead letter back into the bucket's finalized stream as a new event (delivered again from
-- its first attempt) and removes it from the dead letters, atomically.
-- KEYS: 1 the bucket's dead letters, 2 the bucket's finalized stream
-- ARGV: 1 dead-letter id, 2 approximate stream length to keep
-- Returns 1, or 0 when there is no such dead letter.
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not entries[1] then return 0 end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
local fields = entries[1][2]
for i = 1, #fields, 2 do
  local name = fields[i]
  if name ~= 'src' and name ~= 'why' and name ~= 'dl' and name ~= 'at' then
    table.insert(args, name)
    table.insert(args, fields[i + 1])
  end
end
redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
