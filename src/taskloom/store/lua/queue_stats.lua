-- ARGV: P, rank span. Per queue holding queued runs: name, counts for ranks 0, 1, 2, then the
-- `queued` JSON of the first run of each rank and of the first delayed run ("" for none);
-- the oldest of those is the queue's oldest queued run.
local span = tonumber(ARGV[2])
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  local ready, delayed = P .. 'ready:' .. q, P .. 'delayed:' .. q
  local counts, firsts = {0, 0, 0}, {}
  for r = 0, 2 do
    local lo, hi = string.format('%.17g', r * span), '(' .. string.format('%.17g', (r + 1) * span)
    counts[r + 1] = redis.call('ZCOUNT', ready, lo, hi)
    local first = redis.call('ZRANGEBYSCORE', ready, lo, hi, 'LIMIT', 0, 1)[1]
    firsts[#firsts + 1] = first and redis.call('HGET', P .. 'run:' .. first, 'queued') or ''
  end
  for _, id in ipairs(redis.call('ZRANGE', delayed, 0, -1)) do
    local score = tonumber(redis.call('HGET', P .. 'run:' .. id, '_score'))
    if score then
      local r = math.min(2, math.floor(score / span))
      counts[r + 1] = counts[r + 1] + 1
    end
  end
  local first = redis.call('ZRANGE', delayed, 0, 0)[1]
  firsts[#firsts + 1] = first and redis.call('HGET', P .. 'run:' .. first, 'queued') or ''
  if counts[1] + counts[2] + counts[3] > 0 then
    out[#out + 1] = q
    for r = 1, 3 do out[#out + 1] = counts[r] end
    for i = 1, 4 do out[#out + 1] = firsts[i] or '' end
  end
end
return out
