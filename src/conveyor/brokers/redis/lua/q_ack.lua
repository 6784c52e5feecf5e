--@include q_common
-- Remove delivered messages whose lease still holds.
-- ARGV: prefix, queue, the deliveries' lease members (see words)
-- Returns per delivery 1 if acked, 0 if its lease had lapsed or it was settled already.
local prefix, queue = ARGV[1], ARGV[2]
local members = words(ARGV[3])
local held, acked, out = holding(prefix, queue, members, now_ms()), {}, {}
for n, member in ipairs(members) do
    if held[n] then
        table.insert(acked, member)
        out[n] = 1
    else
        out[n] = 0
    end
end
forget(prefix, queue, acked)
count(queue, 'acked', #acked)
flush(prefix)
return out
