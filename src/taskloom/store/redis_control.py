"""Redis side of queue control: queue settings, queue statistics, stored schedules.

Keys (``P`` is the prefix): ``P paused`` (set of paused queues), ``P qlimits`` (hash queue ->
JSON ``[count, per seconds]``), ``P rate:<key>`` (zset of start times of one limited key,
written by the claim script), ``P schedules`` (hash name -> definition). The claim script
reads the first three; these are the writes and reads around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import orjson

from ..ratelimit import RateLimit
from ..run import TaskPriority
from .base import Notifier, QueueSettings, QueueStats

_RANKS = list(TaskPriority)
_RANKS.sort(key=lambda p: p.rank)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_queued(blobs: Sequence[bytes | str]) -> float | None:
    """The earliest of some `queued` field JSONs (a JSON datetime string, or null)."""
    times = []
    for blob in blobs:
        value = orjson.loads(blob) if blob else None
        if isinstance(value, str):
            times.append(datetime.fromisoformat(value).timestamp())
    return min(times, default=None)


class RedisControl:
    """Operator controls of the Redis store (mixed into RedisStore)."""

    notifier: Notifier
    prefix: str
    _channel: str
    _redis: Any

    def _unavailable(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    async def _run(self, script: str, args: Sequence[str | bytes | int | float]) -> Any:
        raise NotImplementedError

    # Each change is one command, then a wake-up: publish cannot share a MULTI on a Redis
    # Cluster, and a lost wake-up only delays the change to the next poll.
    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        with self._unavailable():
            if paused:
                await self._redis.sadd(self.prefix + "paused", queue)
            else:
                await self._redis.srem(self.prefix + "paused", queue)
                await self._redis.publish(self._channel, "queue")

    async def set_queue_rate_limit(self, queue: str, rate_limit: RateLimit | None) -> None:
        with self._unavailable():
            if rate_limit is None:
                await self._redis.hdel(self.prefix + "qlimits", queue)
            else:
                spec = orjson.dumps([rate_limit.count, rate_limit.seconds])
                await self._redis.hset(self.prefix + "qlimits", queue, spec)
            await self._redis.publish(self._channel, "queue")

    async def queue_settings(self) -> dict[str, QueueSettings]:
        with self._unavailable():
            paused = await self._redis.smembers(self.prefix + "paused")
            limits = await self._redis.hgetall(self.prefix + "qlimits")
        out: dict[str, QueueSettings] = {}
        for name in paused:
            out[_text(name)] = QueueSettings(paused=True)
        for name, spec in limits.items():
            count, per = orjson.loads(spec)
            limit = RateLimit(int(count), timedelta(seconds=per))
            queue = _text(name)
            out[queue] = QueueSettings(paused=queue in out, rate_limit=limit)
        return out

    async def queue_stats(self) -> list[QueueStats]:
        from .redis import RANK_SPAN, _num

        reply = await self._run("queue_stats", [_num(RANK_SPAN)])
        out = []
        for i in range(0, len(reply), 8):
            depth = {p: int(n) for p, n in zip(_RANKS, reply[i + 1 : i + 4], strict=True)}
            out.append(QueueStats(_text(reply[i]), depth, _first_queued(reply[i + 4 : i + 8])))
        return sorted(out, key=lambda s: s.name)

    async def put_schedule(self, name: str, data: bytes) -> None:
        with self._unavailable():
            await self._redis.hset(self.prefix + "schedules", name, data)
            await self._redis.publish(self._channel, "schedules")

    async def delete_schedule(self, name: str) -> bool:
        with self._unavailable():
            gone = await self._redis.hdel(self.prefix + "schedules", name)
            await self._redis.publish(self._channel, "schedules")
        return bool(gone)

    async def stored_schedules(self) -> dict[str, bytes]:
        with self._unavailable():
            found = await self._redis.hgetall(self.prefix + "schedules")
        return {_text(k): bytes(v) for k, v in found.items()}
