--@include q_common
-- Every message of a queue in delivery order, unchanged: highest priority level first,
-- each level's entries in order, then the delayed ones by due time.
-- ARGV: prefix, queue
-- Returns {now, {{entry id, fields, deliveries in the group, lease deadline (ms) or -1,
--          due (ms) or -1}...}}
local prefix, queue = ARGV[1], ARGV[2]
local now, out = now_ms(), {}
local deadlines = {}
local leased = redis.call('ZRANGE', prefix .. 'leases:' .. queue, 0, -1, 'WITHSCORES')
for j = 1, #leased, 2 do
    local level, id = parse_lease(leased[j])
    deadlines[level .. '/' .. id] = tonumber(leased[j + 1])
end
for _, level in ipairs(redis.call('ZREVRANGE', prefix .. 'levels:' .. queue, 0, -1)) do
    local stream = stream_of(prefix, queue, level)
    local counts = {}
    if redis.call('EXISTS', stream) == 1 then
        for _, pending in ipairs(redis.call('XPENDING', stream, GROUP, '-', '+', 1000000)) do
            counts[pending[1]] = pending[4]
        end
    end
    for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do
        table.insert(out, {entry[1], entry[2], counts[entry[1]] or 0,
            deadlines[level .. '/' .. entry[1]] or -1, -1})
    end
end
local delayed = redis.call('ZRANGE', prefix .. 'delayed:' .. queue, 0, -1, 'WITHSCORES')
for j = 1, #delayed, 2 do
    local item = cmsgpack.unpack(delayed[j])
    table.insert(out, {'0-0', item[3], 0, -1, tonumber(delayed[j + 1])})
end
return {now, out}
