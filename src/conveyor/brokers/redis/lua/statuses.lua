-- The status of each job, false where its record is gone.
-- KEYS: the job hashes
local statuses = {}
for n, job in ipairs(KEYS) do
    statuses[n] = redis.call('HGET', job, 'status')
end
return statuses
