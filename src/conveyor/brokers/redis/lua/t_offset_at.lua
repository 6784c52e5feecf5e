-- The first offset at or after a start whose record's timestamp is at or after a time,
-- looking at no more than a budget of records.
-- KEYS: the partition's stream
-- ARGV: the offset to start from, the time in ms, budget
-- Returns {1, offset} when found, {0, the offset to go on from} when the budget ran out,
-- {-1} when no record from the start on is that recent.
local time, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local entries = redis.call('XRANGE', KEYS[1], (tonumber(ARGV[1]) + 1) .. '-0', '+', 'COUNT', budget)
local last = nil
for _, entry in ipairs(entries) do
    local fields = entry[2]
    last = tonumber(string.match(entry[1], '^(%d+)')) - 1
    for i = 1, #fields, 2 do
        if fields[i] == 'timestamp' and tonumber(fields[i + 1]) >= time then
            return {1, last}
        end
    end
end
if #entries < budget then
    return {-1}
end
return {0, last + 1}
