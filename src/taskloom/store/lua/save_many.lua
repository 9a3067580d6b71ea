-- ARGV: P, then per run: id, dedup key or "", packed fields (as enqueue.lua takes them).
-- Replaces each record unconditionally and drops any lease on it (save.lua, for many).
local queued = false
if #ARGV > 4 then start_batch() end  -- one run: its commands as it goes, no tables
for i = 2, #ARGV, 3 do
  local id, dedup = ARGV[i], ARGV[i + 1]
  local key = P .. 'run:' .. id
  local old = view(key)
  local new = fields_view(write(key, ARGV[i + 2]))
  redis.call('ZREM', P .. 'leases', id)
  if dedup ~= '' and ACTIVE[new.state] then redis.call('HSET', P .. 'dedup', dedup, id) end
  reindex(id, old, new)
  redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
  queued = queued or new.state == 'queued'
end
if BATCH then flush_batch() end
if queued then redis.call('PUBLISH', P .. 'events:queue', 'queue') end
return 1
