-- Prepended to every script: Redis's own clock (so replicas' clocks never disagree) and the one
-- definition of a live work session, mirrored by `store::hash::is_live` in Rust.
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

-- Live: it has a last activity, its idle deadline is in the future, and it is not finalized.
local function is_live(last, finalized, idle, now)
  return last ~= nil and not finalized and last + idle > now
end
