-- Store one attempt's outcome. A finished record expires result_ttl seconds from now, and
-- whoever waits for it is told on its channel; an unfinished one is kept until it finishes.
-- KEYS: job hash, index zset, expiring zset
-- ARGV: id, status, attempts, result, error, started_at, now, finished (1/0), channel,
--       key prefix
-- An empty result or error means none (JSON text is never empty).
local job, index, expiring = KEYS[1], KEYS[2], KEYS[3]
local id, status, now = ARGV[1], ARGV[2], ARGV[7]
if redis.call('EXISTS', job) == 0 then
    return 0
end
redis.call('HSET', job, 'status', status, 'attempts', ARGV[3], 'last_attempt_at', ARGV[6],
    'updated_at', now)
redis.call('HSETNX', job, 'first_attempt_at', ARGV[6])
for i, field in ipairs({'result', 'error'}) do
    local value = ARGV[3 + i]
    if value == '' then
        redis.call('HDEL', job, field)
    else
        redis.call('HSET', job, field, value)
    end
end
redis.call('ZADD', index, now, id)

if ARGV[8] ~= '1' then
    redis.call('PERSIST', job)
    redis.call('ZREM', expiring, id)
    return 1
end

local ttl = tonumber(redis.call('HGET', job, 'result_ttl'))
local ttl_ms = math.floor(ttl * 1000)
local key = redis.call('HGET', job, 'idempotency_key')
if ttl_ms <= 0 then
    redis.call('DEL', job)
    redis.call('ZREM', index, id)
    redis.call('ZREM', expiring, id)
else
    redis.call('PEXPIRE', job, string.format('%d', ttl_ms))
    redis.call('ZADD', expiring, string.format('%.6f', tonumber(now) + ttl), id)
    if key and status == 'succeeded' then
        redis.call('SET', ARGV[10] .. 'succeeded:' .. key, id, 'PX', string.format('%d', ttl_ms))
    end
end
redis.call('PUBLISH', ARGV[9], status)
return 1
