-- Mark one job running; a record that expired or was discarded stays gone.
-- KEYS: job hash, index zset
-- ARGV: id, attempt, started_at, now
local job = KEYS[1]
if redis.call('EXISTS', job) == 0 then
    return 0
end
redis.call('HSET', job, 'status', 'running', 'attempts', ARGV[2], 'last_attempt_at', ARGV[3],
    'updated_at', ARGV[4])
redis.call('HSETNX', job, 'first_attempt_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
