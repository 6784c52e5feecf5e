-- Forget one job and free its idempotency key, unless a newer job holds that key by now.
-- KEYS: job hash, index zset, expiring zset
-- ARGV: id, key prefix
local job, id, prefix = KEYS[1], ARGV[1], ARGV[2]
local key = redis.call('HGET', job, 'idempotency_key')
if key then
    for _, name in ipairs({prefix .. 'idem:' .. key, prefix .. 'succeeded:' .. key}) do
        if redis.call('GET', name) == id then
            redis.call('DEL', name)
        end
    end
end
redis.call('DEL', job)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
return 1
