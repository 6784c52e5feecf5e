--@include q_common
-- Settle one delivery by replacing it with copies, in one step: a retry later (a copy
-- in the same queue, delayed), dead letters (copies routed through the dead-letter
-- exchange), or nothing (dropped).
-- KEYS: the topology counter
-- ARGV: prefix, topology version the copies were routed on, queue, lease member,
--       counter to bump ('' for none), then the copies as q_publish takes them.
-- Returns -1 if the topology changed (route again), 0 if the lease had lapsed, else 1.
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[2] then
    return -1
end
local prefix, queue, member = ARGV[1], ARGV[3], ARGV[4]
local now, woken = now_ms(), {}
if not holding(prefix, queue, {member}, now)[1] then
    return 0
end
forget(prefix, queue, {member})
if ARGV[5] ~= '' then
    count(queue, ARGV[5], 1)
end
enqueue_all(prefix, 6, now, false, woken)
flush(prefix)
wake(prefix, woken)
return 1
