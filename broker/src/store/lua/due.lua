-- The members of a bucket's deadlines that are due by Redis's clock (read only; claim.lua acts).
-- KEYS: 1 the bucket's deadlines
-- ARGV: 1 limit
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
