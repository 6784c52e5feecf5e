--@include q_common
-- Lease up to max messages, highest priority level first; within a level, lapsed leases
-- (redeliveries) before new entries. Due delayed messages are moved in first.
-- ARGV: prefix, queue, max, lease (ms)
-- Returns {now, deadline, when to look again (ms, -1: no delayed or leased message),
--          {{level, entry id, fields, deliveries in the group, lease member}...}}
local prefix, queue, max, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, woken = now_ms(), {}
promote(prefix, queue, now, woken)
local leases = prefix .. 'leases:' .. queue
local lapsed, reclaimed = {}, {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, max)) do
    local level, id = parse_lease(member)
    lapsed[level] = lapsed[level] or {}
    table.insert(lapsed[level], {id, member})
end
local out, deadline, token = {}, now + lease, nil
local taken = {}
local function take(level, id, fields, deliveries)
    token = token or redis.call('INCR', prefix .. 'seq')
    local member = level .. '/' .. id .. '/' .. token .. '/' .. body_size(fields)
    table.insert(taken, deadline)
    table.insert(taken, member)
    table.insert(out, {tonumber(level), id, fields, deliveries, member})
end
for _, level in ipairs(redis.call('ZREVRANGE', prefix .. 'levels:' .. queue, 0, -1)) do
    if #out >= max then
        break
    end
    local stream = stream_of(prefix, queue, level)
    for _, item in ipairs(lapsed[level] or {}) do
        if #out >= max then
            break
        end
        local id = item[1]
        table.insert(reclaimed, item[2])
        local claimed = redis.call('XCLAIM', stream, GROUP, GROUP, 0, id)
        if claimed[1] then
            local pending = redis.call('XPENDING', stream, GROUP, id, id, 1)
            take(level, id, claimed[1][2], pending[1][4])
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
if #reclaimed > 0 then
    redis.call('ZREM', leases, unpack(reclaimed))
end
if #taken > 0 then
    redis.call('ZADD', leases, unpack(taken))
    count(queue, 'delivered', #out)
end
flush(prefix)
wake(prefix, woken)
local hint = -1
for _, key in ipairs({prefix .. 'delayed:' .. queue, leases}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] and (hint < 0 or tonumber(first[2]) < hint) then
        hint = tonumber(first[2])
    end
end
return {now, deadline, hint, out}
