--@include q_common
-- Lease up to max messages, highest priority level first; within a level, lapsed leases
-- (redeliveries) before new entries. Due delayed messages are moved in first.
-- ARGV: prefix, queue, max, lease (ms)
-- Returns {now, deadline, when to look again (ms, -1: no delayed or leased message),
--          {{level, entry id, fields, deliveries in the group, token}...}}
local prefix, queue, max, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, woken = now_ms(), {}
promote(prefix, queue, now, woken)
local leases, tokens = prefix .. 'leases:' .. queue, prefix .. 'tokens:' .. queue
local lapsed = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, max)) do
    local level = string.match(member, '^(%d+)/')
    lapsed[level] = lapsed[level] or {}
    table.insert(lapsed[level], member)
end
local out, deadline = {}, now + lease
local function take(level, id, fields, count)
    local member = level .. '/' .. id
    local token = redis.call('INCR', prefix .. 'seq')
    redis.call('ZADD', leases, deadline, member)
    redis.call('HSET', tokens, member, token .. ':' .. body_size(fields))
    table.insert(out, {tonumber(level), id, fields, count, token})
end
for _, level in ipairs(redis.call('ZREVRANGE', prefix .. 'levels:' .. queue, 0, -1)) do
    if #out >= max then
        break
    end
    local stream = stream_of(prefix, queue, level)
    for _, member in ipairs(lapsed[level] or {}) do
        if #out >= max then
            break
        end
        local id = string.sub(member, #level + 2)
        local claimed = redis.call('XCLAIM', stream, GROUP, GROUP, 0, id)
        if claimed[1] then
            local pending = redis.call('XPENDING', stream, GROUP, id, id, 1)
            take(level, id, claimed[1][2], pending[1][4])
        else
            redis.call('ZREM', leases, member)
            redis.call('HDEL', tokens, member)
        end
    end
    if #out < max then
        local read = redis.call('XREADGROUP', 'GROUP', GROUP, GROUP, 'COUNT', max - #out,
            'STREAMS', stream, '>')
        if read then
            for _, entry in ipairs(read[1][2]) do
                take(level, entry[1], entry[2], 1)
            end
        end
    end
end
if #out > 0 then
    redis.call('HINCRBY', prefix .. 'counts:' .. queue, 'delivered', #out)
end
wake(prefix, woken)
local hint = -1
for _, key in ipairs({prefix .. 'delayed:' .. queue, leases}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] and (hint < 0 or tonumber(first[2]) < hint) then
        hint = tonumber(first[2])
    end
end
return {now, deadline, hint, out}
