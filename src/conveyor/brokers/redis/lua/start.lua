-- Mark each job of a batch running; a record that expired or was discarded stays gone.
-- KEYS: index zset
-- ARGV: now, job key prefix, then a JSON array of [id, attempt, started_at] per start
-- (one argument for the batch: the client packs it at C speed, not field by field)
local index, now, job_prefix = KEYS[1], ARGV[1], ARGV[2]
for _, start in ipairs(cjson.decode(ARGV[3])) do
    local id, attempt, started = start[1], start[2], start[3]
    local job = job_prefix .. id
    if redis.call('EXISTS', job) == 1 then
        redis.call('HSET', job, 'status', 'running', 'attempts', attempt,
            'last_attempt_at', started, 'updated_at', now)
        redis.call('HSETNX', job, 'first_attempt_at', started)
        redis.call('ZADD', index, now, id)
    end
end
return 0
