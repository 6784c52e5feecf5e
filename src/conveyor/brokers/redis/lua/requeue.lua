-- A job sent to run again is queued and kept until it finishes anew.
-- KEYS: job hash, index zset, expiring zset
-- ARGV: id, now
local job = KEYS[1]
if redis.call('EXISTS', job) == 0 then
    return 0
end
redis.call('HSET', job, 'status', 'queued', 'updated_at', ARGV[2])
redis.call('PERSIST', job)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
