-- ARGV: P, then one run as in _ENQUEUE, then optionally a lease token and its expiry.
-- Replaces the record unconditionally; it holds the lease given, else none.
local id, dedup = ARGV[2], ARGV[3]
local key = P .. 'run:' .. id
local old = view(key)
local new = fields_view(write(key, ARGV[4]))
if ARGV[5] then
  redis.call('HSET', key, '_token', ARGV[5])
  redis.call('ZADD', P .. 'leases', ARGV[6], id)
else
  redis.call('ZREM', P .. 'leases', id)
end
if dedup ~= '' and ACTIVE[new.state] then redis.call('HSET', P .. 'dedup', dedup, id) end
reindex(id, old, new)
redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
if new.state == 'queued' then redis.call('PUBLISH', P .. 'events:queue', 'queue') end
return 1
