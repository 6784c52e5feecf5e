--@include q_common
-- Remove delivered messages whose lease still holds.
-- ARGV: prefix, queue, then per delivery: its 'level/entry id', level, entry id, token
-- Returns per delivery 1 if acked, 0 if its lease had lapsed or it was settled already.
local prefix, queue = ARGV[1], ARGV[2]
local now, out, acked = now_ms(), {}, 0
for i = 3, #ARGV, 4 do
    local size = held(prefix, queue, ARGV[i], ARGV[i + 3], now)
    if size then
        forget(prefix, queue, ARGV[i + 1], ARGV[i + 2], ARGV[i], size)
        acked = acked + 1
        table.insert(out, 1)
    else
        table.insert(out, 0)
    end
end
if acked > 0 then
    redis.call('HINCRBY', prefix .. 'counts:' .. queue, 'acked', acked)
end
return out
