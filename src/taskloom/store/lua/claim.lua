-- ARGV: P, worker JSON, start JSON, now, lease expiry, token base, limit, all ("1"/"0"), queues...
-- Returns record, token, id, record, token, id, ...
local worker, start, now, expires, base = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local limit = tonumber(ARGV[7])
local all = ARGV[8] == '1'
local queues = all and redis.call('SMEMBERS', P .. 'queues') or {unpack(ARGV, 9)}
local cands = {}
for _, q in ipairs(queues) do
  local ready, delayed = P .. 'ready:' .. q, P .. 'delayed:' .. q
  -- runs whose execute_after passed join the ready queue at their priority/FIFO place
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now)) do
    local score = redis.call('HGET', P .. 'run:' .. id, '_score')
    if score then redis.call('ZADD', ready, score, id) end
    redis.call('ZREM', delayed, id)
  end
  local got = redis.call('ZRANGE', ready, 0, limit - 1, 'WITHSCORES')
  for j = 1, #got, 2 do cands[#cands + 1] = {got[j], tonumber(got[j + 1]), ready} end
  if all and #got == 0 and redis.call('EXISTS', delayed) == 0 then
    redis.call('SREM', P .. 'queues', q)  -- enqueue adds it back with its next run
  end
end
if #queues > 1 then
  table.sort(cands, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
end
local out = {}
for j = 1, math.min(limit, #cands) do
  local id = cands[j][1]
  local key = P .. 'run:' .. id
  local old = view(key)
  if old and old.state == 'queued' then
    local new = {}
    for k, v in pairs(old) do new[k] = v end
    new.state = 'running'
    reindex(id, old, new)
    local token = base .. j
    if redis.call('HGET', key, 'start') == 'null' then redis.call('HSET', key, 'start', start) end
    redis.call('HSET', key, 'state', '"running"', 'worker', worker, '_token', token)
    redis.call('ZADD', P .. 'leases', expires, id)
    out[#out + 1] = record(key)
    out[#out + 1] = token
    out[#out + 1] = id
  else  -- a stale entry (the record was deleted or changed behind our back): drop it
    redis.call('ZREM', cands[j][3], id)
  end
end
return out
