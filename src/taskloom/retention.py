"""Retention: finished runs older than their task's retention period are deleted.

`TaskManager(retention=timedelta(days=7))` is the default; `@task(retention=...)` overrides
it per task, and a retention of `timedelta(0)` (or `None` on the manager) keeps runs forever.
Workers sweep in the background: one worker of the fleet at a time (a store lock spaces the
sweeps `SWEEP_INTERVAL` apart), in batches of `PURGE_BATCH` runs with a pause between
batches, so a large backlog drains over several sweeps instead of loading the store at once.
A purged run takes its result, attempts, finished child runs, dedup key and run log with it;
queued and running runs are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING

from .errors import InvalidParamsError
from .run import TaskState

if TYPE_CHECKING:
    from .manager import TaskManager

log = logging.getLogger("taskloom.retention")

DEFAULT_RETENTION = timedelta(days=7)
SWEEP_INTERVAL = 60.0  # seconds between background sweeps, fleet-wide
PURGE_BATCH = 100  # runs (not counting their children) per store call: ~2 ms of store lock each
# up to 100,000 runs a sweep (1,667 runs/s of steady throughput); the rest waits for the next
BATCHES_PER_SWEEP = 1000
BATCH_PAUSE = 0.01  # seconds between batches: other clients get the store in between
LOCK_NAME = "retention-sweep"

Retention = timedelta | float | None

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def retention_seconds(value: Retention) -> float | None:
    """A retention in seconds; None means keep forever (None or zero)."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"a retention cannot be negative, got {value!r}")
    return seconds or None


def parse_age(text: str) -> timedelta:
    """`7d`, `12h`, `30m`, `90s` or `2w` as a timedelta; raises InvalidParamsError."""
    match = _AGE.match(text)
    if match is None:
        raise InvalidParamsError(
            "purge", [{"loc": ("older_than",), "msg": f"expected e.g. 7d, 12h, 30m; got {text!r}"}]
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])


def finished_state(state: TaskState | str | None) -> TaskState | None:
    """A state filter for purging: only finished states qualify (InvalidParamsError)."""
    if state is None:
        return None
    try:
        value = TaskState(state)
    except ValueError:
        value = None
    if value is None or not value.is_done:
        done = ", ".join(s.value for s in TaskState if s.is_done)
        raise InvalidParamsError(
            "purge", [{"loc": ("state",), "msg": f"must be one of {done}, got {state!r}"}]
        )
    return value


async def purge(
    manager: TaskManager,
    before: float,
    *,
    task: str | None = None,
    skip_tasks: tuple[str, ...] = (),
    state: TaskState | None = None,
    max_batches: int | None = None,
) -> int:
    """Delete matching finished runs that ended before `before`, batch by batch."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        n = await manager.store.purge(
            before, task=task, skip_tasks=skip_tasks, state=state, limit=PURGE_BATCH
        )
        total += n
        batches += 1
        if n == 0:
            break
        await asyncio.sleep(BATCH_PAUSE)
    return total


async def purge_expired(manager: TaskManager, now: float, max_batches: int | None = None) -> int:
    """One sweep: each task's runs past its own retention, the rest past the manager's."""
    overrides = {
        name: retention_seconds(t.retention)
        for name, t in manager.tasks.items()
        if t.retention is not None
    }
    total = 0
    for name, keep in overrides.items():
        if keep is not None:
            total += await purge(manager, now - keep, task=name, max_batches=max_batches)
    keep_default = retention_seconds(manager.retention)
    if keep_default is not None:
        total += await purge(
            manager, now - keep_default, skip_tasks=tuple(overrides), max_batches=max_batches
        )
    return total


class RetentionSweeper:
    """A worker's background sweeps: at most one per `interval` across the fleet."""

    def __init__(self, manager: TaskManager, holder: str, interval: float = SWEEP_INTERVAL):
        self.manager = manager
        self.holder = holder
        self.interval = interval
        self.purged = 0

    async def sweep_once(self) -> int:
        """Sweep if no worker did within `interval` (the lock is left to expire)."""
        now = self.manager.clock()
        if not await self.manager.store.acquire_lock(LOCK_NAME, self.holder, self.interval, now):
            return 0
        n = await purge_expired(self.manager, now, BATCHES_PER_SWEEP)
        if n:
            log.info("retention: purged %d finished runs", n)
        self.purged += n
        return n

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every `interval` until `stopping` is set; a failed sweep is retried later."""
        while not stopping.is_set():
            try:
                await self.sweep_once()
            except Exception:
                log.exception("retention sweep failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
