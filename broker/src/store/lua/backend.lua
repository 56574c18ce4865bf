-- Records the backend session that serves a work session's project on one upstream instance, in the
-- work session's own hash (so the lookup that finds the work session also finds its backend sessions).
-- KEYS: 1 work session
-- ARGV: 1 field ('b:<upstream>:<project>'), 2 backend session id
-- Returns 1, or 0 when the work session is gone or finalized (nothing is written: a partial hash
-- would read as a corrupt work session).
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'f') == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
announce(KEYS[1])
return 1
