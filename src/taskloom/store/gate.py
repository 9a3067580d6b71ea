"""The start gate of a claim: which candidates may start now under the start-rate limits.

Used by the stores that claim in Python (memory, SQLite inside its write transaction); the
Redis script and the PostgreSQL function implement the same rule in their own language.
The rule: a run may start if, for every limit that applies to it (its task's, its queue's),
fewer than `count` runs started in the window `(now - per, now]`; its start is then logged.
Otherwise it waits until `free_at(...)`, the k-th run held back on a key taking the k-th slot
to free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..ratelimit import RateLimit, free_at, key_for_queue, key_for_task

# A window loader: (key, since) -> start times after `since`, oldest first.
WindowLoader = Callable[[str, float], list[float]]


class StartGate:
    """Admit or hold back candidates in claim order; `windows` holds what to write back."""

    def __init__(
        self,
        now: float,
        task_limits: Mapping[str, RateLimit] | None,
        queue_limits: Mapping[str, RateLimit],
        load: WindowLoader,
    ) -> None:
        self.now = now
        self.task_limits = task_limits or {}
        self.queue_limits = queue_limits
        self._load = load
        self.windows: dict[str, list[float]] = {}  # key -> starts in window (touched keys)
        self._held: dict[str, int] = {}  # key -> runs held back on it so far
        self.retry_at: float | None = None

    @property
    def active(self) -> bool:
        """False when no limit is set: the claim may skip the gate."""
        return bool(self.task_limits or self.queue_limits)

    def _limits(self, task: str, queue: str) -> list[tuple[str, RateLimit]]:
        out = []
        if (limit := self.task_limits.get(task)) is not None:
            out.append((key_for_task(task), limit))
        if (limit := self.queue_limits.get(queue)) is not None:
            out.append((key_for_queue(queue), limit))
        return out

    def _window(self, key: str, limit: RateLimit) -> list[float]:
        since = self.now - limit.seconds
        starts = self.windows.get(key)
        if starts is None:
            starts = self.windows[key] = self._load(key, since)
        else:
            starts[:] = [s for s in starts if s > since]
        return starts

    def check(self, task: str, queue: str) -> float | None:
        """None if the run may start now (its start is logged); else when it may start."""
        limits = self._limits(task, queue)
        wait: float | None = None
        for key, limit in limits:
            starts = self._window(key, limit)
            if len(starts) >= limit.count:
                k = self._held.get(key, 0)
                self._held[key] = k + 1
                at = free_at(starts, limit.count, limit.seconds, k)
                wait = at if wait is None else max(wait, at)
        if wait is not None:
            self.retry_at = wait if self.retry_at is None else min(self.retry_at, wait)
            return wait
        for key, _limit in limits:
            self.windows[key].append(self.now)
        return None
