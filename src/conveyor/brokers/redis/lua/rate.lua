-- Token bucket shared by every process: refill at per_second up to burst, take one if there
-- is one. Time is the server's, so hosts with skewed clocks share one bucket fairly.
-- KEYS: bucket hash
-- ARGV: per_second, burst
-- Returns the seconds until a token frees up ("0" if one was taken), as text: Lua numbers
-- would reach the caller truncated to integers.
local bucket = KEYS[1]
local per_second, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local state = redis.call('HMGET', bucket, 'tokens', 'updated_at_ms')
local tokens = burst
if state[1] then
    local elapsed = math.max(now_ms - tonumber(state[2]), 0)
    tokens = math.min(burst, tonumber(state[1]) + elapsed * per_second / 1000)
end
local wait = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait = (1 - tokens) / per_second
end
redis.call('HSET', bucket, 'tokens', string.format('%.17g', tokens),
    'updated_at_ms', string.format('%.3f', now_ms))
redis.call('PEXPIRE', bucket, string.format('%d', math.ceil(burst / per_second * 1000) + 1000))
return string.format('%.17g', wait)
