-- Publishes one message on the lookup caches' channel from the node that holds the principal's
-- slot: what announce() publishes inside a script goes out from that node, and in a Redis Cluster
-- messages reach a subscriber in order only from one node. So an announcement made outside a
-- script, and a writer's `sync <nonce>` after its write, come after that write's invalidation.
-- KEYS: 1 any key of the principal (routes the script to its slot; not read)
-- ARGV: 1 channel, 2 message
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
