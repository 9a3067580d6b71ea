-- ARGV: P, the caller's origin (published on events:queue, so its own listener can skip the
-- wake-up its caller made already), then per run: id, dedup key or "", packed fields.
-- Returns per run "" (inserted) or the record that stands in its place.
local out = {}
if #ARGV > 5 then start_batch() end  -- one run: its commands as it goes, no tables
for i = 3, #ARGV, 3 do
  local id, dedup = ARGV[i], ARGV[i + 1]
  local key = P .. 'run:' .. id
  local existing = nil
  if redis.call('EXISTS', key) == 1 then
    existing = key
  elseif dedup ~= '' then
    local other = redis.call('HGET', P .. 'dedup', dedup)
    if other then
      local okey = P .. 'run:' .. other
      local f = redis.call('HMGET', okey, 'state', 'dedup_key')
      local state = jstr(f[1])
      -- the key's run is still active (and still that key's: a purged id may be reused)
      if state and ACTIVE[state] and jstr(f[2]) == dedup then existing = okey end
    end
  end
  if existing then
    out[#out + 1] = record(existing)
  else
    local fields = write(key, ARGV[i + 2], true)
    if dedup ~= '' then redis.call('HSET', P .. 'dedup', dedup, id) end
    reindex(id, nil, fields_view(fields))
    out[#out + 1] = ''
  end
end
if BATCH then flush_batch() end
redis.call('PUBLISH', P .. 'events:queue', ARGV[2])
return out
