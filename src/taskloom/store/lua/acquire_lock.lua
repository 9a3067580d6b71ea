-- ARGV: P, name, holder, expiry, now. Returns 1 if the holder has the lock.
local key = P .. 'lock:' .. ARGV[2]
local f = redis.call('HMGET', key, 'holder', 'expires')
if not f[1] or f[1] == ARGV[3] or tonumber(f[2]) < tonumber(ARGV[5]) then
  redis.call('HSET', key, 'holder', ARGV[3], 'expires', ARGV[4])
  return 1
end
return 0
