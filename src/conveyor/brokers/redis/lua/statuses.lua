-- The status of each job, false where its record is gone.
-- ARGV: job key prefix, then a JSON array of job ids
local statuses = {}
for n, id in ipairs(cjson.decode(ARGV[2])) do
    statuses[n] = redis.call('HGET', ARGV[1] .. id, 'status')
end
return statuses
