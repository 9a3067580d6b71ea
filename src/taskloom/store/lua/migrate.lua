-- ARGV: P, batch size. Moves up to a batch of runs from the index of every run that stores
-- written before idx:queue:* kept (zset P..'runs') into their queue's index and tag indexes,
-- and counts each as it is now (reindex() leaves the counts of such runs alone until then).
-- Returns how many are left: the caller repeats until 0 (each call is short).
local left = redis.call('ZRANGE', P .. 'runs', 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(left) do
  local v = view(P .. 'run:' .. id)
  if v then
    redis.call('ZADD', P .. 'idx:queue:' .. v.queue, 0, id)
    redis.call('SADD', P .. 'qnames', v.queue)
    redis.call('HINCRBY', P .. 'counts', count_field(v), 1)
    if v.tags ~= '[]' then
      for _, t in ipairs(cjson.decode(v.tags)) do
        if type(t) == 'string' then redis.call('ZADD', P .. 'tag:' .. t, 0, id) end
      end
    end
  end
  redis.call('ZREM', P .. 'runs', id)
end
return redis.call('ZCARD', P .. 'runs')
