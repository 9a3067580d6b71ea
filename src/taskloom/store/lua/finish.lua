-- ARGV: P, then per item: id, token, packed fields. Returns 1/0 (written) per item.
local out = {}
local requeued = false
for i = 2, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = P .. 'run:' .. id
  local f = redis.call('HMGET', key, '_token', 'state', 'cancel_requested')
  if f[1] == token and f[2] == '"running"' then
    local old = view(key)
    -- also drops _token: the lease is released
    local new = fields_view(write(key, ARGV[i + 2]))
    if DONE[new.state] then  -- a request to cancel a finished run means nothing (absent: false)
      redis.call('HDEL', key, 'cancel_requested')
    else  -- a request that came during the attempt holds for the next one
      redis.call('HSET', key, 'cancel_requested', f[3] == 'true' and 'true' or 'false')
    end
    redis.call('ZREM', P .. 'leases', id)
    reindex(id, old, new)
    if new.state == 'queued' then
      requeued = true
    elseif DONE[new.state] then
      release_dedup(key, id)
    end
    -- a waiter subscribed here gets the record in the message: no read after its wake-up
    -- (NUMSUB counts this node only: a cluster's other nodes get the plain wake-up)
    local channel = P .. 'events:run:' .. id
    if redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0 then
      redis.call('PUBLISH', channel, record(key))
    else
      redis.call('PUBLISH', channel, 'run:' .. id)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if requeued then redis.call('PUBLISH', P .. 'events:queue', 'queue') end
return out
