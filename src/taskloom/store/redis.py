"""The Redis store: every state change is one Lua script, so it is atomic on the server.

URL: ``redis://``, ``rediss://`` or ``unix://`` as redis-py reads it, plus ``prefix=`` (default
``taskloom:``), stripped before redis-py sees the URL, so several apps share one server. Every
time is the ``now`` float passed in (never Redis TIME), so a fake clock drives this store too.

Keys (``P`` is the prefix)::

  P run:<id>                 hash: the run record, one field per TaskRun field holding that
                             field's JSON (``"state" -> '"queued"'``), plus control fields
                             starting with ``_``: ``_score`` (ready-queue score), ``_after``
                             (execute_after, Unix s), ``_end`` (end, Unix s), ``_token`` (lease)
  P ready:<queue>            zset of due queued runs, score = rank * 1e11 + (execute_after or
                             queued): ZRANGE gives priority, then FIFO, then id
  P delayed:<queue>          zset of queued runs with an execute_after, score = execute_after;
                             claim moves the due ones to ready:<queue>
  P queues                   set of queue names that have (or had) queued runs
  P leases                   zset run id -> lease expiry, for reclaim
  P dedup                    hash dedup key -> id of the run that took it
  P runs                     zset (all scores 0) of every run id: newest first by ZREVRANGEBYLEX
  P idx:<field>:<value>      same, per task / state / parent_id / root_run_id (a root run is
                             not in its own root index: queries add it)
  P ended                    zset finished run id -> end, for purge
  P slot:<name>              zset holder -> expiry;  P holds:<holder>  set of slot names held
  P lock:<name>              hash holder, expires
  P kv:<key>                 hash v (value), x (expiry or "")
  P workers                  hash worker -> JSON {seen, expires, info}
  P events                   pub/sub channel: "queue" and "cancel" for every process
  P events:run:<id>          pub/sub channel per run, subscribed only while a process waits on it

Why one hash field per record field: the scripts edit records (state, worker, start, progress,
an appended attempt) and cjson would mangle user JSON on a decode/encode round trip (empty
arrays become objects, floats keep 14 digits, big integers lose precision). Scripts only ever
overwrite a field with JSON made in Python, or splice strings; the record is the fields
joined into one object. Keys are derived inside the scripts from the prefix, so this targets
a single Redis server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..errors import StoreUnavailableError, missing_extra
from ..run import TaskPriority, TaskRun, TaskState
from .base import Beat, BeatReply, Lease, Notifier, RunQuery, WorkerInfo, dt, matches, ts
from .records import claimed, decode_or_stand_in, decode_run

try:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
    from redis.asyncio.connection import Connection
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.commands.core import AsyncScript
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise missing_extra("redis", "redis") from exc

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "taskloom:"
RANK_SPAN = 1e11  # score = rank * RANK_SPAN + due seconds; due is clamped below the span
RECLAIM_BATCH = 500  # runs per reclaim/purge script call, so one call never blocks Redis long
LISTENER_BACKOFF = (0.1, 5.0)  # first and longest wait between listener reconnects

# -- Lua ------------------------------------------------------------------------------------------
# Every script starts with this prelude; ARGV[1] is always the key prefix.
_PRELUDE = r"""
local P = ARGV[1]
local ACTIVE = {init = true, queued = true, running = true}
local DONE = {success = true, failure = true, aborted = true, rate_limited = true}
local IDX = {'task', 'state', 'parent_id', 'root_run_id'}

-- A JSON string field as a Lua string; nil for null or a missing field.
local function jstr(v)
  if not v or v == 'null' then return nil end
  if not string.find(v, '\\', 1, true) then return string.sub(v, 2, -2) end  -- no escapes
  return cjson.decode(v)
end

