-- ARGV: P, ids... Returns the record of each id, or false.
local out = {}
for i = 2, #ARGV do out[#out + 1] = record(P .. 'run:' .. ARGV[i]) end
return out
