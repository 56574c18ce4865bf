-- Prepended to every script in production: Redis's own clock, so replicas' clocks never disagree.
-- ARGC: how many of ARGV are the script's own (all of them here; see given.lua).
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local ARGC = #ARGV
