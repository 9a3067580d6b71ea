"""PostgreSQL side of queue control: queue settings, queue statistics, stored schedules.

The claim itself (`claim_runs` in schema.sql) reads the settings and applies the start-rate
limits; these are the writes and reads around it, one named query each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from ..ratelimit import RateLimit
from ..run import TaskPriority
from .base import Notifier, QueueSettings, QueueStats

T = TypeVar("T")
_RANKS = {p.rank: p for p in TaskPriority}


class PostgresControl:
    """Operator controls of the PostgreSQL store (mixed into PostgresStore)."""

    notifier: Notifier
    channel: str
    _q: dict[str, str]

    async def _run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        sql = self._q["set_queue_paused"]
        await self._run(lambda conn: conn.execute(sql, queue, paused, self.channel))
        if not paused:
            self.notifier.publish("queue")

    async def set_queue_rate_limit(self, queue: str, rate_limit: RateLimit | None) -> None:
        count = None if rate_limit is None else rate_limit.count
        per = None if rate_limit is None else rate_limit.seconds
        sql = self._q["set_queue_rate_limit"]
        await self._run(lambda conn: conn.execute(sql, queue, count, per, self.channel))
        self.notifier.publish("queue")

    async def queue_settings(self) -> dict[str, QueueSettings]:
        rows = await self._run(lambda conn: conn.fetch(self._q["queue_settings"]))
        out = {}
        for r in rows:
            limit = None
            if r["rate_count"]:
                limit = RateLimit(r["rate_count"], timedelta(seconds=r["rate_per"]))
            out[r["name"]] = QueueSettings(r["paused"], limit)
        return out

    async def queue_stats(self) -> list[QueueStats]:
        rows = await self._run(lambda conn: conn.fetch(self._q["queue_stats"]))
        depth: dict[str, dict[TaskPriority, int]] = {}
        oldest: dict[str, float] = {}
        for r in rows:
            queue = r["queue"]
            depth.setdefault(queue, dict.fromkeys(TaskPriority, 0))[_RANKS[r["priority_rank"]]] = r[
                "n"
            ]
            first = r["oldest"]
            if first is not None and (queue not in oldest or first < oldest[queue]):
                oldest[queue] = first
        return [QueueStats(q, depth[q], oldest.get(q)) for q in sorted(depth)]

    async def put_schedule(self, name: str, data: bytes) -> None:
        sql = self._q["put_schedule"]
        await self._run(lambda conn: conn.execute(sql, name, data, self.channel))
        self.notifier.publish("schedules")

    async def delete_schedule(self, name: str) -> bool:
        sql = self._q["delete_schedule"]
        row = await self._run(lambda conn: conn.fetchrow(sql, name, self.channel))
        self.notifier.publish("schedules")
        return bool(row and row["n"])

    async def stored_schedules(self) -> dict[str, bytes]:
        rows = await self._run(lambda conn: conn.fetch(self._q["stored_schedules"]))
        return {r["name"]: bytes(r["data"]) for r in rows}
