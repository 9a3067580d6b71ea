-- ARGV: P, id, now as JSON, now, error JSON. Returns the updated record or false.
local id = ARGV[2]
local key = P .. 'run:' .. id
local state = jstr(redis.call('HGET', key, 'state'))
if not state then return false end
if state == 'init' or state == 'queued' then
  local old = view(key)
  redis.call('HSET', key, 'state', '"aborted"', 'end', ARGV[3], '_end', ARGV[4],
             'error', ARGV[5])
  reindex(id, old, view(key))
  release_dedup(key, id)
elseif state == 'running' then
  redis.call('HSET', key, 'cancel_requested', 'true')
  redis.call('PUBLISH', P .. 'events', 'cancel')  -- workers beat now, not at their next beat
end
redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
return record(key)
