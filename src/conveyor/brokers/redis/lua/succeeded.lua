-- Which idempotency keys name a kept job that succeeded. The marker outlives a record that
-- ran again or was discarded, so the record's own status decides.
-- KEYS: one succeeded marker per key
-- ARGV: job key prefix
-- Returns the (1-based) positions of the keys that succeeded.
local found = {}
for i, marker in ipairs(KEYS) do
    local id = redis.call('GET', marker)
    if id and redis.call('HGET', ARGV[1] .. id, 'status') == 'succeeded' then
        table.insert(found, i)
    end
end
return found
