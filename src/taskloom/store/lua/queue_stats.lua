-- ARGV: P, rank span. Per queue holding queued runs: name, counts for ranks 0, 1, 2, then the
-- `queued` JSON of the first run of each rank and of the first delayed run ("" for none).
-- The oldest of those is the queue's oldest queued run unless an older one sits deeper with
-- a later execute_after (a retry, a run held back): close enough for `queue ls`, and it keeps
-- this script from reading every queued run.
local span = tonumber(ARGV[2])
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  local counts = queue_depth(q, span)
  if counts[1] + counts[2] + counts[3] > 0 then
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
end
return out
