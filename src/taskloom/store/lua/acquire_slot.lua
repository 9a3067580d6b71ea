-- ARGV: P, name, holder, limit, expiry, now. Returns 1 if the holder has a slot.
local name, holder = ARGV[2], ARGV[3]
local key = P .. 'slot:' .. name
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. ARGV[6])) do
  redis.call('ZREM', key, gone)
  redis.call('SREM', P .. 'holds:' .. gone, name)
end
if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < tonumber(ARGV[4]) then
  redis.call('ZADD', key, ARGV[5], holder)
  redis.call('SADD', P .. 'holds:' .. holder, name)
  return 1
end
return 0
