--@include q_common
-- Move waiting messages (not leased, not delayed) to another queue as new deliveries.
-- ARGV: prefix, queue, target queue, then the message ids to move (none: all)
-- Returns how many moved.
local prefix, queue, target = ARGV[1], ARGV[2], ARGV[3]
local chosen = nil
if #ARGV > 3 then
    chosen = {}
    for i = 4, #ARGV do
        chosen[ARGV[i]] = true
    end
end
local now, moved, woken = now_ms(), 0, {}
for _, level in ipairs(redis.call('ZREVRANGE', prefix .. 'levels:' .. queue, 0, -1)) do
    for _, item in ipairs(waiting(prefix, queue, level, now)) do
        if chosen == nil or chosen[field(item[2], 'id')] then
            unqueue(prefix, queue, level, item)
            local fields = {}
            for j = 1, #item[2], 2 do
                if item[2][j] ~= 'deliveries' then
                    table.insert(fields, item[2][j])
                    table.insert(fields, item[2][j + 1])
                end
            end
            enqueue(prefix, target, level, now, 0, fields, false, woken)
            moved = moved + 1
        end
    end
end
flush(prefix)
wake(prefix, woken)
return moved
