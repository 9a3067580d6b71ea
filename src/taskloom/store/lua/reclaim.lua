-- ARGV: P, now, now as JSON, batch size. Returns the number of expired leases looked at,
-- then the records of the runs requeued.
local ended = ARGV[3]
local ids = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. ARGV[2],
                       'LIMIT', 0, tonumber(ARGV[4]))
local out = {#ids}
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'leases', id)
  local key = P .. 'run:' .. id
  local f = redis.call('HMGET', key, 'state', 'retry_attempt', 'start', 'worker', 'attempts')
  if f[1] == '"running"' then
    local attempt = '{"attempt":' .. f[2] .. ',"state":"interrupted","start":' .. f[3]
      .. ',"end":' .. ended .. ',"worker":' .. f[4]
      .. ',"error":{"type":"LeaseExpired","message":"worker lost its lease"}}'
    -- attempts is always compact JSON from orjson or from this splice
    local attempts = '[' .. attempt .. ']'
    if f[5] ~= '[]' then attempts = string.sub(f[5], 1, -2) .. ',' .. attempt .. ']' end
    local old = view(key)
    redis.call('HSET', key, 'state', '"queued"', 'worker', 'null', 'attempts', attempts)
    redis.call('HDEL', key, '_token')
    reindex(id, old, view(key))
    redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
    out[#out + 1] = record(key)
  end
end
if #out > 1 then redis.call('PUBLISH', P .. 'events', 'queue') end
return out
