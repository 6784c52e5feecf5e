-- What the queue scripts share (included by each, see scripts.py).
-- A queue's messages wait in one stream per priority level, read through the consumer
-- group 'conveyor'; a delivered message stays in the group's pending entries until it is
-- settled, with its lease deadline in the queue's leases zset and the token of its current
-- delivery (and its body's size) in the tokens hash, both under 'level/entry id'.

local GROUP = 'conveyor'

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function stream_of(prefix, queue, level)
    if tonumber(level) == 0 then
        return prefix .. 'queue:' .. queue
    end
    return prefix .. 'queue:' .. queue .. ':p' .. level
end

local function body_size(fields)
    for j = 1, #fields, 2 do
        if fields[j] == 'body' then
            return #fields[j + 1]
        end
    end
    return 0
end

local function ensure_level(prefix, queue, level)
    if redis.call('ZADD', prefix .. 'levels:' .. queue, 'NX', level, level) == 1 then
        -- a stream another client made may have the group already
        redis.pcall('XGROUP', 'CREATE', stream_of(prefix, queue, level), GROUP, '0', 'MKSTREAM')
    end
end

-- Store one copy of a message in a queue, ready now or after delay ms.
local function enqueue(prefix, queue, level, now, delay, fields, published, woken)
    local counts = prefix .. 'counts:' .. queue
    redis.call('HINCRBY', counts, 'bytes', body_size(fields))
    if published then
        redis.call('HINCRBY', counts, 'published', 1)
    end
    if delay > 0 then
        local seq = redis.call('INCR', prefix .. 'seq')
        redis.call('ZADD', prefix .. 'delayed:' .. queue, now + delay,
            cmsgpack.pack({seq, tonumber(level), fields}))
    else
        ensure_level(prefix, queue, level)
        redis.call('XADD', stream_of(prefix, queue, level), '*', unpack(fields))
        woken[queue] = true
    end
end

-- Copies given as: queue, level, delay ms, field count, fields... from ARGV[first] on.
local function enqueue_all(prefix, first, now, published, woken)
    local i, stored = first, 0
    while i <= #ARGV do
        local n = tonumber(ARGV[i + 3])
        local fields = {}
        for j = 1, 2 * n do
            fields[j] = ARGV[i + 3 + j]
        end
        enqueue(prefix, ARGV[i], ARGV[i + 1], now, tonumber(ARGV[i + 2]), fields, published, woken)
        i = i + 4 + 2 * n
        stored = stored + 1
    end
    return stored
end

local function wake(prefix, woken)
    for queue in pairs(woken) do
        redis.call('PUBLISH', prefix .. 'wake:' .. queue, '1')
    end
end

-- Move the queue's delayed messages that are due into their streams.
local function promote(prefix, queue, now, woken)
    local key = prefix .. 'delayed:' .. queue
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 1000)
    for _, member in ipairs(due) do
        local item = cmsgpack.unpack(member)
        ensure_level(prefix, queue, item[2])
        redis.call('XADD', stream_of(prefix, queue, item[2]), '*', unpack(item[3]))
        redis.call('ZREM', key, member)
        woken[queue] = true
    end
end

-- The size of a delivery's body if its lease still holds with this token, else nil.
local function held(prefix, queue, member, token, now)
    local current = redis.call('HGET', prefix .. 'tokens:' .. queue, member)
    if not current then
        return nil
    end
    local stored, size = string.match(current, '^(%d+):(%d+)$')
    if stored ~= token then
        return nil
    end
    local deadline = redis.call('ZSCORE', prefix .. 'leases:' .. queue, member)
    if not deadline or tonumber(deadline) <= now then
        return nil
    end
    return tonumber(size)
end

-- Remove a delivered message for good.
local function forget(prefix, queue, level, id, member, size)
    local stream = stream_of(prefix, queue, level)
    redis.call('XACK', stream, GROUP, id)
    redis.call('XDEL', stream, id)
    redis.call('ZREM', prefix .. 'leases:' .. queue, member)
    redis.call('HDEL', prefix .. 'tokens:' .. queue, member)
    redis.call('HINCRBY', prefix .. 'counts:' .. queue, 'bytes', 0 - size)
end

-- The group's last delivered entry id and pending count on a level's stream.
local function group_state(stream)
    if redis.call('EXISTS', stream) == 0 then
        return '0-0', 0
    end
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
        local info = {}
        for j = 1, #group, 2 do
            info[group[j]] = group[j + 1]
        end
        if info['name'] == GROUP then
            return info['last-delivered-id'], tonumber(info['pending'])
        end
    end
    return '0-0', 0
end

-- The messages of a level that wait (not leased): lapsed deliveries, then entries never
-- delivered, as {entry id, fields, 'level/entry id' if it was delivered}.
local function waiting(prefix, queue, level, now)
    local stream, out = stream_of(prefix, queue, level), {}
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'leases:' .. queue,
            '-inf', now)) do
        if string.match(member, '^(%d+)/') == tostring(level) then
            local id = string.sub(member, #tostring(level) + 2)
            local entry = redis.call('XRANGE', stream, id, id)
            if entry[1] then
                table.insert(out, {id, entry[1][2], member})
            end
        end
    end
    local last = group_state(stream)
    for _, entry in ipairs(redis.call('XRANGE', stream, '(' .. last, '+')) do
        table.insert(out, {entry[1], entry[2], false})
    end
    return out
end

-- Remove a waiting message (see waiting) from its stream.
local function unqueue(prefix, queue, level, item)
    local stream = stream_of(prefix, queue, level)
    if item[3] then
        redis.call('XACK', stream, GROUP, item[1])
        redis.call('ZREM', prefix .. 'leases:' .. queue, item[3])
        redis.call('HDEL', prefix .. 'tokens:' .. queue, item[3])
    end
    redis.call('XDEL', stream, item[1])
    redis.call('HINCRBY', prefix .. 'counts:' .. queue, 'bytes', 0 - body_size(item[2]))
end

local function field(fields, name)
    for j = 1, #fields, 2 do
        if fields[j] == name then
            return fields[j + 1]
        end
    end
    return nil
end
