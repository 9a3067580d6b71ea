"""The Redis store: every state change is one Lua script, so it is atomic on the server.

URL: ``redis://``, ``rediss://`` or ``unix://`` as redis-py reads it, plus ``prefix=`` (default
``taskloom:``), stripped before redis-py sees the URL, so several apps share one server. Every
time is the ``now`` float passed in (never Redis TIME), so a fake clock drives this store too.

Keys (``P`` is the prefix)::

  P run:<id>                 hash: the run record, one field per TaskRun field holding that
                             field's JSON (``"state" -> '"queued"'``; not ``id``: the key names
                             it), plus control fields starting with ``_``: ``_score``
                             (ready-queue score; live runs only), ``_after`` (execute_after,
                             Unix s), ``_end`` (end, Unix s), ``_token`` (lease)
  P ready:<queue>            zset of due queued runs, score = rank * 1e11 + (execute_after or
                             queued): ZRANGE gives priority, then FIFO, then id
  P delayed:<queue>          zset of queued runs with an execute_after, score = execute_after;
                             claim moves the due ones to ready:<queue>
  P queues                   set of queue names that have (or had) queued runs
  P leases                   zset run id -> lease expiry, for reclaim
  P dedup                    hash dedup key -> id of the run that took it
  P idx:<field>:<value>      zset (all scores 0) of run ids, newest first by ZREVRANGEBYLEX, per
                             task / state / queue / parent_id / root_run_id (a root run is not
                             in its own root index: queries add it); every run is in one
                             idx:queue:<q>, so those hold every run
  P qnames                   set of the queues that have an idx:queue:<q>
  P tag:<tag>                zset (scores 0) of the ids of the runs with that tag
  P counts                   hash task US queue US state US priority -> runs (US: byte 31),
                             kept by every script that changes a run
  P runs                     (older layout) every run id; moved to idx:queue:<q> on connect
  P ended                    zset finished run id -> end, for purge: only runs whose id is not
                             time-ordered up to their end (ids chosen by hand); purge finds
                             the others in idx:state:<finished state>, in id order
  P slot:<name>              zset holder -> expiry;  P holds:<holder>  set of slot names held
  P lock:<name>              hash holder, expires
  P kv:<key>                 hash v (value), x (expiry or "")
  P workers                  hash worker -> JSON {seen, expires, info}
  P events                   pub/sub channel: "cancel" for every process
  P events:queue             pub/sub channel: "queue" (work may be due), subscribed only while a
                             process here consumes
  P events:run:<id>          pub/sub channel per run, subscribed only while a process waits on it

Why one hash field per record field: the scripts edit records (state, worker, start, progress,
an appended attempt) and cjson would mangle user JSON on a decode/encode round trip (empty
arrays become objects, floats keep 14 digits, big integers lose precision). Scripts only ever
overwrite a field with JSON made in Python, or splice strings; the record is the fields
joined into one object. Fields holding their default are left out (see `records.py`).
Keys are derived inside the scripts from the prefix; on Redis Cluster the prefix is a hash
tag, so all of an app's keys share one slot (see `redis_cluster.py`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..errors import StoreUnavailableError, missing_extra
from ..ratelimit import RateLimit, limits_json
from ..run import TaskPriority, TaskRun, TaskState
from .base import (
    Beat,
    BeatReply,
    Claimed,
    Lease,
    Notifier,
    RunCount,
    RunQuery,
    WorkerInfo,
    dt,
    matches,
    queued_by_priority,
    ts,
)  # fmt: skip
from .records import (
    claimed,
    decode_or_stand_in,
    decode_run,
    dumps_field,
    plain_fields,
    pydantic_exclude,
)
from .redis_control import RedisControl
from .redis_lane import LaneLostError, ScriptLane, lane_usable, open_lane

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
# The scripts live in `lua/<name>.lua` beside this module (package data). Each one is sent
# with `lua/prelude.lua` in front; ARGV[1] is always the key prefix.
SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "heartbeat",
    "finish",
    "reclaim",
    "save",
    "save_many",
    "cancel",
    "load",
    "page",
    "counts",
    "migrate",
    "queue_stats",
    "purge",
    "acquire_slot",
    "acquire_lock",
    "release_lock",
)


@functools.cache
def lua_scripts() -> dict[str, str]:
    """Every script's full source (prelude + body) by name, read once from the package."""
    folder = resources.files("taskloom.store").joinpath("lua")

    def read(name: str) -> str:
        text: str = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return text

    prelude = read("prelude")
    return {name: prelude + read(name) for name in SCRIPT_NAMES}


