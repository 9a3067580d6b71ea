"""SQLite side of queue control: settings read by every claim, the gated claim, schedules.

The claim runs inside one `BEGIN IMMEDIATE` transaction, so reading the queue settings, the
start windows and marking runs is atomic against every other process on the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from ..ratelimit import RateLimit
from ..run import TaskPriority
from .base import Notifier, QueueSettings, QueueStats
from .gate import StartGate

T = TypeVar("T")

PAGE = 64  # candidates read per step of a gated claim
SCAN_CAP = 200  # candidates one gated claim looks at before it hands back (retry_at = now)

_SETTINGS = "SELECT name, paused, rate_count, rate_per FROM queues"
_DEFER = """UPDATE runs SET execute_after = ?1, due = ?1,
    data = json_set(data, '$.execute_after', ?2) WHERE id = ?3"""
_WINDOW = "SELECT starts FROM rate_windows WHERE key = ?"
_SAVE_WINDOW = """INSERT INTO rate_windows (key, starts) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET starts = excluded.starts"""
# Depth from the maintained counts; per queue and rank, the `created` time of the run first in
# claim order (one index seek each). An older run held deeper (a retry with a later
# execute_after) is missed: close enough for `queue ls` and the lag gauge, and it keeps this
# from reading every queued run.
_STATS = """SELECT c.queue, c.priority_rank, sum(c.n), (
    SELECT created FROM runs INDEXED BY runs_claim
    WHERE state = 'queued' AND queue = c.queue AND priority_rank = c.priority_rank
    ORDER BY due, id LIMIT 1)
FROM run_counts AS c WHERE c.state = 'queued' AND c.n > 0
GROUP BY c.queue, c.priority_rank"""
_RANKS = {p.rank: p for p in TaskPriority}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def read_settings(conn: sqlite3.Connection) -> dict[str, QueueSettings]:
    """Every queue's stored settings."""
    out = {}
    for name, paused, count, per in conn.execute(_SETTINGS):
        limit = RateLimit(count, timedelta(seconds=per)) if count else None
        out[name] = QueueSettings(bool(paused), limit)
    return out


def paused_filter(paused: Sequence[str]) -> str:
    """The claim's extra condition skipping paused queues (empty when none is paused)."""
    return " AND queue NOT IN (SELECT value FROM json_each(:paused))" if paused else ""


def claim_gated(
    conn: sqlite3.Connection,
    pick_sql: str,
    claim_ids_sql: str,
    params: dict[str, Any],
    limit: int,
    gate: StartGate,
) -> list[Any]:
    """Claim up to `limit` runs past the start gate: read candidates in claim order a page at
    a time, hold back those over a limit (execute_after = when a slot frees), mark the rest
    running. Returns the claim rows; sets `gate.retry_at` to now if it stopped at SCAN_CAP."""
    now = params["now"]
    rows: list[Any] = []
    scanned = 0
    while len(rows) < limit and scanned < SCAN_CAP:
        page = conn.execute(pick_sql, {**params, "limit": PAGE}).fetchall()
        if not page:
            break
        scanned += len(page)
        admitted: list[str] = []
        for run_id, task, queue in page:
            if len(rows) + len(admitted) >= limit:
                break
            wait = gate.check(task, queue)
            if wait is None:
                admitted.append(run_id)
            else:
                conn.execute(_DEFER, (wait, _iso(wait), run_id))
        if admitted:
            ids = orjson.dumps(admitted).decode()
            rows += conn.execute(claim_ids_sql, {**params, "ids": ids}).fetchall()
    if scanned >= SCAN_CAP and len(rows) < limit:
        gate.retry_at = now  # more may be due behind the runs held back: claim again
    for key, starts in gate.windows.items():
        conn.execute(_SAVE_WINDOW, (key, orjson.dumps(starts).decode()))
    return rows


def window_loader(conn: sqlite3.Connection) -> Callable[[str, float], list[float]]:
    """Read a key's start log (inside the claim's transaction)."""

    def load(key: str, since: float) -> list[float]:
        row = conn.execute(_WINDOW, (key,)).fetchone()
        starts: list[float] = [] if row is None else orjson.loads(row[0])
        return [s for s in starts if s > since]

    return load


class SQLiteControl:
    """Operator controls of the SQLite store (mixed into SQLiteStore)."""

    notifier: Notifier

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        raise NotImplementedError

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        await self._write(
            "INSERT INTO queues (name, paused) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            (queue, int(paused)),
        )
        if not paused:
            self.notifier.publish("queue")

    async def set_queue_rate_limit(self, queue: str, rate_limit: RateLimit | None) -> None:
        count = None if rate_limit is None else rate_limit.count
        per = None if rate_limit is None else rate_limit.seconds
        await self._write(
            "INSERT INTO queues (name, rate_count, rate_per) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET rate_count = excluded.rate_count,"
            " rate_per = excluded.rate_per",
            (queue, count, per),
        )
        self.notifier.publish("queue")

    async def queue_settings(self) -> dict[str, QueueSettings]:
        return await self._run(read_settings)

    async def queue_stats(self) -> list[QueueStats]:
        def work(conn: sqlite3.Connection) -> list[tuple[str, int, int, float | None]]:
            return conn.execute(_STATS).fetchall()

        depth: dict[str, dict[TaskPriority, int]] = {}
        oldest: dict[str, float] = {}
        for queue, rank, count, first in await self._run(work):
            depth.setdefault(queue, dict.fromkeys(TaskPriority, 0))[_RANKS[rank]] = count
            if first is not None and (queue not in oldest or first < oldest[queue]):
                oldest[queue] = first
        return [QueueStats(q, depth[q], oldest.get(q)) for q in sorted(depth)]

    async def put_schedule(self, name: str, data: bytes) -> None:
        await self._write(
            "INSERT INTO schedules (name, data) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            (name, data),
        )
        self.notifier.publish("schedules")

    async def delete_schedule(self, name: str) -> bool:
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount

        found = await self._run(work) > 0
        self.notifier.publish("schedules")
        return found

    async def stored_schedules(self) -> dict[str, bytes]:
        def work(conn: sqlite3.Connection) -> dict[str, bytes]:
            return {name: bytes(data) for name, data in conn.execute(
                "SELECT name, data FROM schedules")}  # fmt: skip

        return await self._run(work)


def queue_limits(settings: Mapping[str, QueueSettings]) -> dict[str, RateLimit]:
    """The queues with a start-rate limit."""
    return {q: s.rate_limit for q, s in settings.items() if s.rate_limit is not None}
