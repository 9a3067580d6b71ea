"""Queue control: pause and resume queues, cap their start rate, list them with their depth.

Everything here is stored, and the claim of every store reads it, so every worker obeys a
change from its next claim on. `TaskManager.pause()`, `resume()`, `queues()` and
`set_queue_rate_limit()` delegate here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from .ratelimit import RateLimit, parse_rate_limit
from .run import TaskPriority

if TYPE_CHECKING:
    from .manager import TaskManager


class QueueInfo(BaseModel):
    """One queue as `queue ls` and `GET /api/queues` show it."""

    name: str
    paused: bool
    depth: dict[str, int]  # queued runs by priority: high, medium, low
    oldest_queued_age: float | None  # seconds since the oldest queued run was queued
    rate_limit: str | None = None  # the queue's start-rate limit, as "100/m"


def rate_limits(manager: TaskManager) -> dict[str, RateLimit] | None:
    """The start-rate limits of the manager's tasks, by task name (None when there are none)."""
    found = {name: t.rate_limit for name, t in manager.tasks.items() if t.rate_limit is not None}
    return found or None


def _check_name(queue: str) -> str:
    from .errors import ConfigError

    if not isinstance(queue, str) or not queue.strip():
        raise ConfigError(f"a queue name must be a non-empty string, got {queue!r}")
    return queue


async def set_paused(manager: TaskManager, queue: str, paused: bool) -> QueueInfo:
    """Pause or resume `queue`; return it as it is now."""
    store = (await manager.connect()).store
    await store.set_queue_paused(_check_name(queue), paused)
    return await queue_info(manager, queue)


async def set_rate_limit(
    manager: TaskManager, queue: str, rate_limit: RateLimit | str | None
) -> QueueInfo:
    """Cap how many runs of `queue` start per window, across workers (None: no cap)."""
    limit = None if rate_limit is None else parse_rate_limit(rate_limit)
    store = (await manager.connect()).store
    await store.set_queue_rate_limit(_check_name(queue), limit)
    return await queue_info(manager, queue)


async def list_queues(manager: TaskManager) -> list[QueueInfo]:
    """Every known queue (of a registered task, with queued runs, or with stored settings)."""
    store = (await manager.connect()).store
    settings = await store.queue_settings()
    stats = {s.name: s for s in await store.queue_stats()}
    names = {t.queue for t in manager.tasks.values()} | set(settings) | set(stats)
    now = manager.clock()
    out = []
    for name in sorted(names):
        setting, stat = settings.get(name), stats.get(name)
        depth = dict.fromkeys(TaskPriority, 0) if stat is None else stat.depth
        oldest = None if stat is None else stat.oldest_queued
        out.append(
            QueueInfo(
                name=name,
                paused=bool(setting and setting.paused),
                depth={p.value: depth.get(p, 0) for p in TaskPriority},
                oldest_queued_age=None if oldest is None else max(0.0, now - oldest),
                rate_limit=str(setting.rate_limit) if setting and setting.rate_limit else None,
            )
        )
    return out


async def queue_info(manager: TaskManager, queue: str) -> QueueInfo:
    """One queue (a queue nobody knows yet shows empty and running)."""
    for info in await list_queues(manager):
        if info.name == queue:
            return info
    empty = {p.value: 0 for p in TaskPriority}
    return QueueInfo(name=queue, paused=False, depth=empty, oldest_queued_age=None)
