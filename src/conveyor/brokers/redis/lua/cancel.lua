-- Cancel a job that has not started: read and change its status in one step, so that a
-- worker starting it and a caller cancelling it cannot both win.
-- KEYS: job hash, index zset, expiring zset
-- ARGV: id, now, channel
-- Returns -1 if there is no such job, 0 if it is past cancelling, 1 if cancelled.
local job, id, now = KEYS[1], ARGV[1], ARGV[2]
local status = redis.call('HGET', job, 'status')
if not status then
    return -1
end
if status ~= 'queued' and status ~= 'scheduled' and status ~= 'retrying' then
    return 0
end
redis.call('HSET', job, 'status', 'cancelled', 'updated_at', now)
redis.call('ZADD', KEYS[2], now, id)
local ttl = tonumber(redis.call('HGET', job, 'result_ttl'))
local ttl_ms = math.floor(ttl * 1000)
if ttl_ms <= 0 then
    redis.call('DEL', job)
    redis.call('ZREM', KEYS[2], id)
else
    redis.call('PEXPIRE', job, string.format('%d', ttl_ms))
    redis.call('ZADD', KEYS[3], string.format('%.6f', tonumber(now) + ttl), id)
end
redis.call('PUBLISH', ARGV[3], 'cancelled')
return 1
