-- Queue samples for the console's charts: one per queue per slot of time (the first one
-- recorded), each series trimmed by age and count and expiring once nobody samples it.
-- KEYS: the index of sampled queues (zset: queue -> newest sample's time)
-- ARGV: sample key prefix, most samples kept per queue, seconds a series outlives its
--       newest sample, the index's cutoff (ms), then the batch as JSON:
--       [[queue, at_ms, slot_start_ms, slot_end_ms, cutoff_ms, member], ...]
-- Returns how many samples were added.
local index, prefix, limit, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local added = 0
for _, sample in ipairs(cjson.decode(ARGV[5])) do
    local queue, at, low, high, cutoff, member = unpack(sample)
    local series = prefix .. queue
    if #redis.call('ZRANGEBYSCORE', series, low, '(' .. high, 'LIMIT', 0, 1) == 0 then
        redis.call('ZADD', series, at, member)
        added = added + 1
    end
    redis.call('ZREMRANGEBYSCORE', series, '-inf', '(' .. cutoff)
    redis.call('ZREMRANGEBYRANK', series, 0, -(limit + 1))
    redis.call('EXPIRE', series, ttl)
    local newest = redis.call('ZSCORE', index, queue)
    if not newest or tonumber(newest) < tonumber(at) then
        redis.call('ZADD', index, at, queue)
    end
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[4])
return added
