-- Prepended to every script instead of server.lua when the store was given a test's manual clock
-- (store::clock::Clock::Manual): "now" is the last argument, that clock's reading in Unix ms, so a
-- test moves time without sleeping. Nothing else differs. ARGC: the script's own arguments, before it.
local ARGC = #ARGV - 1
local GIVEN_NOW = tonumber(ARGV[#ARGV])
local function now_ms()
  return GIVEN_NOW
end
