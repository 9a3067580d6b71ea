-- Every script starts with this prelude; ARGV[1] is always the key prefix.
local P = ARGV[1]
local ACTIVE = {init = true, queued = true, running = true}
local DONE = {success = true, failure = true, aborted = true, rate_limited = true}
-- Indexes: zset idx:<field>:<value> of run ids (score 0, newest first by lex order). Every run
-- has one queue, so the idx:queue:* zsets (their names in set P..'qnames') hold every run.
local IDX = {'task', 'state', 'parent_id', 'root_run_id', 'queue'}

-- A JSON string field as a Lua string; nil for null or a missing field.
local function jstr(v)
  if not v or v == 'null' then return nil end
  if not string.find(v, '\\', 1, true) then return string.sub(v, 2, -2) end  -- no escapes
  return cjson.decode(v)
end

-- The record in hash `key` (P..'run:'..id) as one JSON object (false if missing); '_' fields
-- are control. The id comes from the key: a record does not store it (an older one may).
local function record(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  local id = string.sub(key, #P + 5)
  if string.find(id, '[%c"\\]') then id = cjson.encode(id) else id = '"' .. id .. '"' end
  local parts = {'"id":' .. id}
  for i = 1, #flat, 2 do
    local name = flat[i]
    if string.byte(name, 1) ~= 95 and name ~= 'id' then
      parts[#parts + 1] = '"' .. name .. '":' .. flat[i + 1]
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- True if run `id` is found by purge's walk of the state indexes: its first 12 characters are
-- lowercase hex time (new_run_id(): 25.6 µs ticks; a child keeps its parent's) no later than
-- `ended`, the run's end. Other runs (ids chosen by hand) are kept in zset P..'ended' instead.
local function walkable(id, ended)
  local stamp = string.sub(id, 1, 12)
  if #stamp < 12 or string.find(stamp, '[^0-9a-f]') then return false end
  return tonumber(stamp, 16) * 2.56e-5 <= tonumber(ended)
end

-- A view (below) from the raw field values of a record (`f`: name -> JSON), nil if no state.
local function view_of(state, task, parent_id, root_run_id, queue, score, after, ended,
                       priority, tags)
  if not state then return nil end
  return {state = jstr(state), task = jstr(task), parent_id = jstr(parent_id),
          root_run_id = jstr(root_run_id), queue = jstr(queue), score = score, after = after,
          ended = ended, priority = jstr(priority), tags = tags or '[]'}
end

-- What the indexes of a run are keyed on (nil if the run does not exist).
local function view(key)
  local f = redis.call('HMGET', key, 'state', 'task', 'parent_id', 'root_run_id', 'queue',
                       '_score', '_after', '_end', 'priority', 'tags')
  return view_of(unpack(f, 1, 10))
end

-- The view of a record just written from `fields` (name, json, ...): no read back.
local function fields_view(fields)
  local f = {}
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  return view_of(f.state, f.task, f.parent_id, f.root_run_id, f.queue, f._score, f._after,
                 f._end, f.priority, f.tags)
end

-- The field of hash P..'counts' that counts the runs like view `v`: task US queue US state
-- US priority. Every state change passes through reindex(), which keeps these counters.
local function count_field(v)
  return v.task .. '\31' .. v.queue .. '\31' .. v.state .. '\31' .. (v.priority or 'medium')
end

-- The index additions of a batch script (enqueue, save_many of many runs): between
-- start_batch() and flush_batch() they are gathered per key and written with one command per
-- key (a thousand runs of one task: one ZADD to idx:task:<task>, not a thousand). Removals stay
-- immediate; a script indexes each run once, so nothing removed is added back meanwhile.
local BATCH = nil

local function start_batch()
  BATCH = {z = {}, zkeys = {}, s = {}, skeys = {}, c = {}}
end

-- The batch's table for `key` in `tables` (made on first use, its key listed in `keys`).
local function gathered(tables, keys, key)
  local t = tables[key]
  if not t then
    t = {}
    tables[key] = t
    keys[#keys + 1] = key
  end
  return t
end

local function zadd(key, score, member)
  if not BATCH then
    redis.call('ZADD', key, score, member)
    return
  end
  local t = gathered(BATCH.z, BATCH.zkeys, key)
  t[#t + 1] = score
  t[#t + 1] = member
end

local function sadd(key, member)
  if not BATCH then
    redis.call('SADD', key, member)
    return
  end
  gathered(BATCH.s, BATCH.skeys, key)[member] = true
end

local function hincr(field, n)
  if not BATCH then
    redis.call('HINCRBY', P .. 'counts', field, n)
    return
  end
  BATCH.c[field] = (BATCH.c[field] or 0) + n
end

local function flush_batch()
  local batch = BATCH
  BATCH = nil
  for _, key in ipairs(batch.zkeys) do
    local t = batch.z[key]
    for i = 1, #t, 1000 do  -- score, member pairs; unpack stays far below Lua's C stack limit
      redis.call('ZADD', key, unpack(t, i, math.min(i + 999, #t)))
    end
  end
  for _, key in ipairs(batch.skeys) do
    local members = {}
    for m in pairs(batch.s[key]) do members[#members + 1] = m end
    for i = 1, #members, 1000 do
      redis.call('SADD', key, unpack(members, i, math.min(i + 999, #members)))
    end
  end
  for field, n in pairs(batch.c) do
    if n ~= 0 then redis.call('HINCRBY', P .. 'counts', field, n) end
  end
end

-- Move run `id` from the index entries of view `old` to those of view `new` (nil: none).
local function reindex(id, old, new)
  local before, after = old and count_field(old), new and count_field(new)
  -- a run still in an older store's zset of every run is counted when migrate.lua moves it
  -- (a run being created cannot be there: only changes of existing runs look)
  if before ~= after and not (old and redis.call('ZSCORE', P .. 'runs', id)) then
    if before then hincr(before, -1) end
    if after then hincr(after, 1) end
  end
  if new and (not old or old.queue ~= new.queue) then
    sadd(P .. 'qnames', new.queue)
  end
  if old and (old.tags ~= (new and new.tags or '[]')) then
    for _, t in ipairs(cjson.decode(old.tags)) do
      if type(t) == 'string' then redis.call('ZREM', P .. 'tag:' .. t, id) end
    end
  end
  if new and new.tags ~= '[]' and (not old or old.tags ~= new.tags) then
    for _, t in ipairs(cjson.decode(new.tags)) do
      if type(t) == 'string' then zadd(P .. 'tag:' .. t, 0, id) end
    end
  end
  for _, f in ipairs(IDX) do
    local a, b = old and old[f], new and new[f]
    if f == 'root_run_id' then  -- a root run is its own root: not indexed (saves a key per run)
      if a == id then a = nil end
      if b == id then b = nil end
    end
    if a ~= b then
      if a then redis.call('ZREM', P .. 'idx:' .. f .. ':' .. a, id) end
      if b then zadd(P .. 'idx:' .. f .. ':' .. b, 0, id) end
    end
  end
  if old and old.state == 'queued' then
    redis.call('ZREM', P .. 'ready:' .. old.queue, id)
    redis.call('ZREM', P .. 'delayed:' .. old.queue, id)
  end
  if new and new.state == 'queued' then
    sadd(P .. 'queues', new.queue)
    if new.after then
      zadd(P .. 'delayed:' .. new.queue, new.after, id)
    else
      zadd(P .. 'ready:' .. new.queue, new.score, id)
    end
  end
  -- finished runs are found by purge in idx:state:<state> (walkable) or in zset 'ended'
  local was = old and DONE[old.state] and old.ended
  local now = new and DONE[new.state] and new.ended
  if now and not walkable(id, now) then
    zadd(P .. 'ended', now, id)
  elseif was then
    redis.call('ZREM', P .. 'ended', id)
  end
end

-- Replace every field of hash `key` with those packed in `packed`: name US json US name US
-- json ..., US being byte 31, which JSON text never holds raw, and no part is empty (one ARGV
-- per run instead of ~60: packing the arguments was the client's hot spot). Split with plain
-- find (memchr), not a pattern: a pattern walks the record a byte at a time in Lua. `fresh`:
-- the key does not exist. Returns the fields written (for fields_view()).
local function write(key, packed, fresh)
  local fields, n, pos = {}, 0, 1
  while true do
    local at = string.find(packed, '\31', pos, true)
    n = n + 1
    if not at then
      fields[n] = string.sub(packed, pos)
      break
    end
    fields[n] = string.sub(packed, pos, at - 1)
    pos = at + 1
  end
  if not fresh then redis.call('DEL', key) end
  redis.call('HSET', key, unpack(fields))
  return fields
end

-- Forget the dedup key of a run that stopped being active, if the key still points to it.
local function release_dedup(key, id)
  local dedup = jstr(redis.call('HGET', key, 'dedup_key'))
  if dedup and redis.call('HGET', P .. 'dedup', dedup) == id then
    redis.call('HDEL', P .. 'dedup', dedup)
  end
end

-- Unix seconds as the JSON of a UTC datetime field ("2027-01-15T08:00:10.250000Z"); days
-- to a civil date as in Howard Hinnant's algorithm.
local function iso_time(t)
  local secs = math.floor(t)
  local micros = math.floor((t - secs) * 1e6 + 0.5)
  if micros >= 1000000 then secs, micros = secs + 1, micros - 1000000 end
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"', y, m, d,
                       math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, micros)
end

-- The flat HGETALL of the run counters (field, count, ...), kept by reindex().
local function counters()
  return redis.call('HGETALL', P .. 'counts')
end
