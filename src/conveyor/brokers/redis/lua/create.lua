-- Record one job, put-if-absent by idempotency key. The key lives for the window of the
-- job that set it; a later submission with a shorter window also skips a job created
-- longer ago than that.
-- KEYS: job hash, index zset, [idempotency key]
-- ARGV: id, task, queue, status, now, scheduled_for, idempotency_key, window_ms,
--       result_ttl, job key prefix, request digest (or '')
-- Returns nil when created, else {existing id, existing record as HGETALL}.
local job, index, idem = KEYS[1], KEYS[2], KEYS[3]
local id, now, key, window = ARGV[1], ARGV[5], ARGV[7], tonumber(ARGV[8])

if idem then
    local existing = redis.call('GET', idem)
    if existing then
        local record = redis.call('HGETALL', ARGV[10] .. existing)
        local created = redis.call('HGET', ARGV[10] .. existing, 'created_at')
        if created and tonumber(created) > tonumber(now) - window / 1000 then
            return {existing, record}
        end
    end
    if window > 0 then
        redis.call('SET', idem, id, 'PX', window)
    end
end

redis.call('DEL', job)
redis.call('HSET', job, 'task', ARGV[2], 'queue', ARGV[3], 'status', ARGV[4], 'attempts', 0,
    'created_at', now, 'updated_at', now, 'result_ttl', ARGV[9])
if ARGV[6] ~= '' then
    redis.call('HSET', job, 'scheduled_for', ARGV[6])
end
if key ~= '' then
    redis.call('HSET', job, 'idempotency_key', key)
end
if ARGV[11] ~= '' then
    redis.call('HSET', job, 'request_digest', ARGV[11])
end
redis.call('ZADD', index, now, id)
return false
