-- ARGV: P, rank span, all ("1"/"0"), queue. Returns queued counts for ranks 0, 1, 2.
local span = tonumber(ARGV[2])
local queues = ARGV[3] == '1' and redis.call('SMEMBERS', P .. 'queues') or {ARGV[4]}
local counts = {0, 0, 0}
for _, q in ipairs(queues) do
  for r = 0, 2 do
    counts[r + 1] = counts[r + 1] + redis.call('ZCOUNT', P .. 'ready:' .. q,
      string.format('%.17g', r * span), '(' .. string.format('%.17g', (r + 1) * span))
  end
  -- delayed runs are scored by time, so their rank comes from their ready score
  for _, id in ipairs(redis.call('ZRANGE', P .. 'delayed:' .. q, 0, -1)) do
    local score = tonumber(redis.call('HGET', P .. 'run:' .. id, '_score'))
    if score then
      local r = math.min(2, math.floor(score / span))
      counts[r + 1] = counts[r + 1] + 1
    end
  end
end
return counts