-- The record in hash `key` as one JSON object (false if missing); '_' fields are control.
local function record(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  local parts = {}
  for i = 1, #flat, 2 do
    if string.byte(flat[i], 1) ~= 95 then
      parts[#parts + 1] = '"' .. flat[i] .. '":' .. flat[i + 1]
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- What the indexes of a run are keyed on (nil if the run does not exist).
local function view(key)
  local f = redis.call('HMGET', key, 'state', 'task', 'parent_id', 'root_run_id', 'queue',
                       '_score', '_after', '_end')
  if not f[1] then return nil end
  return {state = jstr(f[1]), task = jstr(f[2]), parent_id = jstr(f[3]),
          root_run_id = jstr(f[4]), queue = jstr(f[5]), score = f[6], after = f[7],
          ended = f[8]}
end

-- Move run `id` from the index entries of view `old` to those of view `new` (nil: none).
local function reindex(id, old, new)
  if new and not old then redis.call('ZADD', P .. 'runs', 0, id) end
  if old and not new then redis.call('ZREM', P .. 'runs', id) end
  for _, f in ipairs(IDX) do
    local a, b = old and old[f], new and new[f]
    if f == 'root_run_id' then  -- a root run is its own root: not indexed (saves a key per run)
      if a == id then a = nil end
      if b == id then b = nil end
    end
    if a ~= b then
      if a then redis.call('ZREM', P .. 'idx:' .. f .. ':' .. a, id) end
      if b then redis.call('ZADD', P .. 'idx:' .. f .. ':' .. b, 0, id) end
    end
  end
  if old and old.state == 'queued' then
    redis.call('ZREM', P .. 'ready:' .. old.queue, id)
    redis.call('ZREM', P .. 'delayed:' .. old.queue, id)
  end
  if new and new.state == 'queued' then
    redis.call('SADD', P .. 'queues', new.queue)
    if new.after then
      redis.call('ZADD', P .. 'delayed:' .. new.queue, new.after, id)
    else
      redis.call('ZADD', P .. 'ready:' .. new.queue, new.score, id)
    end
  end
  local was = old and DONE[old.state] and old.ended
  local now = new and DONE[new.state] and new.ended
  if was and not now then redis.call('ZREM', P .. 'ended', id) end
  if now then redis.call('ZADD', P .. 'ended', now, id) end
end

-- Replace every field of hash `key` with those packed in `packed`: name US json US name US
-- json ..., US being byte 31, which JSON text never holds raw, and no part is empty (one ARGV
-- per run instead of ~60: packing the arguments was the client's hot spot).
local function write(key, packed)
  local args = {}
  for part in string.gmatch(packed, '[^\31]+') do args[#args + 1] = part end
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(args))
end

-- Forget the dedup key of a run that stopped being active, if the key still points to it.
local function release_dedup(key, id)
  local dedup = jstr(redis.call('HGET', key, 'dedup_key'))
  if dedup and redis.call('HGET', P .. 'dedup', dedup) == id then
    redis.call('HDEL', P .. 'dedup', dedup)
  end
end
"""

# ARGV: P, then per run: id, dedup key or "", packed fields (see write()).
# Returns per run "" (inserted) or the record that stands in its place.
_ENQUEUE = r"""
local out = {}
local i = 2
for i = 2, #ARGV, 3 do
  local id, dedup = ARGV[i], ARGV[i + 1]
  local key = P .. 'run:' .. id
  local existing = nil
  if redis.call('EXISTS', key) == 1 then
    existing = key
  elseif dedup ~= '' then
    local other = redis.call('HGET', P .. 'dedup', dedup)
    if other then
      local okey = P .. 'run:' .. other
      local f = redis.call('HMGET', okey, 'state', 'dedup_key')
      local state = jstr(f[1])
      -- the key's run is still active (and still that key's: a purged id may be reused)
      if state and ACTIVE[state] and jstr(f[2]) == dedup then existing = okey end
    end
  end
  if existing then
    out[#out + 1] = record(existing)
  else
    write(key, ARGV[i + 2])
    if dedup ~= '' then redis.call('HSET', P .. 'dedup', dedup, id) end
    reindex(id, nil, view(key))
    out[#out + 1] = ''
  end
end
redis.call('PUBLISH', P .. 'events', 'queue')
return out
"""

# ARGV: P, worker JSON, start JSON, now, lease expiry, token base, limit, all ("1"/"0"), queues...
# Returns record, token, id, record, token, id, ...
_CLAIM = r"""
local worker, start, now, expires, base = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local limit = tonumber(ARGV[7])
local all = ARGV[8] == '1'
local queues = all and redis.call('SMEMBERS', P .. 'queues') or {unpack(ARGV, 9)}
local cands = {}
for _, q in ipairs(queues) do
  local ready, delayed = P .. 'ready:' .. q, P .. 'delayed:' .. q
  -- runs whose execute_after passed join the ready queue at their priority/FIFO place
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now)) do
    local score = redis.call('HGET', P .. 'run:' .. id, '_score')
    if score then redis.call('ZADD', ready, score, id) end
    redis.call('ZREM', delayed, id)
  end
  local got = redis.call('ZRANGE', ready, 0, limit - 1, 'WITHSCORES')
  for j = 1, #got, 2 do cands[#cands + 1] = {got[j], tonumber(got[j + 1]), ready} end
  if all and #got == 0 and redis.call('EXISTS', delayed) == 0 then
    redis.call('SREM', P .. 'queues', q)  -- enqueue adds it back with its next run
  end
end
if #queues > 1 then
  table.sort(cands, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
end
local out = {}
for j = 1, math.min(limit, #cands) do
  local id = cands[j][1]
  local key = P .. 'run:' .. id
  local old = view(key)
  if old and old.state == 'queued' then
    local new = {}
    for k, v in pairs(old) do new[k] = v end
    new.state = 'running'
    reindex(id, old, new)
    local token = base .. j
    if redis.call('HGET', key, 'start') == 'null' then redis.call('HSET', key, 'start', start) end
    redis.call('HSET', key, 'state', '"running"', 'worker', worker, '_token', token)
    redis.call('ZADD', P .. 'leases', expires, id)
    out[#out + 1] = record(key)
    out[#out + 1] = token
    out[#out + 1] = id
  else  -- a stale entry (the record was deleted or changed behind our back): drop it
    redis.call('ZREM', cands[j][3], id)
  end
end
return out
"""

# ARGV: P, lease expiry, then per beat: id, token, progress JSON or "", note JSON.
# Returns alive (0/1), cancel requested (0/1) per beat.
_HEARTBEAT = r"""
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
"""

# ARGV: P, then per item: id, token, packed fields. Returns 1/0 (written) per item.
_FINISH = r"""
local out = {}
local requeued = false
for i = 2, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = P .. 'run:' .. id
  local f = redis.call('HMGET', key, '_token', 'state', 'cancel_requested')
  if f[1] == token and f[2] == '"running"' then
    local old = view(key)
    write(key, ARGV[i + 2])  -- also drops _token: the lease is released
    local new = view(key)
    local cancel = f[3] == 'true' and not DONE[new.state]
    redis.call('HSET', key, 'cancel_requested', cancel and 'true' or 'false')
    redis.call('ZREM', P .. 'leases', id)
    reindex(id, old, new)
    if new.state == 'queued' then
      requeued = true
    elseif DONE[new.state] then
      release_dedup(key, id)
    end
    redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if requeued then redis.call('PUBLISH', P .. 'events', 'queue') end
return out
"""

# ARGV: P, now, now as JSON, batch size. Returns the number of expired leases looked at,
# then the records of the runs requeued.
_RECLAIM = r"""
local ended = ARGV[3]
local ids = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. ARGV[2],
                       'LIMIT', 0, tonumber(ARGV[4]))
local out = {#ids}
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'leases', id)
  local key = P .. 'run:' .. id
  local f = redis.call('HMGET', key, 'state', 'retry_attempt', 'start', 'worker', 'attempts')
  if f[1] == '"running"' then
    local attempt = '{"attempt":' .. f[2] .. ',"state":"interrupted","start":' .. f[3]
      .. ',"end":' .. ended .. ',"worker":' .. f[4]
      .. ',"error":{"type":"LeaseExpired","message":"worker lost its lease"}}'
    -- attempts is always compact JSON from orjson or from this splice
    local attempts = '[' .. attempt .. ']'
    if f[5] ~= '[]' then attempts = string.sub(f[5], 1, -2) .. ',' .. attempt .. ']' end
    local old = view(key)
    redis.call('HSET', key, 'state', '"queued"', 'worker', 'null', 'attempts', attempts)
    redis.call('HDEL', key, '_token')
    reindex(id, old, view(key))
    redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
    out[#out + 1] = record(key)
  end
end
if #out > 1 then redis.call('PUBLISH', P .. 'events', 'queue') end
return out
"""

# ARGV: P, then one run as in _ENQUEUE. Replaces the record unconditionally.
_SAVE = r"""
local id, dedup = ARGV[2], ARGV[3]
local key = P .. 'run:' .. id
local old = view(key)
write(key, ARGV[4])
redis.call('ZREM', P .. 'leases', id)
local new = view(key)
if dedup ~= '' and ACTIVE[new.state] then redis.call('HSET', P .. 'dedup', dedup, id) end
reindex(id, old, new)
redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
if new.state == 'queued' then redis.call('PUBLISH', P .. 'events', 'queue') end
return 1
"""

# ARGV: P, id, now as JSON, now, error JSON. Returns the updated record or false.
_CANCEL = r"""
local id = ARGV[2]
local key = P .. 'run:' .. id
local state = jstr(redis.call('HGET', key, 'state'))
if not state then return false end
if state == 'init' or state == 'queued' then
  local old = view(key)
  redis.call('HSET', key, 'state', '"aborted"', 'end', ARGV[3], '_end', ARGV[4],
             'error', ARGV[5])
  reindex(id, old, view(key))
  release_dedup(key, id)
elseif state == 'running' then
  redis.call('HSET', key, 'cancel_requested', 'true')
  redis.call('PUBLISH', P .. 'events', 'cancel')  -- workers beat now, not at their next beat
end
redis.call('PUBLISH', P .. 'events:run:' .. id, 'run:' .. id)
return record(key)
"""

# ARGV: P, ids... Returns the record of each id, or false.
_LOAD = r"""
local out = {}
for i = 2, #ARGV do out[#out + 1] = record(P .. 'run:' .. ARGV[i]) end
return out
"""

# ARGV: P, index key (without prefix), lex max, count. Returns id, record pairs, newest first.
_PAGE = r"""
local ids = redis.call('ZREVRANGEBYLEX', P .. ARGV[2], ARGV[3], '-', 'LIMIT', 0, ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = record(P .. 'run:' .. id)
end
return out
"""

# ARGV: P, rank span, all ("1"/"0"), queue. Returns queued counts for ranks 0, 1, 2.
_QUEUE_LENGTH = r"""
local span = tonumber(ARGV[2])
local queues = ARGV[3] == '1' and redis.call('SMEMBERS', P .. 'queues') or {ARGV[4]}
local counts = {0, 0, 0}
for _, q in ipairs(queues) do
  for r = 0, 2 do
    counts[r + 1] = counts[r + 1] + redis.call('ZCOUNT', P .. 'ready:' .. q,
      string.format('%.17g', r * span), '(' .. string.format('%.17g', (r + 1) * span))
  end
  -- delayed runs are scored by time, so their rank comes from their ready score
  for _, id in ipairs(redis.call('ZRANGE', P .. 'delayed:' .. q, 0, -1)) do
    local score = tonumber(redis.call('HGET', P .. 'run:' .. id, '_score'))
    if score then
      local r = math.min(2, math.floor(score / span))
      counts[r + 1] = counts[r + 1] + 1
    end
  end
end
return counts
"""

# ARGV: P, before, batch size. Returns how many runs were deleted.
_PURGE = r"""
local ids = redis.call('ZRANGEBYSCORE', P .. 'ended', '-inf', '(' .. ARGV[2],
                       'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = P .. 'run:' .. id
  reindex(id, view(key), nil)
  release_dedup(key, id)
  redis.call('ZREM', P .. 'ended', id)
  redis.call('UNLINK', key)
end
return #ids
"""

# ARGV: P, name, holder, limit, expiry, now. Returns 1 if the holder has a slot.
_ACQUIRE_SLOT = r"""
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
"""

# ARGV: P, name, holder, expiry, now. Returns 1 if the holder has the lock.
_ACQUIRE_LOCK = r"""
local key = P .. 'lock:' .. ARGV[2]
local f = redis.call('HMGET', key, 'holder', 'expires')
if not f[1] or f[1] == ARGV[3] or tonumber(f[2]) < tonumber(ARGV[5]) then
  redis.call('HSET', key, 'holder', ARGV[3], 'expires', ARGV[4])
  return 1
end
return 0
"""

# ARGV: P, name, holder.
_RELEASE_LOCK = r"""
local key = P .. 'lock:' .. ARGV[2]
if redis.call('HGET', key, 'holder') == ARGV[3] then redis.call('DEL', key) end
return 0
"""

_SCRIPTS = {
    "enqueue": _ENQUEUE,
    "claim": _CLAIM,
    "heartbeat": _HEARTBEAT,
    "finish": _FINISH,
    "reclaim": _RECLAIM,
    "save": _SAVE,
    "cancel": _CANCEL,
    "load": _LOAD,
    "page": _PAGE,
    "queue_length": _QUEUE_LENGTH,
    "purge": _PURGE,
    "acquire_slot": _ACQUIRE_SLOT,
    "acquire_lock": _ACQUIRE_LOCK,
    "release_lock": _RELEASE_LOCK,
}


# -- encoding -------------------------------------------------------------------------------------
def _num(value: float) -> str:
    """A float as Redis reads it back exactly (repr round-trips)."""
    return repr(float(value))


def _json_time(seconds: float) -> bytes:
    """A time as the JSON a TaskRun datetime field holds."""
    return orjson.dumps(dt(seconds), option=orjson.OPT_UTC_Z)


_FIELD_NAMES: dict[str, bytes] = {name: name.encode() for name in TaskRun.model_fields}


def _encode(run: TaskRun) -> tuple[str, str, bytes]:
    """ARGV items for one run: id, dedup key or "", and its fields packed for the scripts'
    write(): name, JSON value, name, ... joined by byte 31."""
    parts: list[bytes] = []
    for name, value in run.model_dump(mode="json").items():
        parts.append(_FIELD_NAMES[name])
        parts.append(orjson.dumps(value))
    # same order as MemoryStore: priority, then execute_after or queued time (then id)
    at = ts(run.execute_after) or ts(run.queued) or 0.0
    score = run.priority.rank * RANK_SPAN + min(max(at, 0.0), RANK_SPAN - 1)
    parts += [b"_score", _num(score).encode()]
    if run.execute_after is not None:
        parts += [b"_after", _num(run.execute_after.timestamp()).encode()]
    if run.end is not None:
        parts += [b"_end", _num(run.end.timestamp()).encode()]
    return run.id, run.dedup_key or "", b"\x1f".join(parts)


def _decode(blob: bytes, run_id: str | None = None) -> TaskRun:
    """A run from the JSON record a script assembled."""
    return decode_run(blob, run_id)


def _bytes(value: bytes | str) -> bytes:
    """A reply as bytes (the client does not decode, but redis-py types allow str)."""
    return value if isinstance(value, bytes) else value.encode()


def _split_url(url: str) -> tuple[str, str]:
    """The URL for redis-py (without `prefix=`) and the key prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    kept = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


def _glob_escape(text: str) -> str:
    """`text` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


DEFAULT_MAX_CONNECTIONS = 32
SETTLE_SECONDS = 1.0
CLOSE_SECONDS = 2.0
LISTEN_TICK = 0.5  # how soon the listener notices close(); events arrive at once regardless
POOL_WAIT_SECONDS = 30.0


class RedisStore:
    """The store protocol on one Redis server; see the module docstring for the layout."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.notifier = Notifier()
        redis_url, self.prefix = _split_url(url)
        self._channel = f"{self.prefix}events"
        # A down server must surface as StoreUnavailableError within seconds: a dropped or
        # refused connection is retried 3 times (backoff capped at 0.5 s); a timeout is not
        # retried (a blackholed or stalled server would multiply it). URL options win.
        # The pool is bounded and callers queue for a connection: an unbounded pool lets a
        # fan-out of thousands of child runs open thousands of connections and hit the
        # server's maxclients. `max_connections=` in the URL overrides the bound.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=DEFAULT_MAX_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            retry=Retry(ExponentialBackoff(), 3, supported_errors=(RedisConnectionError,)),
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(_PRELUDE + body) for name, body in _SCRIPTS.items()
        }
        self._listener: asyncio.Task[None] | None = None
        # `run:<id>` events go to a channel per run, subscribed only while someone here
        # waits on that run: every worker receiving every run's event cost more than the run
        self._pubsub: PubSub | None = None
        self._closing = False
        self._subscribing: set[asyncio.Task[None]] = set()
        self.notifier.on_watch = self._watch
        self.notifier.on_unwatch = self._unwatch
        self.notifier.on_settle = self._settle
        self._confirmed: dict[str, asyncio.Event] = {}  # run channel -> subscribe confirmed

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The one place redis connection errors become StoreUnavailableError."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailableError(f"redis store {self._where()} unavailable: {exc}") from exc

    def _where(self) -> str:
        """Where the server is, without credentials."""
        kw = self._redis.connection_pool.connection_kwargs
        if "path" in kw:
            return f"unix:{kw['path']}"
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    async def _run(self, script: str, args: Sequence[str | bytes | int | float]) -> Any:
        """Call one script with the prefix as ARGV[1]."""
        with self._unavailable():
            return await self._scripts[script](args=[self.prefix, *args])

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _run_channel(self, topic: str) -> str | None:
        return f"{self.prefix}events:{topic}" if topic.startswith("run:") else None

    def _watch(self, topic: str) -> None:
        channel = self._run_channel(topic)
        if channel is not None:
            self._confirmed[channel] = asyncio.Event()
            if self._pubsub is not None:
                self._spawn(self._pubsub.subscribe(channel))

    def _unwatch(self, topic: str) -> None:
        channel = self._run_channel(topic)
        if channel is not None:
            self._confirmed.pop(channel, None)
            if self._pubsub is not None:
                self._spawn(self._pubsub.unsubscribe(channel))

    async def _settle(self) -> None:
        """Wait (briefly) until the server confirmed every run subscription made so far, so
        a state read after this cannot miss the run's next event."""
        pending = [e.wait() for e in self._confirmed.values() if not e.is_set()]
        if pending:
            with suppress(TimeoutError):  # the poll fallback covers a slow confirmation
                await asyncio.wait_for(asyncio.gather(*pending), SETTLE_SECONDS)

    def _spawn(self, coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:  # the listener notices a dead connection and resubscribes
                log.debug("redis (un)subscribe failed", exc_info=True)

        task = asyncio.ensure_future(guarded())
        self._subscribing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._subscribing.discard)

    def _wake_all(self) -> None:
        """Wake every local watcher: messages may have been lost while reconnecting."""
        for topic in {"queue", *self.notifier.topics}:
            self.notifier.publish(topic)

    async def _on_events_reconnect(self, connection: Connection) -> None:
        self._wake_all()

    async def _listen(self) -> None:
        """Republish `<prefix>events` on the local notifier; reconnect with backoff, forever."""
        delay = LISTENER_BACKOFF[0]
        while not self._closing:
            pubsub: PubSub = self._redis.pubsub()
            try:
                watched = [c for t in self.notifier.topics if (c := self._run_channel(t))]
                await pubsub.subscribe(self._channel, *watched)
                self._pubsub = pubsub
                if pubsub.connection is not None:  # redis-py's own reconnects land here
                    pubsub.connection.register_connect_callback(self._on_events_reconnect)
                if delay > LISTENER_BACKOFF[0]:
                    log.info("redis event listener reconnected to %s", self._where())
                    self._wake_all()
                delay = LISTENER_BACKOFF[0]
                # Read with a timeout rather than `listen()`: a task cancelled inside redis-py's
                # listen() can hang for good, so close() stops this loop by flag instead.
                while not self._closing:
                    message = await pubsub.get_message(timeout=LISTEN_TICK)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        if message["data"]:
                            self.notifier.publish(message["data"].decode())
                    elif kind == "subscribe":
                        confirmed = self._confirmed.get(_bytes(message["channel"]).decode())
                        if confirmed is not None:
                            confirmed.set()
            except (RedisConnectionError, RedisTimeoutError, OSError):
                log.warning(
                    "redis event listener lost %s; retrying in %.1fs", self._where(), delay,
                    exc_info=True,
                )  # fmt: skip
            except Exception:
                log.exception("redis event listener failed; retrying in %.1fs", delay)
            finally:
                self._pubsub = None
                if pubsub.connection is not None:  # it goes back to the pool: unhook it
                    pubsub.connection.deregister_connect_callback(self._on_events_reconnect)
                with suppress(Exception):
                    await pubsub.aclose()
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTENER_BACKOFF[1])

    async def connect(self) -> None:
        """Check the server answers and start the event listener (once)."""
        await self.ping()
        if self._listener is None or self._listener.done():
            self._closing = False
            self._listener = asyncio.create_task(
                self._listen(), name=f"taskloom-redis-events:{self.prefix}"
            )

    async def close(self) -> None:
        """Stop the listener and close the connections."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._closing = True
            with suppress(Exception):  # an empty event wakes our listener to see the flag
                await self._redis.publish(self._channel, "")
            _, late = await asyncio.wait({listener}, timeout=LISTEN_TICK + CLOSE_SECONDS)
            for task in late:  # stuck in a reconnect: do not wait on it any longer
                task.cancel()
        await self._redis.aclose(close_connection_pool=True)

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the server answers."""
        with self._unavailable():
            await self._redis.ping()

    async def drop(self) -> None:
        """Delete every key under this store's prefix (tests' teardown)."""
        with self._unavailable():
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(
                match=_glob_escape(self.prefix) + "*", count=1000
            ):
                batch.append(key)
                if len(batch) >= 1000:
                    await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                await self._redis.unlink(*batch)

    # -- queue ------------------------------------------------------------------------------------
    async def enqueue(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        """One script for the batch: insert, or return the run with that id / active dedup key."""
        args: list[str | bytes] = []
        for run in runs:
            args += _encode(run)
        replies = await self._run("enqueue", args) if runs else []
        self.notifier.publish("queue")
        return [
            run if not reply else decode_or_stand_in(reply)
            for run, reply in zip(runs, replies, strict=True)
        ]

    async def claim(
        self,
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
        now: float,
    ) -> list[Lease]:
        """One script: promote due delayed runs, pop the best `limit`, lease them."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        expires = now + lease_seconds
        reply = await self._run(
            "claim",
            [
                orjson.dumps(worker), _json_time(now), _num(now), _num(expires),
                secrets.token_hex(8) + "-", limit, "1" if queues is None else "0", *(queues or ()),
            ],
        )  # fmt: skip
        rows = (
            (reply[i + 2].decode(), reply[i + 1].decode(), reply[i])
            for i in range(0, len(reply), 3)
        )
        leases, unreadable = claimed(rows, expires, now)
        if unreadable:
            await self.finish(unreadable)
        return leases

    async def heartbeat(
        self, beats: Sequence[Beat], lease_seconds: float, now: float
    ) -> list[BeatReply]:
        """One script for the batch, fenced by token; extends the run's slots too."""
        if not beats:
            return []
        expires = now + lease_seconds
        args: list[str | bytes] = [_num(expires)]
        for beat in beats:
            progress = b"" if beat.progress is None else orjson.dumps(beat.progress)
            args += [
                beat.lease.run.id,
                beat.lease.token,
                progress,
                orjson.dumps(beat.progress_note),
            ]
        reply = await self._run("heartbeat", args)
        out = []
        for i, beat in enumerate(beats):
            alive = bool(reply[2 * i])
            if alive:
                beat.lease.expires = expires
            out.append(BeatReply(alive, bool(reply[2 * i + 1])))
        return out

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        """One script for the batch: write each record only while its lease is held."""
        if not items:
            return []
        args: list[str | bytes] = []
        for lease, new in items:
            args += [new.id, lease.token, _encode(new)[2]]
        reply = await self._run("finish", args)
        written = [bool(r) for r in reply]
        requeued = False
        for ok, (_lease, new) in zip(written, items, strict=True):
            if ok:
                self.notifier.publish_run(new.id)
                requeued = requeued or new.state is TaskState.queued
        if requeued:
            self.notifier.publish("queue")
        return written

    async def reclaim(self, now: float) -> list[TaskRun]:
        """Requeue expired leases in batches; each run is checked and edited atomically."""
        out: list[TaskRun] = []
        while True:
            reply = await self._run("reclaim", [_num(now), _json_time(now), RECLAIM_BATCH])
            # an unreadable record stays queued: the claim that takes it fails it
            runs = (decode_or_stand_in(blob) for blob in reply[1:])
            out += [run for run in runs if run.state is TaskState.queued]
            if reply[0] < RECLAIM_BATCH:
                break
        for run in out:
            self.notifier.publish_run(run.id)
        if out:
            self.notifier.publish("queue")
        return out

    # -- records ----------------------------------------------------------------------------------
    async def save(self, run: TaskRun) -> None:
        """Replace the record unconditionally (dropping any lease)."""
        await self._run("save", _encode(run))
        self.notifier.publish_run(run.id)
        if run.state is TaskState.queued:
            self.notifier.publish("queue")

    async def get(self, run_id: str) -> TaskRun | None:
        """One run, or None."""
        [blob] = await self._run("load", [run_id])
        return None if blob is None else _decode(blob, run_id)

    async def query(self, q: RunQuery) -> list[TaskRun]:
        """Newest first from the most selective index, filtered with `matches`."""
        if q.parent_id is not None:
            index = f"idx:parent_id:{q.parent_id}"
        elif q.root_run_id is not None:
            index = f"idx:root_run_id:{q.root_run_id}"
        elif q.task is not None:
            index = f"idx:task:{q.task}"
        elif q.state is not None:
            index = f"idx:state:{q.state.value}"
        else:
            index = "runs"
        bound = "+" if q.cursor is None else "(" + q.cursor
        chunk = min(max(q.limit, 100), 1000)
        out: list[TaskRun] = []
        while len(out) < q.limit:
            reply = await self._run("page", [index, bound, chunk])
            for i in range(0, len(reply), 2):
                if reply[i + 1] is not None:
                    run = decode_or_stand_in(reply[i + 1], reply[i].decode())
                    if matches(run, q):
                        out.append(run)
                        if len(out) == q.limit:
                            break
            if len(reply) < 2 * chunk:
                break
            bound = "(" + reply[-2].decode()
        if q.parent_id is None and q.root_run_id is not None:
            root = await self.get(q.root_run_id)
            if root is not None and root.root_run_id == root.id and matches(root, q):
                out = sorted([*out, root], key=lambda run: run.id, reverse=True)[: q.limit]
        return out

    async def queue_length(self, queue: str | None) -> dict[TaskPriority, int]:
        """Queued runs (due or delayed) by priority."""
        counts = await self._run(
            "queue_length", [_num(RANK_SPAN), "1" if queue is None else "0", queue or ""]
        )
        by_rank = {p.rank: p for p in TaskPriority}
        return {by_rank[rank]: int(n) for rank, n in enumerate(counts)}

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        """Abort a queued/init run, or flag a running one; None if unknown."""
        error = {"type": "CancelledRunError", "message": "cancelled before it ran"}
        blob = await self._run("cancel", [run_id, _json_time(now), _num(now), orjson.dumps(error)])
        if blob is None:
            return None
        self.notifier.publish_run(run_id)
        return _decode(blob, run_id)

    async def purge(self, before: float) -> int:
        """Delete finished runs that ended before `before`, in batches."""
        total = 0
        while True:
            n = int(await self._run("purge", [_num(before), RECLAIM_BATCH]))
            total += n
            if n < RECLAIM_BATCH:
                return total

    # -- coordination -----------------------------------------------------------------------------
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl: float, now: float
    ) -> bool:
        """Take one of `limit` slots; expired holders are dropped first."""
        args: list[str | int] = [name, holder, limit, _num(now + ttl), _num(now)]
        return bool(await self._run("acquire_slot", args))

    async def release_slot(self, name: str, holder: str) -> None:
        """Give the slot back."""
        with self._unavailable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._key("slot", name), holder)
                pipe.srem(self._key("holds", holder), name)
                await pipe.execute()

    async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew the lock unless another holder's has not expired."""
        return bool(await self._run("acquire_lock", [name, holder, _num(now + ttl), _num(now)]))

    async def release_lock(self, name: str, holder: str) -> None:
        """Release the lock if `holder` has it."""
        await self._run("release_lock", [name, holder])

    async def kv_get(self, key: str, now: float) -> bytes | None:
        """A value that has not expired at `now`."""
        with self._unavailable():
            value, expires = await self._redis.hmget(self._key("kv", key), ["v", "x"])
        if value is None or (expires and float(expires) < now):
            return None
        return _bytes(value)

    async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Store a value with its expiry (compared with `now` on read)."""
        expires = "" if ttl is None else _num(now + ttl)
        with self._unavailable():
            await self._redis.hset(self._key("kv", key), mapping={"v": value, "x": expires})

    async def kv_delete(self, key: str) -> None:
        """Forget a value."""
        with self._unavailable():
            await self._redis.delete(self._key("kv", key))

    async def worker_beat(self, worker: str, info: dict[str, Any], ttl: float, now: float) -> None:
        """Record that a worker is alive until now + ttl."""
        beat = orjson.dumps({"seen": now, "expires": now + ttl, "info": info})
        with self._unavailable():
            await self._redis.hset(self._key("workers"), worker, beat)

    async def workers(self, now: float) -> list[WorkerInfo]:
        """Workers whose last beat has not expired, by name."""
        with self._unavailable():
            beats = await self._redis.hgetall(self._key("workers"))
        out = []
        for worker, blob in sorted(beats.items()):
            beat = orjson.loads(blob)
            if beat["expires"] >= now:
                out.append(WorkerInfo(_bytes(worker).decode(), beat["seen"], beat["info"]))
        return out
