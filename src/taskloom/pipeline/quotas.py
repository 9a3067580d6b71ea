"""Quotas: a `ResourceManager` denies a launch that would exceed its cpu, memory or gpu budget,
or its number of launches within a sliding time window.

A job holds its resources from launch until the pipeline reaps it. Accounting lives in this
object (one pipeline loop per quota at a time); after a restart the pipeline charges the runs
it finds still in flight again, but the launch window starts empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError
from ..policies import Resources

_EPSILON = 1e-9


@dataclass(frozen=True)
class Usage:
    """What the jobs holding a quota use now."""

    cpu: float
    memory: int
    gpu: float
    jobs: int


def _amounts(res: Resources | None) -> tuple[float, int, float]:
    if res is None:
        return 0.0, 0, 0.0
    return res.cpu_cores or 0.0, res.memory_bytes or 0, float(res.gpu or 0)


class ResourceManager:
    """A budget that launches must fit: `ResourceManager(Resources(cpu="4", memory="8Gi"),
    launches_per_window=10, window_seconds=60)`.

    Unset quantities are unlimited. `tasks` limits the quota to the named pipeline tasks
    (all of them by default). Times are the manager's clock (Unix seconds).
    """

    def __init__(
        self,
        quota: Resources | None = None,
        launches_per_window: int | None = None,
        window_seconds: float = 60.0,
        *,
        tasks: Iterable[str] | None = None,
        name: str = "quota",
    ) -> None:
        if launches_per_window is not None and launches_per_window < 1:
            raise ConfigError(f"launches_per_window must be >= 1, got {launches_per_window}")
        if window_seconds <= 0:
            raise ConfigError(f"window_seconds must be > 0, got {window_seconds}")
        self.quota = quota or Resources()
        self.launches_per_window = launches_per_window
        self.window_seconds = float(window_seconds)
        self.tasks = None if tasks is None else frozenset(tasks)
        self.name = name
        self._held: dict[str, tuple[float, int, float]] = {}
        self._launches: deque[float] = deque()

    def governs(self, task: str) -> bool:
        """True if launches of `task` count against this quota."""
        return self.tasks is None or task in self.tasks

    @property
    def usage(self) -> Usage:
        """The total held by jobs now."""
        cpu = sum(h[0] for h in self._held.values())
        memory = sum(h[1] for h in self._held.values())
        gpu = sum(h[2] for h in self._held.values())
        return Usage(cpu, memory, gpu, len(self._held))

    def never_fits(self, need: Resources | None) -> str | None:
        """Why a job needing `need` could never launch under this quota, or None."""
        return self._over(need, (0.0, 0, 0.0))

    def _over(self, need: Resources | None, used: tuple[float, int, float]) -> str | None:
        cpu, memory, gpu = _amounts(need)
        limits = (self.quota.cpu_cores, self.quota.memory_bytes, self.quota.gpu)
        for label, amount, held, limit in zip(
            ("cpu", "memory", "gpu"), (cpu, memory, gpu), used, limits, strict=True
        ):
            if limit is not None and amount and held + amount > limit + _EPSILON:
                return f"{self.name}: {label} {held:g} + {amount:g} would exceed {limit:g}"
        return None

    def _prune(self, now: float) -> None:
        while self._launches and self._launches[0] <= now - self.window_seconds:
            self._launches.popleft()

    def denial(self, need: Resources | None, now: float) -> str | None:
        """Why a launch needing `need` at `now` is denied, or None if it may go ahead."""
        if self.launches_per_window is not None:
            self._prune(now)
            if len(self._launches) >= self.launches_per_window:
                return (
                    f"{self.name}: {len(self._launches)} launches in the last "
                    f"{self.window_seconds:g}s (limit {self.launches_per_window})"
                )
        usage = self.usage
        return self._over(need, (usage.cpu, usage.memory, usage.gpu))

    def acquire(self, holder: str, need: Resources | None, now: float) -> None:
        """Charge a launch (call only after `denial` returned None)."""
        self._held[holder] = _amounts(need)
        self._launches.append(now)

    def restore(self, holder: str, need: Resources | None) -> None:
        """Charge a job found in flight after a restart (no launch is counted)."""
        self._held[holder] = _amounts(need)

    def release(self, holder: str) -> None:
        """Give back what `holder` held (no error if it held nothing)."""
        self._held.pop(holder, None)

    def next_opening(self, now: float) -> float | None:
        """When the launch window next frees a launch, if it is full now."""
        if self.launches_per_window is None:
            return None
        self._prune(now)
        if len(self._launches) < self.launches_per_window:
            return None
        return self._launches[0] + self.window_seconds

    def __repr__(self) -> str:
        return f"<ResourceManager {self.name!r} {self.quota} window={self.launches_per_window}>"
