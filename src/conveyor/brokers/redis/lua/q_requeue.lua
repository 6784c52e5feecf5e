--@include q_common
-- Make delivered messages ready again at once: their leases lapse now (token 0, which no
-- receive hands out), so the next receive redelivers them first. Uncounted, the group's
-- delivery count is first set back by one, so that redelivery is not an attempt.
-- ARGV: prefix, queue, uncounted (1/0), the deliveries' lease members (see words)
-- Returns per delivery 1 if requeued, 0 if its lease had lapsed.
local prefix, queue, uncounted = ARGV[1], ARGV[2], ARGV[3] == '1'
local members = words(ARGV[4])
local held, out = holding(prefix, queue, members, now_ms()), {}
local leases = prefix .. 'leases:' .. queue
for n, member in ipairs(members) do
    out[n] = 0
    if held[n] then
        local level, id, _, size = parse_lease(member)
        if uncounted then
            local stream = stream_of(prefix, queue, level)
            local pending = redis.call('XPENDING', stream, GROUP, id, id, 1)
            redis.call('XCLAIM', stream, GROUP, GROUP, 0, id, 'RETRYCOUNT',
                math.max(pending[1][4] - 1, 0), 'JUSTID')
        end
        redis.call('ZREM', leases, member)
        redis.call('ZADD', leases, 0, level .. '/' .. id .. '/0/' .. size)
        out[n] = 1
    end
end
wake(prefix, {[queue] = true})
return out
