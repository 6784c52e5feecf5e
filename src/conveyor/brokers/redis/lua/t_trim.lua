-- Retention for one partition: drop records from the head while they are older than the
-- cutoff or the partition holds more than its byte limit, at most a budget of them.
-- KEYS: the partition's stream, the topic's offsets hash
-- ARGV: partition, cutoff in ms ('' for none), retention bytes ('' for none), budget
-- Returns {records removed, 1 if the budget ran out (call again) else 0}.
local partition = ARGV[1]
local start = tonumber(redis.call('HGET', KEYS[2], 's' .. partition) or '0')
local bytes = tonumber(redis.call('HGET', KEYS[2], 'b' .. partition) or '0')
local cutoff, limit, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local excess = limit and bytes - limit or 0
local entries = redis.call('XRANGE', KEYS[1], (start + 1) .. '-0', '+', 'COUNT', budget)
local removed, removed_bytes, new_start = 0, 0, start
for _, entry in ipairs(entries) do
    local fields, timestamp, size = entry[2], 0, 0
    for i = 1, #fields, 2 do
        if fields[i] == 'timestamp' then
            timestamp = tonumber(fields[i + 1])
        elseif fields[i] == 'size' then
            size = tonumber(fields[i + 1])
        end
    end
    if not (cutoff and timestamp < cutoff) and removed_bytes >= excess then
        break
    end
    removed, removed_bytes = removed + 1, removed_bytes + size
    new_start = tonumber(string.match(entry[1], '^(%d+)'))
end
if removed == 0 then
    return {0, 0}
end
redis.call('XTRIM', KEYS[1], 'MINID', (new_start + 1) .. '-0')
redis.call('HSET', KEYS[2], 's' .. partition, new_start)
redis.call('HINCRBY', KEYS[2], 'b' .. partition, -removed_bytes)
return {removed, removed >= budget and 1 or 0}