# -- encoding -------------------------------------------------------------------------------------
def _num(value: float) -> str:
    """A float as Redis reads it back exactly (repr round-trips)."""
    return repr(float(value))


def _json_time(seconds: float) -> bytes:
    """A time as the JSON a TaskRun datetime field holds."""
    return orjson.dumps(dt(seconds), option=orjson.OPT_UTC_Z)


_FIELD_NAMES: dict[str, bytes] = {name: name.encode() for name in TaskRun.model_fields}
_ID = frozenset({"id"})  # the key holds it


def _encode(run: TaskRun) -> tuple[str, str, bytes]:
    """ARGV items for one run: id, dedup key or "", and its fields packed for the scripts'
    write(): name, JSON value, name, ... joined by byte 31. The id is the key's, not a field
    (record() puts it back), and a finished run has no ready-queue score: both save bytes."""
    fields = plain_fields(run, _ID)
    # zip/map/chain keep the per-field loop in C: this runs once per queued or finished run
    names = map(_FIELD_NAMES.__getitem__, fields)
    try:
        values = list(map(dumps_field, fields.values()))
    except TypeError:  # a value orjson cannot write: pydantic's JSON form of every field
        dumped = run.model_dump(mode="json", exclude=pydantic_exclude(run, _ID))
        names = map(_FIELD_NAMES.__getitem__, dumped)
        values = list(map(orjson.dumps, dumped.values()))
    parts = list(chain.from_iterable(zip(names, values, strict=True)))
    # same order as MemoryStore: priority, then execute_after or queued time (then id)
    if not run.state.is_done:  # a run that may be queued again keeps its place in line
        at = ts(run.execute_after) or ts(run.queued) or 0.0
        score = run.priority.rank * RANK_SPAN + min(max(at, 0.0), RANK_SPAN - 1)
        parts += [b"_score", _num(score).encode()]
    if run.execute_after is not None:
        parts += [b"_after", _num(run.execute_after.timestamp()).encode()]
    if run.end is not None:
        parts += [b"_end", _num(run.end.timestamp()).encode()]
    return run.id, run.dedup_key or "", b"\x1f".join(parts)


_ID_TICKS = 16**12  # the 12-hex-digit time prefix of a made run id


def _id_bound(before: float) -> str:
    """A 12-character id prefix above the made id of every run that ended before `before`:
    `new_run_id()`'s first 12 hex digits count 25.6 µs ticks, and a walkable() run's id time
    is no later than its end (prelude.lua). One tick more than the arithmetic needs: a float
    rounded the other way must not hide a run. Past the 12 digits' range (the year
    2198, or an infinite cutoff) every made id is below "g"."""
    if not before > 0:  # nothing ended before (NaN included): no id is below "0"
        return "0"
    ticks = before / 2.56e-5
    if ticks >= _ID_TICKS - 2:
        return "g"
    return f"{int(ticks) + 2:012x}"


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


