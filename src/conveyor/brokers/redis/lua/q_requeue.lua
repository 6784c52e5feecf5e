--@include q_common
-- Make delivered messages ready again at once: their leases lapse now, so the next
-- receive redelivers them first. Uncounted, the group's delivery count is first set back
-- by one, so that redelivery does not count as an attempt.
-- ARGV: prefix, queue, uncounted (1/0), then per delivery: 'level/entry id', level,
--       entry id, token
-- Returns per delivery 1 if requeued, 0 if its lease had lapsed.
local prefix, queue, uncounted = ARGV[1], ARGV[2], ARGV[3] == '1'
local now, out = now_ms(), {}
for i = 4, #ARGV, 4 do
    local member, level, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local size = held(prefix, queue, member, ARGV[i + 3], now)
    if size then
        if uncounted then
            local stream = stream_of(prefix, queue, level)
            local pending = redis.call('XPENDING', stream, GROUP, id, id, 1)
            redis.call('XCLAIM', stream, GROUP, GROUP, 0, id, 'RETRYCOUNT',
                math.max(pending[1][4] - 1, 0), 'JUSTID')
        end
        redis.call('ZADD', prefix .. 'leases:' .. queue, 0, member)
        redis.call('HSET', prefix .. 'tokens:' .. queue, member, '0:' .. size)
        table.insert(out, 1)
    else
        table.insert(out, 0)
    end
end
wake(prefix, {[queue] = true})
return out
