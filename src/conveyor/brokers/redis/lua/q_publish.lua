--@include q_common
-- Store routed copies of messages, all or none.
-- KEYS: the topology counter
-- ARGV: prefix, the topology version the copies were routed on, then per copy: queue,
--       priority level, delay (ms), field count, fields...
-- Returns -1 if the topology changed since (route again), else how many copies were stored.
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[2] then
    return -1
end
local prefix, woken = ARGV[1], {}
local stored = enqueue_all(prefix, 3, now_ms(), true, woken)
flush(prefix)
wake(prefix, woken)
return stored
