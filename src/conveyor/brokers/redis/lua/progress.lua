-- Store a job's progress without bringing back a record that is gone.
-- KEYS: job hash, index zset
-- ARGV: id, progress JSON, now
local job = KEYS[1]
if redis.call('EXISTS', job) == 0 then
    return 0
end
redis.call('HSET', job, 'progress', ARGV[2], 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