class RedisStore(RedisControl):
    """The store protocol on one Redis server; see the module docstring for the layout."""

    parallel_writes = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.notifier = Notifier()
        redis_url, prefix = _split_url(url)
        self.prefix = self._key_prefix(prefix)
        self._channel = f"{self.prefix}events"
        self._redis: Any = self._client(redis_url)
        # keys sent with every script call: none on one server (scripts derive their keys
        # from the prefix); a cluster routes each call by them
        self._route: list[str] = self._routing_keys()
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(body) for name, body in lua_scripts().items()
        }
        self._lane: ScriptLane | None = self._script_lane()
        self._listener: asyncio.Task[None] | None = None
        # `run:<id>` events go to a channel per run, subscribed only while someone here
        # waits on that run: every worker receiving every run's event cost more than the run
        self._pubsub: PubSub | None = None
        self._events: Any = None  # the subscribed lane connection, where lanes are used
        self._closing = False
        self._subscribing: set[asyncio.Task[None]] = set()
        self.notifier.on_watch = self._watch
        self.notifier.on_unwatch = self._unwatch
        self.notifier.on_settle = self._settle
        self._confirmed: dict[str, asyncio.Event] = {}  # run channel -> subscribe confirmed
        self._pushed: dict[str, bytes] = {}  # run topic -> record its finish message carried
        self._channel_bytes = self._channel.encode()
        self._topic_at = len(self._channel_bytes) + 1  # "<prefix>events:" before a topic
        self._origin_token = secrets.token_hex(6)
        self._origin_of = (0, b"")  # (pid, origin) made for that pid

    @property
    def _origin(self) -> bytes:
        """What this process's enqueue scripts publish on `events:queue`: its own listener
        skips those, as the enqueue woke this process's consumers already (else every run
        queued here cost a consumer here a second, empty claim). The pid keeps a forked
        child from taking its parent's messages for its own."""
        pid = os.getpid()
        if self._origin_of[0] != pid:  # made once per process: read on every call and message
            self._origin_of = (pid, f"{pid}.{self._origin_token}".encode())
        return self._origin_of[1]

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The one place redis connection errors become StoreUnavailableError."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailableError(f"redis store {self._where()} unavailable: {exc}") from exc

    def _key_prefix(self, prefix: str) -> str:
        """The prefix every key starts with (a cluster store makes it a hash tag)."""
        return prefix

    def _routing_keys(self) -> list[str]:
        return []

    def _script_lane(self) -> ScriptLane | None:
        """The pipelined connection for script calls (see redis_lane.py)."""
        return ScriptLane(self._redis) if lane_usable(self._redis) else None

    def _client(self, redis_url: str) -> Any:
        """The redis-py client for `redis_url`."""
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
        return aioredis.Redis(connection_pool=pool)

    def _where(self) -> str:
        """Where the server is, without credentials."""
        kw = self._redis.connection_pool.connection_kwargs
        if "path" in kw:
            return f"unix:{kw['path']}"
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    async def _run(self, script: str, args: Sequence[str | bytes | int | float]) -> Any:
        """Call one script with the prefix as ARGV[1]: on the lane where there is one."""
        with self._unavailable():
            lane = self._lane
            if lane is not None:
                return await lane.call(self._scripts[script], self._route, [self.prefix, *args])
            return await self._scripts[script](keys=self._route, args=[self.prefix, *args])

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _run_channel(self, topic: str) -> str | None:
        # `queue` has its own channel, subscribed only where a consumer watches it: a producer
        # process would otherwise receive (and parse) one message per run anybody queues
        if topic == "queue" or topic.startswith("run:"):
            return f"{self.prefix}events:{topic}"
        return None

    def _received(self, channel: bytes, data: bytes) -> None:
        """Wake the watchers of a message's topic; keep a finished record a waiter will read."""
        if channel == self._channel_bytes:  # the shared channel names the topic in the data
            if data:
                self.notifier.publish(data.decode())
            return
        name = channel.decode()
        topic = name[self._topic_at :]
        if data[:1] == b"{" and name in self._confirmed:  # finish sent the record itself
            self._pushed[topic] = data
        elif data == self._origin:  # our own enqueue's: its caller woke us already
            return
        self.notifier.publish(topic)

    def _watch(self, topic: str) -> None:
        channel = self._run_channel(topic)
        if channel is not None:
            self._confirmed[channel] = asyncio.Event()
            if self._events is not None:
                self._events.push("SUBSCRIBE", channel)
            elif self._pubsub is not None:
                self._spawn(self._pubsub.subscribe(channel))

    def _unwatch(self, topic: str) -> None:
        channel = self._run_channel(topic)
        self._pushed.pop(topic, None)
        if channel is not None:
            self._confirmed.pop(channel, None)
            if self._events is not None:
                self._events.push("UNSUBSCRIBE", channel)
            elif self._pubsub is not None:
                self._spawn(self._pubsub.unsubscribe(channel))

    async def _settle(self) -> None:
        """Wait (briefly) until the server confirmed every run subscription made so far, so
        a state read after this cannot miss the run's next event."""
        pending = [e for e in self._confirmed.values() if not e.is_set()]
        if pending:
            # one timer over the waits, not wait_for + gather's tasks: every queue_and_wait
            # settles while its run is written
            with suppress(TimeoutError):  # the poll fallback covers a slow confirmation
                async with asyncio.timeout(SETTLE_SECONDS):
                    for confirmed in pending:
                        await confirmed.wait()

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

    async def _new_pubsub(self) -> PubSub:
        pubsub: PubSub = self._redis.pubsub()
        return pubsub

    def _pushed_message(self, reply: list[Any]) -> None:
        """One message read on the subscribed lane connection (called as it is read)."""
        kind, channel = reply[0], reply[1]
        if kind == b"message":
            self._received(channel, reply[2])
        elif kind == b"subscribe":
            confirmed = self._confirmed.get(channel.decode())
            if confirmed is not None:
                confirmed.set()

    async def _listen_on_lane(self) -> None:
        """`_listen` on a connection of our own: each message is handled as it is read, with
        no task, parser or wait of redis-py's in between (it cost ~80 µs a message)."""
        delay, kw = LISTENER_BACKOFF[0], self._redis.connection_pool.connection_kwargs
        while not self._closing:
            try:
                events = await open_lane(kw, self._pushed_message)
                if self._closing:
                    events.close()
                    return
                watched = [c for t in self.notifier.topics if (c := self._run_channel(t))]
                events.push("SUBSCRIBE", self._channel, *watched)
                self._events = events
                if delay > LISTENER_BACKOFF[0]:
                    log.info("redis event listener reconnected to %s", self._where())
                    self._wake_all()
                delay = LISTENER_BACKOFF[0]
                await events.closed
                if not self._closing:
                    log.warning("redis event listener lost %s", self._where())
            except (RedisConnectionError, LaneLostError, OSError, TimeoutError):
                log.warning(
                    "redis event listener cannot reach %s; retrying in %.1fs", self._where(),
                    delay, exc_info=True,
                )  # fmt: skip
            finally:
                self._events = None
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTENER_BACKOFF[1])

    async def _listen(self) -> None:
        """Republish `<prefix>events` on the local notifier; reconnect with backoff, forever."""
        if self._lane is not None:
            return await self._listen_on_lane()
        delay = LISTENER_BACKOFF[0]
        while not self._closing:
            pubsub: PubSub = await self._new_pubsub()
            try:
                watched = [c for t in self.notifier.topics if (c := self._run_channel(t))]
                await pubsub.subscribe(self._channel, *watched)
                self._pubsub = pubsub
                # watches made while that subscribe was on its way found no pubsub yet
                late = {c for t in self.notifier.topics if (c := self._run_channel(t))}
                late.difference_update(watched)
                if late:
                    await pubsub.subscribe(*late)
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
                        self._received(_bytes(message["channel"]), message["data"])
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
        await self._migrate()
        if self._listener is None or self._listener.done():
            self._closing = False
            self._listener = asyncio.create_task(
                self._listen(), name=f"taskloom-redis-events:{self.prefix}"
            )

    async def _migrate(self) -> None:
        """Bring keys written by an older taskloom to this layout, in short script calls."""
        while await self._run("migrate", [RECLAIM_BATCH]):
            pass

    async def close(self) -> None:
        """Stop the listener and close the connections."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._closing = True
            if self._events is not None:
                self._events.close()
            else:
                with suppress(Exception):  # an empty event wakes our listener to see the flag
                    await self._redis.publish(self._channel, "")
            _, late = await asyncio.wait({listener}, timeout=LISTEN_TICK + CLOSE_SECONDS)
            for task in late:  # stuck in a reconnect: do not wait on it any longer
                task.cancel()
        await self._close_client()

    async def _close_client(self) -> None:
        if self._lane is not None:
            with suppress(Exception):
                await self._lane.close()
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
        args: list[str | bytes] = [self._origin]
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
        *,
        rate_limits: Mapping[str, RateLimit] | None = None,
    ) -> list[Lease]:
        """One script: promote due delayed runs, pop the best `limit` of the queues not
        paused, hold back those over a start-rate limit, lease the rest."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        expires = now + lease_seconds
        reply = await self._run(
            "claim",
            [
                orjson.dumps(worker), _json_time(now), _num(now), _num(expires),
                secrets.token_hex(8) + "-", limit, "1" if queues is None else "0",
                _num(RANK_SPAN), limits_json(rate_limits), *(queues or ()),
            ],
        )  # fmt: skip
        retry_at = reply.pop()
        rows = (
            (reply[i + 2].decode(), reply[i + 1].decode(), reply[i])
            for i in range(0, len(reply), 3)
        )
        leases, unreadable = claimed(rows, expires, now)
        if unreadable:
            await self.finish(unreadable)
        out = Claimed(leases)
        out.retry_at = float(retry_at) if retry_at else None
        out.taken = len(leases) + len(unreadable)
        return out

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
    async def save_leased(self, run: TaskRun, lease_seconds: float, now: float) -> Lease:
        """Replace the record unconditionally under a fresh lease."""
        token, expires = secrets.token_hex(8), now + lease_seconds
        await self._run("save", (*_encode(run), token, expires))
        self.notifier.publish_run(run.id)
        return Lease(run.record(), token, expires)

    async def save(self, run: TaskRun) -> None:
        """Replace the record unconditionally (dropping any lease)."""
        await self._run("save", _encode(run))
        self.notifier.publish_run(run.id)
        if run.state is TaskState.queued:
            self.notifier.publish("queue")

    async def save_many(self, runs: Sequence[TaskRun]) -> None:
        """Every record replaced by one script call."""
        await self._run("save_many", [part for run in runs for part in _encode(run)])
        for run in runs:
            self.notifier.publish_run(run.id)
        if any(run.state is TaskState.queued for run in runs):
            self.notifier.publish("queue")

    async def get(self, run_id: str) -> TaskRun | None:
        """One run, or None."""
        pushed = self._pushed.pop(f"run:{run_id}", None)
        if pushed is not None:
            # the record a finish published while this process waits on the run: a finished
            # record only changes again by an explicit save, which publishes again
            run = _decode(pushed, run_id)
            if run.is_done:
                return run
        [blob] = await self._run("load", [run_id])
        return None if blob is None else _decode(blob, run_id)

    async def query(self, q: RunQuery) -> list[TaskRun]:
        """Newest first from the most selective index, filtered with `matches`."""
        if q.parent_id is not None:
            index = f"idx:parent_id:{q.parent_id}"
        elif q.root_run_id is not None:
            index = f"idx:root_run_id:{q.root_run_id}"
        elif q.tags:
            index = f"tag:{q.tags[0]}"
        elif q.task is not None:
            index = f"idx:task:{q.task}"
        elif q.state is not None:
            index = f"idx:state:{q.state.value}"
        elif q.queue is not None:
            index = f"idx:queue:{q.queue}"
        else:
            index = "*"  # every queue's index, merged by page.lua
        bound = "+" if q.cursor is None else "(" + q.cursor
        chunk = min(max(q.limit, 100), 1000)
        out: list[TaskRun] = []
        while len(out) < q.limit:
            reply = await self._run("page", [bound, chunk, index])
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
        return queued_by_priority(await self.counts(), queue)

    async def counts(self) -> list[RunCount]:
        """The counters the scripts keep, one hash read."""
        flat = await self._run("counts", [])
        out = []
        for i in range(0, len(flat), 2):
            n = int(flat[i + 1])
            if n > 0:
                task, queue, state, priority = flat[i].decode().rsplit("\x1f", 3)
                out.append(RunCount(task, queue, TaskState(state), TaskPriority(priority), n))
        return out

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        """Abort a queued/init run, or flag a running one; None if unknown."""
        error = {"type": "CancelledRunError", "message": "cancelled before it ran"}
        blob = await self._run("cancel", [run_id, _json_time(now), _num(now), orjson.dumps(error)])
        if blob is None:
            return None
        self.notifier.publish_run(run_id)
        return _decode(blob, run_id)

    async def purge(
        self,
        before: float,
        *,
        task: str | None = None,
        skip_tasks: Sequence[str] = (),
        state: TaskState | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete finished runs that ended before `before`; each script call looks at a
        bounded slice of one source (zset `ended`, then each finished state's index up to the
        ids made before `before`), so none blocks Redis long."""
        if state is not None and not state.is_done:
            return 0  # only finished runs are ever purged
        total = 0
        filters = [state.value if state else "", task or "", *skip_tasks]
        bound = _id_bound(before)
        states = [state.value] if state else [s.value for s in TaskState if s.is_done]
        for source in ["", *states]:
            offset = 0
            while True:
                cap = RECLAIM_BATCH if limit is None else min(RECLAIM_BATCH, limit - total)
                if cap <= 0:
                    return total
                deleted, looked, kept = await self._run(
                    "purge", [_num(before), cap, offset, RECLAIM_BATCH, source, bound, *filters]
                )
                total += int(deleted)
                offset += int(kept)  # what did not match stays in front of the rest
                if int(looked) < RECLAIM_BATCH and int(deleted) < cap:
                    break
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

    async def worker_leave(self, worker: str) -> None:
        """Forget a worker that stopped cleanly."""
        with self._unavailable():
            await self._redis.hdel(self._key("workers"), worker)

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
