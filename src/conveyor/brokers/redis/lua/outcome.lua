-- Store the outcome of each attempt in a batch. A finished record expires result_ttl
-- seconds from now, and whoever waits for it is told on its channel; an unfinished one is
-- kept until it finishes. A record that expired or was discarded stays gone.
-- KEYS: index zset, expiring zset
-- ARGV: now, key prefix, then a JSON array with per outcome [id, status, attempts,
--       result, error, started_at, finished (1/0), when the retry is due or '']
-- An empty result or error means none (JSON text is never empty).
-- Returns, per outcome, 1 if stored and 0 if its record was gone.
local index, expiring, now, prefix = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local stored = {}
for n, outcome in ipairs(cjson.decode(ARGV[3])) do
    local id, status, started = outcome[1], outcome[2], outcome[6]
    local job = prefix .. 'job:' .. id
    if redis.call('EXISTS', job) == 0 then
        stored[n] = 0
    else
        stored[n] = 1
        redis.call('HSET', job, 'status', status, 'attempts', outcome[3],
            'last_attempt_at', started, 'updated_at', now)
        redis.call('HSETNX', job, 'first_attempt_at', started)
        if outcome[8] ~= '' then
            redis.call('HSET', job, 'scheduled_for', outcome[8])
        end
        for i, field in ipairs({'result', 'error'}) do
            local value = outcome[3 + i]
            if value == '' then
                redis.call('HDEL', job, field)
            else
                redis.call('HSET', job, field, value)
            end
        end
        redis.call('ZADD', index, now, id)
        if outcome[7] ~= '1' then
            redis.call('PERSIST', job)
            redis.call('ZREM', expiring, id)
        else
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
                    redis.call('SET', prefix .. 'succeeded:' .. key, id, 'PX',
                        string.format('%d', ttl_ms))
                end
            end
            redis.call('PUBLISH', prefix .. 'done:' .. id, status)
        end
    end
end
return stored
