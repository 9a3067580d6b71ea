"""One app's queues spread over several Redis Cluster hash slots:
``redis+cluster://host:port,.../0?prefix=app:&shards=8``.

A plain cluster store keeps every key of an app in one slot (`redis_cluster.py`), so one master
serves all of it. Here the app is cut into `shards` slices, each a full cluster store of its
own, with its own hash tag (``{app.<k>}:`` or ``{app.<k>.<n>}:``): slice k's slot is in the
k-th of `shards` equal parts of the slot range, which spreads the slices evenly over masters
that own equal ranges (a multiple of the number of masters spreads best). A queue lives in
one slice, picked by CRC-32 of its name modulo `shards`: its runs, ready and delayed sets,
pause flag, start-rate limits, dedup keys and counters are there, and every script of a run
still runs on one slot. Several queues then spread their load over the masters.

What is per slice rather than per app (each holds within a slice, which is every run of a
queue): priority and FIFO order (a claim over several slices takes from one slice, then the
next, starting with a different slice each time); dedup keys; a task's start-rate limit (a
task whose runs go to queues in two slices gets its limit in each); purge taking a root's
finished descendants with it (descendants in other slices go when they are old enough
themselves). Reads by run id (`get`, `request_cancel`) ask the slice that queued, claimed or
ran the run in this process, else every slice. A concurrency slot (`max_concurrency`) lives
in the slice its name picks, so its limit holds app-wide; the process that took it extends
it with the run's heartbeats. Locks, key/values, worker beats and schedules live in slice 0;
a run's log entry lives beside the run. `shards` is part of the layout: changing it moves
queues to other slices, where their runs are not, so pick it once per prefix.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import count
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError
from ..ratelimit import RateLimit
from ..run import TaskPriority, TaskRun, TaskState
from .base import (
    Beat,
    BeatReply,
    Claimed,
    Lease,
    Notifier,
    QueueSettings,
    QueueStats,
    RunCount,
    RunQuery,
    WorkerInfo,
    queued_by_priority,
    taken_count,
)  # fmt: skip
from .redis import DEFAULT_PREFIX
from .redis_cluster import RedisClusterStore

try:
    from redis.crc import key_slot
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    from ..errors import missing_extra

    raise missing_extra("redis", "redis") from exc

MAX_SHARDS = 256
SLOTS = 16_384  # a Redis Cluster's hash slots
RUNLOG_PREFIX = "runlog:"  # a run's log entry, which purge deletes beside the run (purge.lua)
KNOWN_RUNS = 100_000  # run id -> slice, for the runs this process touched (reads by id)

T = TypeVar("T")


def shard_of(queue: str, shards: int) -> int:
    """The slice a queue lives in: stable across processes and Python versions."""
    return zlib.crc32(queue.encode()) % shards


def slice_tag(stem: str, k: int, shards: int) -> str:
    """Slice `k`'s hash tag: the first of ``stem.k``, ``stem.k.1``, ... whose slot falls in the
    k-th of `shards` equal parts of the 16,384 slots, so slices spread over masters that own
    equal ranges (as `redis-cli --cluster create` assigns them) instead of where CRC16 drops
    them. The same in every process: the layout depends on it."""
    low, high = k * SLOTS // shards, (k + 1) * SLOTS // shards
    for n in count():
        tag = f"{stem}.{k}" if n == 0 else f"{stem}.{k}.{n}"
        if low <= key_slot(tag.encode()) < high:
            return tag
    raise AssertionError  # unreachable: CRC16 reaches every slot range


def split_shards(url: str) -> tuple[str, str, int]:
    """(URL without `shards=` and `prefix=`, prefix stem, shards) of a sharded cluster URL."""
    parts = urlsplit(url)
    kept, prefix, shards = [], DEFAULT_PREFIX, 1
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "shards":
            if not value.isdigit() or not 1 <= int(value) <= MAX_SHARDS:
                raise ConfigError(f"shards={value!r} in {url!r}: use 1 to {MAX_SHARDS}")
            shards = int(value)
        elif key == "prefix":
            prefix = value
        else:
            kept.append((key, value))
    if shards > 1 and ("{" in prefix or "}" in prefix):
        raise ConfigError(f"prefix {prefix!r}: a sharded store makes its own hash tags")
    stem = prefix.rstrip(":") or DEFAULT_PREFIX.rstrip(":")
    return urlunsplit(parts._replace(query=urlencode(kept))), stem, shards


class _Slice(RedisClusterStore):
    """One slice: a cluster store on a client shared with the other slices."""

    def __init__(self, url: str, first: _Slice | None, notifier: Notifier) -> None:
        self._first = first
        super().__init__(url)
        self.notifier = notifier  # every slice's listener wakes the app's one notifier

    def _client(self, redis_url: str) -> Any:
        first = self._first
        if first is None:
            return super()._client(redis_url)
        # one client (its connections and its gate) for every slice
        self._nodes, self._gate = first._nodes, first._gate
        return first._redis

    async def _close_client(self) -> None:
        return None  # the sharded store closes the shared client once


class RedisShardedStore:
    """The store protocol over `shards` cluster stores, each queue in one of them."""

    parallel_writes = True

    def __init__(self, url: str) -> None:
        self.url = url
        base, stem, self.shards = split_shards(url)
        self.prefix = f"{{{stem}}}:"
        self.notifier = Notifier()
        sep = "&" if "?" in base else "?"
        tags = [slice_tag(stem, k, self.shards) for k in range(self.shards)]
        first = _Slice(f"{base}{sep}prefix={{{tags[0]}}}:", None, self.notifier)
        self._slices: list[_Slice] = [first] + [
            _Slice(f"{base}{sep}prefix={{{tag}}}:", first, self.notifier) for tag in tags[1:]
        ]
        self._home = first
        self._known: OrderedDict[str, int] = OrderedDict()
        self._turn = 0
        self._slots: dict[str, set[str]] = {}  # holder run id -> slot names it took here
        self.notifier.on_watch = self._watch
        self.notifier.on_unwatch = self._unwatch
        self.notifier.on_settle = self._settle

    # -- plumbing -------------------------------------------------------------------------------
    def _slice(self, queue: str) -> _Slice:
        return self._slices[shard_of(queue, self.shards)]

    def _note(self, runs: Iterable[TaskRun]) -> None:
        """Remember where runs live, for reads by id; oldest forgotten first."""
        known = self._known
        for run in runs:
            known[run.id] = shard_of(run.queue, self.shards)
            known.move_to_end(run.id)
        while len(known) > KNOWN_RUNS:
            known.popitem(last=False)

    def _grouped(self, items: Sequence[T], queue_of: Callable[[T], str]) -> dict[int, list[int]]:
        """Positions of `items` by slice."""
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(shard_of(queue_of(item), self.shards), []).append(i)
        return groups

    async def _scatter(
        self,
        items: Sequence[T],
        queue_of: Callable[[T], str],
        call: Callable[[_Slice, list[T]], Awaitable[list[Any]]],
    ) -> list[Any]:
        """`call` once per slice with its items (concurrently); replies in input order."""
        groups = self._grouped(items, queue_of)
        replies = await asyncio.gather(
            *(call(self._slices[k], [items[i] for i in where]) for k, where in groups.items())
        )
        out: list[Any] = [None] * len(items)
        for where, reply in zip(groups.values(), replies, strict=True):
            for i, value in zip(where, reply, strict=True):
                out[i] = value
        return out

    async def _everywhere(self, call: Callable[[_Slice], Awaitable[T]]) -> list[T]:
        return list(await asyncio.gather(*(call(s) for s in self._slices)))

    def _watch(self, topic: str) -> None:
        for s in self._slices:
            s._watch(topic)

    def _unwatch(self, topic: str) -> None:
        for s in self._slices:
            s._unwatch(topic)

    async def _settle(self) -> None:
        await asyncio.gather(*(s._settle() for s in self._slices))

    async def connect(self) -> None:
        """Check the cluster answers, bring each slice's keys up to date, start listeners."""
        for s in self._slices:
            await s.connect()

    async def close(self) -> None:
        """Stop every slice's listener, then close the shared client."""
        await asyncio.gather(*(s.close() for s in self._slices))
        await self._home._redis.aclose()

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the cluster answers."""
        await self._home.ping()

    async def drop(self) -> None:
        """Delete every slice's keys (tests' teardown)."""
        await self._everywhere(lambda s: s.drop())

    # -- queue ------------------------------------------------------------------------------------
    async def enqueue(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        """Each run into its queue's slice, one script call per slice."""
        if not runs:
            self.notifier.publish("queue")
            return []
        self._note(runs)
        return await self._scatter(runs, lambda run: run.queue, lambda s, part: s.enqueue(part))

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
        """Up to `limit` runs from the slices of `queues` (all when None), one slice after
        another, starting with the next slice each call so none starves."""
        if limit <= 0 or (queues is not None and not queues):
            return []
        wanted: dict[int, list[str]] = {}
        for q in queues or ():
            wanted.setdefault(shard_of(q, self.shards), []).append(q)
        order = list(range(self.shards)) if queues is None else sorted(wanted)
        self._turn = (self._turn + 1) % len(order)
        order = order[self._turn :] + order[: self._turn]
        out, taken = Claimed(), 0
        for k in order:
            if taken >= limit:
                break
            got = await self._slices[k].claim(
                worker, None if queues is None else wanted[k], limit - taken, lease_seconds,
                now, rate_limits=rate_limits,
            )  # fmt: skip
            out += got
            taken += taken_count(got)
            retry = getattr(got, "retry_at", None)
            if retry is not None and (out.retry_at is None or retry < out.retry_at):
                out.retry_at = retry
        out.taken = taken
        self._note(lease.run for lease in out)
        return out

    async def heartbeat(
        self, beats: Sequence[Beat], lease_seconds: float, now: float
    ) -> list[BeatReply]:
        """Each beat in its run's slice; then the slots the live ones hold, in their slices
        (a slice's heartbeat extends only slots kept beside the run)."""
        replies: list[BeatReply] = await self._scatter(
            beats, lambda b: b.lease.run.queue, lambda s, p: s.heartbeat(p, lease_seconds, now)
        )
        extend = [
            (name, b.lease.run.id)
            for b, reply in zip(beats, replies, strict=True)
            if reply.alive
            for name in self._slots.get(b.lease.run.id, ())
        ]
        # limit 0: a slot still held is extended, one that expired meanwhile is not retaken
        await asyncio.gather(
            *(self._slice(n).acquire_slot(n, h, 0, lease_seconds, now) for n, h in extend)
        )
        return replies

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        """Each fenced write in its run's slice."""
        return await self._scatter(items, lambda item: item[0].run.queue, lambda s, p: s.finish(p))

    async def save_leased(self, run: TaskRun, lease_seconds: float, now: float) -> Lease:
        """Write a running record in its queue's slice under a fresh lease."""
        self._note([run])
        return await self._slice(run.queue).save_leased(run, lease_seconds, now)

    async def reclaim(self, now: float) -> list[TaskRun]:
        """Every slice's expired leases."""
        return [run for part in await self._everywhere(lambda s: s.reclaim(now)) for run in part]

    # -- records ----------------------------------------------------------------------------------
    async def save(self, run: TaskRun) -> None:
        """Replace a record in its queue's slice."""
        self._note([run])
        await self._slice(run.queue).save(run)

    async def save_many(self, runs: Sequence[TaskRun]) -> None:
        """Every record replaced, one script call per slice."""
        self._note(runs)

        async def save(s: _Slice, part: list[TaskRun]) -> list[None]:
            await s.save_many(part)
            return [None] * len(part)

        await self._scatter(runs, lambda run: run.queue, save)

    async def _by_id(self, run_id: str, call: Callable[[_Slice], Awaitable[T | None]]) -> T | None:
        """`call` on the slice known to hold `run_id`, else on every slice: the first found."""
        k = self._known.get(run_id)
        if k is not None:
            found = await call(self._slices[k])
            if found is not None:
                return found
        for found in await self._everywhere(call):
            if found is not None:
                return found
        return None

    async def get(self, run_id: str) -> TaskRun | None:
        """One run, or None."""
        for s in self._slices:
            if f"run:{run_id}" in s._pushed:  # its finish message carried the record
                return await s.get(run_id)
        return await self._by_id(run_id, lambda s: s.get(run_id))

    async def query(self, q: RunQuery) -> list[TaskRun]:
        """Newest first: one slice for a queue filter, else every slice merged by id."""
        if q.queue is not None:
            return await self._slice(q.queue).query(q)
        parts = await self._everywhere(lambda s: s.query(q))
        merged = sorted((run for part in parts for run in part), key=lambda r: r.id, reverse=True)
        return merged[: q.limit]

    async def queue_length(self, queue: str | None) -> dict[TaskPriority, int]:
        """Queued runs by priority."""
        return queued_by_priority(await self.counts(), queue)

    async def counts(self) -> list[RunCount]:
        """Every slice's counters (each queue's are in one slice)."""
        return [c for part in await self._everywhere(lambda s: s.counts()) for c in part]

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        """Abort or flag the run in whichever slice holds it."""
        return await self._by_id(run_id, lambda s: s.request_cancel(run_id, now))

    async def purge(
        self,
        before: float,
        *,
        task: str | None = None,
        skip_tasks: Sequence[str] = (),
        state: TaskState | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete finished runs that ended before `before`, slice by slice up to `limit`."""
        total = 0
        for s in self._slices:
            left = None if limit is None else limit - total
            if left is not None and left <= 0:
                break
            total += await s.purge(
                before, task=task, skip_tasks=skip_tasks, state=state, limit=left
            )
        return total

    # -- coordination -----------------------------------------------------------------------------
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl: float, now: float
    ) -> bool:
        """Take one of `limit` slots of `name`, in the one slice that name lives in (so the
        limit holds across slices); heartbeats of the holder run extend it from here."""
        if not await self._slice(name).acquire_slot(name, holder, limit, ttl, now):
            return False
        self._slots.setdefault(holder, set()).add(name)
        return True

    async def release_slot(self, name: str, holder: str) -> None:
        """Give the slot back."""
        held = self._slots.get(holder)
        if held is not None:
            held.discard(name)
            if not held:
                del self._slots[holder]
        await self._slice(name).release_slot(name, holder)

    async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew a lock (slice 0)."""
        return await self._home.acquire_lock(name, holder, ttl, now)

    async def release_lock(self, name: str, holder: str) -> None:
        """Release a lock (slice 0)."""
        await self._home.release_lock(name, holder)

    async def _kv_slice(self, key: str) -> _Slice:
        """Slice 0, but a run's log entry lives beside the run, where purge deletes it."""
        if not key.startswith(RUNLOG_PREFIX):
            return self._home
        run_id = key[len(RUNLOG_PREFIX) :]
        if run_id not in self._known:
            run = await self._by_id(run_id, lambda s: s.get(run_id))
            if run is None:
                return self._home
            self._note([run])
        return self._slices[self._known[run_id]]

    async def kv_get(self, key: str, now: float) -> bytes | None:
        """A value that has not expired (slice 0; a run log in its run's slice)."""
        return await (await self._kv_slice(key)).kv_get(key, now)

    async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Store a value (slice 0; a run log in its run's slice)."""
        await (await self._kv_slice(key)).kv_set(key, value, ttl, now)

    async def kv_delete(self, key: str) -> None:
        """Forget a value (slice 0; a run log in its run's slice)."""
        await (await self._kv_slice(key)).kv_delete(key)

    async def worker_beat(self, worker: str, info: dict[str, Any], ttl: float, now: float) -> None:
        """Record a live worker (slice 0)."""
        await self._home.worker_beat(worker, info, ttl, now)

    async def workers(self, now: float) -> list[WorkerInfo]:
        """Live workers (slice 0)."""
        return await self._home.workers(now)

    async def worker_leave(self, worker: str) -> None:
        """Forget a worker (slice 0)."""
        await self._home.worker_leave(worker)

    # -- control ----------------------------------------------------------------------------------
    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause a queue where its claims read it: its slice."""
        await self._slice(queue).set_queue_paused(queue, paused)

    async def set_queue_rate_limit(self, queue: str, rate_limit: RateLimit | None) -> None:
        """Set a queue's start-rate limit in its slice."""
        await self._slice(queue).set_queue_rate_limit(queue, rate_limit)

    async def queue_settings(self) -> dict[str, QueueSettings]:
        """Every slice's queue settings."""
        out: dict[str, QueueSettings] = {}
        for part in await self._everywhere(lambda s: s.queue_settings()):
            out.update(part)
        return out

    async def queue_stats(self) -> list[QueueStats]:
        """Every slice's queues."""
        return [q for part in await self._everywhere(lambda s: s.queue_stats()) for q in part]

    async def put_schedule(self, name: str, data: bytes) -> None:
        """Store a schedule (slice 0)."""
        await self._home.put_schedule(name, data)

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule (slice 0)."""
        return await self._home.delete_schedule(name)

    async def stored_schedules(self) -> dict[str, bytes]:
        """Stored schedules (slice 0)."""
        return await self._home.stored_schedules()
