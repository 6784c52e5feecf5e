--@include q_common
-- Delete a queue's waiting messages (ready and delayed; leased ones stay).
-- ARGV: prefix, queue
-- Returns how many went.
local prefix, queue = ARGV[1], ARGV[2]
local now, removed = now_ms(), 0
for _, level in ipairs(redis.call('ZRANGE', prefix .. 'levels:' .. queue, 0, -1)) do
    for _, item in ipairs(waiting(prefix, queue, level, now)) do
        unqueue(prefix, queue, level, item)
        removed = removed + 1
    end
end
local delayed = prefix .. 'delayed:' .. queue
for _, member in ipairs(redis.call('ZRANGE', delayed, 0, -1)) do
    local item = cmsgpack.unpack(member)
    redis.call('HINCRBY', prefix .. 'counts:' .. queue, 'bytes', 0 - body_size(item[3]))
    removed = removed + 1
end
redis.call('DEL', delayed)
flush(prefix)
return removed
