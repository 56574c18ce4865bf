-- Records a call in a live work session, slides the TTL of everything that points at it and moves
-- its idle deadline, in one round trip. Time is Redis's own, so replicas' clocks do not matter.
-- KEYS: 1 work session, 2 surface index, 3 MCP-session link, 4 conversation link, 5 the bucket's
--       deadlines, 6 the principal's index of work sessions
-- ARGV: 1 work-session id, 2 idle TTL (ms), 3 how long the data may wait for a sweeper past its
--       deadline (ms), 4 '1' to set the MCP link, '2' to count the MCP session without linking it,
--       5 '1' to set the conversation link, 6 deadline member ('<principal>:<work session>'),
--       7 how many calls it records (touches coalesced while the store was slow, or within a refresh
--       interval), 8 how long before now the last of them was made (ms), 9 the refresh interval
--       (ms, Lifetimes::refresh: the deadline is pushed that far past the idle TTL)
-- Returns 1 (2 when it re-pointed a link that named another work session: announced), or 0 when
-- the work session is gone, idle past its deadline or finalized (nothing is written then: a late
-- call never revives a work session the sweeper may be finalizing).
-- Also drops surface entries idle past their deadline (the read path never writes).
local now = now_ms()
local idle = tonumber(ARGV[2])
local last = redis.call('HGET', KEYS[1], 'la')
if not is_live(tonumber(last), redis.call('HEXISTS', KEYS[1], 'f') == 1, idle, now) then
  return 0
end
local repointed = record_call(KEYS, ARGV[1], idle, tonumber(ARGV[3]), ARGV[4], ARGV[5] == '1', ARGV[6], now,
  tonumber(ARGV[7]), tonumber(last), tonumber(ARGV[8]), tonumber(ARGV[9]))
if repointed then return 2 end
return 1
