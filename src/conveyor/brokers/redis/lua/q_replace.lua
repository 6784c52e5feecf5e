--@include q_common
-- Settle one delivery by replacing it with copies, in one step: a retry later (a copy
-- in the same queue, delayed), dead letters (copies routed through the dead-letter
-- exchange), or nothing (dropped).
-- KEYS: the topology counter
-- ARGV: prefix, topology version the copies were routed on, queue, 'level/entry id',
--       level, entry id, token, counter to bump ('' for none), then the copies as
--       q_publish takes them.
-- Returns -1 if the topology changed (route again), 0 if the lease had lapsed, else 1.
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[2] then
    return -1
end
local prefix, queue, member = ARGV[1], ARGV[3], ARGV[4]
local now, woken = now_ms(), {}
local size = held(prefix, queue, member, ARGV[7], now)
if not size then
    return 0
end
forget(prefix, queue, ARGV[5], ARGV[6], member, size)
if ARGV[8] ~= '' then
    redis.call('HINCRBY', prefix .. 'counts:' .. queue, ARGV[8], 1)
end
enqueue_all(prefix, 9, now, false, woken)
wake(prefix, woken)
return 1
