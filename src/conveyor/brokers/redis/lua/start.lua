-- Mark each job of a batch running; a record that expired or was discarded stays gone.
-- KEYS: index zset, then the job hash of each start
-- ARGV: now, then 3 per start: id, attempt, started_at
local index, now = KEYS[1], ARGV[1]
for n = 1, #KEYS - 1 do
    local job, at = KEYS[1 + n], 1 + (n - 1) * 3
    if redis.call('EXISTS', job) == 1 then
        redis.call('HSET', job, 'status', 'running', 'attempts', ARGV[at + 2],
            'last_attempt_at', ARGV[at + 3], 'updated_at', now)
        redis.call('HSETNX', job, 'first_attempt_at', ARGV[at + 3])
        redis.call('ZADD', index, now, ARGV[at + 1])
    end
end
return 0
