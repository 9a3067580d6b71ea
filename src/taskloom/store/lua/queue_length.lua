-- ARGV: P, rank span, all ("1"/"0"), queue. Returns queued counts for ranks 0, 1, 2.
local span = tonumber(ARGV[2])
local queues = ARGV[3] == '1' and redis.call('SMEMBERS', P .. 'queues') or {ARGV[4]}
local counts = {0, 0, 0}
for _, q in ipairs(queues) do
  local depth = queue_depth(q, span)
  for r = 1, 3 do counts[r] = counts[r] + depth[r] end
end
return counts
