-- ARGV: P, worker JSON, start JSON, now, lease expiry, token base, limit, all ("1"/"0"),
-- rank span, task start-rate limits (JSON {task: [count, per seconds]}), queues...
-- Paused queues (P paused) are skipped. With a start-rate limit (the task's, or the queue's in
-- P qlimits), a candidate starts only if its window (P rate:<key>, start times) has room; else
-- it stays queued with execute_after = when a slot frees (the k-th held back on a key takes
-- the k-th slot to free, one window later past the slots the window has).
-- Returns record, token, id, record, token, id, ..., then retry_at ("" if nothing was held).
local worker, start, now, expires, base = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local limit = tonumber(ARGV[7])
local all = ARGV[8] == '1'
local span = tonumber(ARGV[9])
local task_limits = cjson.decode(ARGV[10])
local nowf = tonumber(now)
local function num(x) return string.format('%.17g', x) end

local paused = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'paused')) do paused[q] = true end
local queue_limits = {}
local flat_limits = redis.call('HGETALL', P .. 'qlimits')
for i = 1, #flat_limits, 2 do queue_limits[flat_limits[i]] = cjson.decode(flat_limits[i + 1]) end
local gated = next(task_limits) ~= nil or next(queue_limits) ~= nil
local fetch = gated and math.max(limit, 200) or limit  -- held-back runs make room for more

local queues = all and redis.call('SMEMBERS', P .. 'queues') or {unpack(ARGV, 11)}
local cands = {}
local full = false  -- a queue had more candidates than fetched
for _, q in ipairs(queues) do
  if not paused[q] then
    local ready, delayed = P .. 'ready:' .. q, P .. 'delayed:' .. q
    -- runs whose execute_after passed join the ready queue at their priority/FIFO place
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now)) do
      local score = redis.call('HGET', P .. 'run:' .. id, '_score')
      if score then redis.call('ZADD', ready, score, id) end
      redis.call('ZREM', delayed, id)
    end
    local got = redis.call('ZRANGE', ready, 0, fetch - 1, 'WITHSCORES')
    for j = 1, #got, 2 do cands[#cands + 1] = {got[j], tonumber(got[j + 1]), ready, q} end
    full = full or #got == 2 * fetch
    if all and #got == 0 and redis.call('EXISTS', delayed) == 0 then
      redis.call('SREM', P .. 'queues', q)  -- enqueue adds it back with its next run
    end
  end
end
if #queues > 1 then
  table.sort(cands, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
end

-- The start gate: nil if `keys` (key -> {count, per}) all have room, else when they will.
local held = {}
local function wait_for(keys)
  local wait = nil
  for key, lim in pairs(keys) do
    local n, per = lim[1], lim[2]
    local zkey = P .. 'rate:' .. key
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', num(nowf - per))
    local m = redis.call('ZCARD', zkey)
    if m >= n then
      local k = held[key] or 0
      held[key] = k + 1
      local idx = m - n + (k % n)
      local s = tonumber(redis.call('ZRANGE', zkey, idx, idx, 'WITHSCORES')[2])
      local at = s + per * (math.floor(k / n) + 1)
      if not wait or at > wait then wait = at end
    end
  end
  return wait
end

local out = {}
local retry = nil
local taken = 0
for j = 1, #cands do
  if taken >= limit then break end
  local id, score, ready, q = cands[j][1], cands[j][2], cands[j][3], cands[j][4]
  local key = P .. 'run:' .. id
  local old = view(key)
  if old and old.state == 'queued' then
    local keys = {}
    if gated then
      if task_limits[old.task] then keys['task:' .. old.task] = task_limits[old.task] end
      if queue_limits[q] then keys['queue:' .. q] = queue_limits[q] end
    end
    local wait = next(keys) and wait_for(keys)
    if wait then
      if not retry or wait < retry then retry = wait end
      local rank = math.floor(score / span)
      redis.call('HSET', key, 'execute_after', iso_time(wait), '_after', num(wait),
                 '_score', num(rank * span + wait))
      redis.call('ZREM', ready, id)
      redis.call('ZADD', P .. 'delayed:' .. q, num(wait), id)
    else
      taken = taken + 1
      local token = base .. j
      for rkey, lim in pairs(keys) do
        local zkey = P .. 'rate:' .. rkey
        redis.call('ZADD', zkey, now, token)
        redis.call('PEXPIRE', zkey, math.ceil(lim[2] * 1000) + 1000)
      end
      local new = {}
      for k, v in pairs(old) do new[k] = v end
      new.state = 'running'
      reindex(id, old, new)
      if redis.call('HGET', key, 'start') == 'null' then redis.call('HSET', key, 'start', start) end
      redis.call('HSET', key, 'state', '"running"', 'worker', worker, '_token', token)
      redis.call('ZADD', P .. 'leases', expires, id)
      out[#out + 1] = record(key)
      out[#out + 1] = token
      out[#out + 1] = id
    end
  else  -- a stale entry (the record was deleted or changed behind our back): drop it
    redis.call('ZREM', ready, id)
  end
end
if retry == nil and full and taken < limit then
  retry = nowf  -- more may be due behind the runs held back or the stale entries: claim again
end
out[#out + 1] = retry and num(retry) or ''
return out
