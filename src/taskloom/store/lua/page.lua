-- ARGV: P, index key (without prefix), lex max, count. Returns id, record pairs, newest first.
local ids = redis.call('ZREVRANGEBYLEX', P .. ARGV[2], ARGV[3], '-', 'LIMIT', 0, ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = record(P .. 'run:' .. id)
end
return out
