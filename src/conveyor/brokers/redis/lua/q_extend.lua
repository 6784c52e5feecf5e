--@include q_common
-- Hold a delivery's lease for ms from now, if it still holds.
-- ARGV: prefix, queue, lease member, ms
-- Returns the new deadline (ms), or -1 if the lease had lapsed.
local prefix, queue, member = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
if not holding(prefix, queue, {member}, now)[1] then
    return -1
end
local deadline = now + tonumber(ARGV[4])
redis.call('ZADD', prefix .. 'leases:' .. queue, 'XX', deadline, member)
return deadline
