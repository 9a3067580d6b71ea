-- ARGV: P, name, holder.
local key = P .. 'lock:' .. ARGV[2]
if redis.call('HGET', key, 'holder') == ARGV[3] then redis.call('DEL', key) end
return 0
