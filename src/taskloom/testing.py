"""Test helpers: a fake clock, a burst consumer that raises on failure, wait-for-idle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .consumer import TaskConsumer
from .errors import TaskFailedError
from .manager import TaskManager
from .run import TaskRun, TaskState
from .task import Task


class FakeClock:
    """A clock that moves only when told: pass it as `TaskManager(clock=...)`."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward and return the new time."""
        self.now += seconds
        return self.now

    def set(self, moment: float) -> None:
        """Jump to a moment (Unix seconds)."""
        self.now = float(moment)


def memory_manager(tasks: Iterable[Task] = (), **options: Any) -> TaskManager:
    """A manager on a fresh in-memory store."""
    return TaskManager("memory://", tasks=tasks, **options)


async def run_burst(
    manager: TaskManager, *, check: bool = True, max_concurrent_tasks: int = 10, **options: Any
) -> list[TaskRun]:
    """Serve until nothing is due or running; with `check`, raise if any run failed.

    Returns the runs that finished (any state) during the burst.
    """
    consumer = TaskConsumer(
        manager, max_concurrent_tasks=max_concurrent_tasks, grace_seconds=5, **options
    )
    before = {r.id for r in await manager.runs(limit=100_000) if r.is_done}
    await consumer.run(burst=True)
    finished = [r for r in await manager.runs(limit=100_000) if r.is_done and r.id not in before]
    if check:
        failed = [r for r in finished if r.state is not TaskState.success]
        if failed:
            first = failed[0]
            raise first.failure or TaskFailedError(f"run {first.id} ended {first.state}")
    return finished
