-- Append one produce call's records to a topic's partitions, all or none.
-- KEYS: the topics hash, the topic's offsets hash, the idempotent producers hash
-- ARGV: topic, log key prefix, producer id ('' for none), sequence, the channel to tell
--       of the append, then per record:
--       partition, timestamp in ms ('' for the server's now), size, has key, key,
--       has value, value, headers as JSON ('' for none)
-- Returns {'ok', placements as JSON}, {'seen', the first call's placements} for a batch
-- sent again, {'sequence', the sequence expected}, or {'gone'} if the topic was deleted.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
    return {'gone'}
end
local producer, sequence = ARGV[3], tonumber(ARGV[4])
if producer ~= '' then
    local seen = redis.call('HGET', KEYS[3], producer)
    if seen then
        local state = cjson.decode(seen)
        if state.sequence == sequence then
            return {'seen', cjson.encode(state.placed)}
        end
        if sequence ~= state.sequence + 1 then
            return {'sequence', tostring(state.sequence + 1)}
        end
    end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local placed = {}
for i = 6, #ARGV, 8 do
    local partition = ARGV[i]
    local timestamp = ARGV[i + 1] == '' and now or tonumber(ARGV[i + 1])
    local offset = redis.call('HINCRBY', KEYS[2], 'e' .. partition, 1) - 1
    redis.call('HINCRBY', KEYS[2], 'b' .. partition, ARGV[i + 2])
    local fields = {'timestamp', tostring(timestamp), 'size', ARGV[i + 2]}
    if ARGV[i + 3] == '1' then
        table.insert(fields, 'key')
        table.insert(fields, ARGV[i + 4])
    end
    if ARGV[i + 5] == '1' then
        table.insert(fields, 'value')
        table.insert(fields, ARGV[i + 6])
    end
    if ARGV[i + 7] ~= '' then
        table.insert(fields, 'headers')
        table.insert(fields, ARGV[i + 7])
    end
    redis.call('XADD', ARGV[2] .. partition, (offset + 1) .. '-0', unpack(fields))
    table.insert(placed, {tonumber(partition), offset, timestamp})
end
if producer ~= '' then
    redis.call('HSET', KEYS[3], producer,
        cjson.encode({sequence = sequence, placed = placed, at = now}))
end
if #placed > 0 then
    redis.call('PUBLISH', ARGV[5], '1')
end
return {'ok', cjson.encode(placed)}
