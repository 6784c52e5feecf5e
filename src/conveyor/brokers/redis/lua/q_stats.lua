--@include q_common
-- A queue's figures at one moment.
-- ARGV: prefix, queue
-- Returns {ready, delayed, unacked, oldest waiting entry's time (ms, -1: none), bytes,
--          published, delivered, acked, dead_lettered, now}
local prefix, queue = ARGV[1], ARGV[2]
local now = now_ms()
local leases, delayed = prefix .. 'leases:' .. queue, prefix .. 'delayed:' .. queue
local ready = redis.call('ZCOUNT', leases, '-inf', now) + redis.call('ZCOUNT', delayed, '-inf', now)
local oldest = -1
local function older(id)
    local ms = tonumber(string.match(id, '^(%d+)-'))
    if oldest < 0 or ms < oldest then
        oldest = ms
    end
end
for _, level in ipairs(redis.call('ZRANGE', prefix .. 'levels:' .. queue, 0, -1)) do
    local stream = stream_of(prefix, queue, level)
    local last, pending = group_state(stream)
    ready = ready + redis.call('XLEN', stream) - pending
    local first = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
    if first[1] then
        older(first[1][1])
    end
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 100)) do
    local _, id = parse_lease(member)
    older(id)
end
local counts = redis.call('HMGET', prefix .. 'counts:' .. queue, 'bytes', 'published',
    'delivered', 'acked', 'dead_lettered')
local figures = {ready, redis.call('ZCOUNT', delayed, '(' .. now, '+inf'),
    redis.call('ZCOUNT', leases, '(' .. now, '+inf'), oldest}
for _, value in ipairs(counts) do
    table.insert(figures, tonumber(value) or 0)
end
table.insert(figures, now)
return figures
