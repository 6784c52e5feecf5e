-- Drop index entries of records that expired (the hashes vanish by themselves, the sorted
-- sets do not). Entries due by the caller's clock but whose record lives on, per the
-- server's, are put back at the time the server will drop it.
-- KEYS: index zset, expiring zset
-- ARGV: now, limit, job key prefix, ids known to be gone or going (optional)
local index, expiring, now, prefix = KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[3]
local due = redis.call('ZRANGEBYSCORE', expiring, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for i = 4, #ARGV do
    table.insert(due, ARGV[i])
end
local dropped = 0
for _, id in ipairs(due) do
    local left = redis.call('PTTL', prefix .. id)
    if left == -2 then
        redis.call('ZREM', index, id)
        redis.call('ZREM', expiring, id)
        dropped = dropped + 1
    elseif left == -1 then
        redis.call('ZREM', expiring, id)
    elseif redis.call('ZSCORE', expiring, id) then
        redis.call('ZADD', expiring, string.format('%.6f', now + left / 1000), id)
    end
end
return dropped
