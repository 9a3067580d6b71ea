-- ARGV: P, before, limit, offset, scan, source, id bound, state ('' for any), task ('' for
-- any), skipped tasks...
-- Looks at up to `scan` finished runs from `offset` of one source: '' is zset 'ended' (runs
-- whose ids are not time-ordered, and runs of older stores) in end order; a state name walks
-- idx:state:<state> in id order below `id bound` (the ids made before `before`), as a run's
-- id time is never after its end (see walkable()). Deletes the runs that ended before
-- `before` and match, until `limit` runs are gone. A deleted root takes the finished runs of
-- its family, whatever their age; every deleted run takes its run log (kv runlog:<id>).
-- Returns {deleted, looked at, kept}: the caller adds `kept` to the next call's offset.
local before, limit, source = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[6]
local state, task = ARGV[8], ARGV[9]
local skip = {}
for i = 10, #ARGV do skip[ARGV[i]] = true end
local ids
if source == '' then
  ids = redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', '(' .. ARGV[2],
                   'LIMIT', tonumber(ARGV[4]), tonumber(ARGV[5]))
else
  ids = redis.call('ZRANGEBYLEX', P .. 'idx:state:' .. source, '-', '(' .. ARGV[7],
                   'LIMIT', tonumber(ARGV[4]), tonumber(ARGV[5]))
end
local deleted, looked, kept = 0, 0, 0

local function drop(id, key, old)
  reindex(id, old, nil)
  release_dedup(key, id)
  redis.call('ZREM', P .. 'ended', id)
  redis.call('UNLINK', key, P .. 'kv:runlog:' .. id)
  deleted = deleted + 1
end

for _, id in ipairs(ids) do
  if deleted >= limit then break end
  looked = looked + 1
  local key = P .. 'run:' .. id
  local old = view(key)
  if old then  -- nil: deleted with its root earlier in this call
    if DONE[old.state] and old.ended and tonumber(old.ended) < before
        and (state == '' or old.state == state) and (task == '' or old.task == task)
        and not skip[old.task] then
      if not old.parent_id then
        for _, kid in ipairs(redis.call('ZRANGE', P .. 'idx:root_run_id:' .. id, 0, -1)) do
          local kkey = P .. 'run:' .. kid
          local kold = view(kkey)
          if kold and DONE[kold.state] then drop(kid, kkey, kold) end
        end
      end
      drop(id, key, old)
    else
      kept = kept + 1
    end
  end
end
return {deleted, looked, kept}
