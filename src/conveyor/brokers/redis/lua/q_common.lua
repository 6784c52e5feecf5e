-- What the queue scripts share (included by each, see scripts.py).
-- A queue's messages wait in one stream per priority level, read through the consumer
-- group 'conveyor'. A delivered message stays in the group's pending entries until it is
-- settled; its lease is a member 'level/entry id/token/body size' of the queue's leases
-- zset, scored by the deadline (ms, the server's clock). The token names the receive that
-- delivered it, so a settlement from an earlier delivery finds no member and is refused.

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

-- Lease members as scripts take them: one argument, separated by spaces.
local function words(text)
    local out = {}
    for word in string.gmatch(text, '%S+') do
        table.insert(out, word)
    end
    return out
end

local function parse_lease(member)
    local level, id, token, size = string.match(member, '^(%d+)/([^/]+)/(%d+)/(%d+)$')
    return level, id, token, tonumber(size)
end

local function body_size(fields)
    if fields[3] == 'body' then
        return #fields[4]
    end
    for j = 1, #fields, 2 do
        if fields[j] == 'body' then
            return #fields[j + 1]
        end
    end
    return 0
end

local function field(fields, name)
    for j = 1, #fields, 2 do
        if fields[j] == name then
            return fields[j + 1]
        end
    end
    return nil
end

-- Counters a script bumps, added up and written once at its end (flush).
local tally = {}

local function count(queue, name, by)
    local counters = tally[queue]
    if not counters then
        counters = {}
        tally[queue] = counters
    end
    counters[name] = (counters[name] or 0) + by
end

local function flush(prefix)
    for queue, counters in pairs(tally) do
        for name, by in pairs(counters) do
            if by ~= 0 then
                redis.call('HINCRBY', prefix .. 'counts:' .. queue, name, by)
            end
        end
    end
    tally = {}
end

local ensured = {}

local function ensure_level(prefix, queue, level)
    local key = queue .. '/' .. level
    if ensured[key] then
        return
    end
    ensured[key] = true
    if redis.call('ZADD', prefix .. 'levels:' .. queue, 'NX', level, level) == 1 then
        -- a stream another client made may have the group already
        redis.pcall('XGROUP', 'CREATE', stream_of(prefix, queue, level), GROUP, '0', 'MKSTREAM')
    end
end

-- Store one copy of a message in a queue, ready now or after delay ms.
local function enqueue(prefix, queue, level, now, delay, fields, published, woken)
    count(queue, 'bytes', body_size(fields))
    if published then
        count(queue, 'published', 1)
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

-- Copies given from ARGV[first] on, in groups: queue, level, delay ms, how many copies,
-- then per copy its field count and fields. A copy's fields are passed to XADD straight
-- from ARGV, with no table built for them.
local function enqueue_all(prefix, first, now, published, woken)
    local i, stored = first, 0
    while i <= #ARGV do
        local queue, level, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
        local copies = tonumber(ARGV[i + 3])
        local stream = stream_of(prefix, queue, level)
        if delay == 0 then
            ensure_level(prefix, queue, level)
            woken[queue] = true
        end
        i = i + 4
        local size = 0
        for _ = 1, copies do
            local last = i + 2 * tonumber(ARGV[i])
            if ARGV[i + 3] == 'body' then
                size = size + #ARGV[i + 4]
            end
            if delay > 0 then
                local seq = redis.call('INCR', prefix .. 'seq')
                redis.call('ZADD', prefix .. 'delayed:' .. queue, now + delay,
                    cmsgpack.pack({seq, tonumber(level), {unpack(ARGV, i + 1, last)}}))
            else
                redis.call('XADD', stream, '*', unpack(ARGV, i + 1, last))
            end
            i = last + 1
        end
        count(queue, 'bytes', size)
        if published then
            count(queue, 'published', copies)
        end
        stored = stored + copies
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
        woken[queue] = true
    end
    if #due > 0 then
        redis.call('ZREM', key, unpack(due))
    end
end

-- Which of the given lease members still hold (a score past now): true or false each.
local function holding(prefix, queue, members, now)
    if #members == 0 then
        return {}
    end
    local scores = redis.call('ZMSCORE', prefix .. 'leases:' .. queue, unpack(members))
    local held = {}
    for n, score in ipairs(members) do
        held[n] = scores[n] ~= false and tonumber(scores[n]) > now
    end
    return held
end

-- Remove delivered messages for good, given their lease members.
local function forget(prefix, queue, members)
    if #members == 0 then
        return
    end
    local by_stream, size = {}, 0
    for _, member in ipairs(members) do
        local level, id, _, bytes = parse_lease(member)
        local stream = stream_of(prefix, queue, level)
        by_stream[stream] = by_stream[stream] or {}
        table.insert(by_stream[stream], id)
        size = size + bytes
    end
    for stream, ids in pairs(by_stream) do
        redis.call('XACK', stream, GROUP, unpack(ids))
        redis.call('XDEL', stream, unpack(ids))
    end
    redis.call('ZREM', prefix .. 'leases:' .. queue, unpack(members))
    count(queue, 'bytes', 0 - size)
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
-- delivered, as {entry id, fields, lease member if it was delivered}.
local function waiting(prefix, queue, level, now)
    local stream, out = stream_of(prefix, queue, level), {}
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'leases:' .. queue,
            '-inf', now)) do
        local lapsed_level, id = parse_lease(member)
        if lapsed_level == tostring(level) then
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
    end
    redis.call('XDEL', stream, item[1])
    count(queue, 'bytes', 0 - body_size(item[2]))
end
