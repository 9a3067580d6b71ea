-- ARGV: P, lease expiry, then per beat: id, token, progress JSON or "", note JSON.
-- Returns alive (0/1), cancel requested (0/1) per beat.
local expires = ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = P .. 'run:' .. id
  local f = redis.call('HMGET', key, '_token', 'state', 'cancel_requested')
  if f[1] == token and f[2] == '"running"' then
    redis.call('ZADD', P .. 'leases', expires, id)
    for _, name in ipairs(redis.call('SMEMBERS', P .. 'holds:' .. id)) do
      redis.call('ZADD', P .. 'slot:' .. name, 'XX', expires, id)
    end
    if ARGV[i + 2] ~= '' then
      redis.call('HSET', key, 'progress', ARGV[i + 2], 'progress_note', ARGV[i + 3])
    end
    out[#out + 1] = 1
    out[#out + 1] = f[3] == 'true' and 1 or 0
  else
    out[#out + 1] = 0
    out[#out + 1] = 0
  end
end
return out
