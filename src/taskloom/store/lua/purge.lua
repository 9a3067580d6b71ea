-- ARGV: P, before, batch size. Returns how many runs were deleted.
local ids = redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', '(' .. ARGV[2],
                       'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = P .. 'run:' .. id
  reindex(id, view(key), nil)
  release_dedup(key, id)
  redis.call('ZREM', P .. 'ended', id)
  redis.call('UNLINK', key)
end
return #ids
