-- ARGV: P, then one run as in _ENQUEUE. Replaces the record unconditionally.
local id, dedup = ARGV[2], ARGV[3]
local key = P .. 'run:' .. id
local old = view(key)
write(key, ARGV[4])
redis.call('ZREM', P .. 'leases', id)
local new = view(key)
if dedup ~= '' and ACTIVE[new.state] then redis.call('HSET', P .. 'dedup', dedup, id) end
reindex(id, old, new)
redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
if new.state == 'queued' then redis.call('PUBLISH', P .. 'events', 'queue') end
return 1
