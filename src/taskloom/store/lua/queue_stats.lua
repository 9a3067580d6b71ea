-- ARGV: P, rank span. Per queue holding queued runs: name, counts for ranks 0, 1, 2, then the
-- `queued` JSON of the first run of each rank and of the first delayed run ("" for none).
-- Counts come from the counters. The oldest of those firsts is the queue's oldest queued run
-- unless an older one sits deeper with a later execute_after (a retry, a run held back):
-- close enough for `queue ls`, and it keeps this script from reading every queued run.
local span = tonumber(ARGV[2])
local RANK = {high = 1, medium = 2, low = 3}
local depth, names = {}, {}
local flat = counters()
for i = 1, #flat, 2 do
  local n = tonumber(flat[i + 1])
  local task, q, state, priority = string.match(flat[i], '^(.*)\31(.*)\31(.*)\31(.*)$')
  if n > 0 and state == 'queued' then
    if not depth[q] then depth[q] = {0, 0, 0}; names[#names + 1] = q end
    local r = RANK[priority] or 2
    depth[q][r] = depth[q][r] + n
  end
end
local out = {}
for _, q in ipairs(names) do
  local counts = depth[q]
  out[#out + 1] = q
  for r = 1, 3 do out[#out + 1] = counts[r] end
  for r = 0, 2 do
    local first = redis.call('ZRANGEBYSCORE', P .. 'ready:' .. q, string.format('%.17g', r * span),
      '(' .. string.format('%.17g', (r + 1) * span), 'LIMIT', 0, 1)[1]
    out[#out + 1] = first and redis.call('HGET', P .. 'run:' .. first, 'queued') or ''
  end
  local first = redis.call('ZRANGE', P .. 'delayed:' .. q, 0, 0)[1]
  out[#out + 1] = first and redis.call('HGET', P .. 'run:' .. first, 'queued') or ''
end
return out
