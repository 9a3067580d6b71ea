-- ARGV: P, lex max, count, then the index keys (without prefix) to read, or "*" for every
-- run (the idx:queue:* zsets). Returns id, record pairs, newest first: the newest `count` of
-- the union (each key gives at most `count`; run ids are unique across queues).
local bound, count = ARGV[2], tonumber(ARGV[3])
local keys = {}
if ARGV[4] == '*' then
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'qnames')) do keys[#keys + 1] = 'idx:queue:' .. q end
else
  for i = 4, #ARGV do keys[#keys + 1] = ARGV[i] end
end
local ids = {}
for _, k in ipairs(keys) do
  for _, id in ipairs(redis.call('ZREVRANGEBYLEX', P .. k, bound, '-', 'LIMIT', 0, count)) do
    ids[#ids + 1] = id
  end
end
if #keys > 1 then
  table.sort(ids, function(a, b) return a > b end)
end
local out = {}
for i = 1, math.min(count, #ids) do
  out[#out + 1] = ids[i]
  out[#out + 1] = record(P .. 'run:' .. ids[i])
end
return out
