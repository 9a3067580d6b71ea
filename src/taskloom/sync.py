"""Blocking facade over a TaskManager: its own event loop on a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .manager import TaskManager
    from .run import TaskPriority, TaskRun

T = TypeVar("T")


class SyncManager:
    """`manager.sync.queue(...)` and friends for code that is not async.

    The manager's store is connected from this facade's loop; do not use the same manager
    from another event loop as well.
    """

    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="taskloom-sync", daemon=True
        )
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def queue(self, task: str, **params: Any) -> TaskRun:
        """Queue a run (see `TaskManager.queue`)."""
        return self._call(self.manager.queue(task, **params))

    def execute(self, task: str, **params: Any) -> TaskRun:
        """Run now and return the finished run."""
        return self._call(self.manager.execute(task, **params))

    def wait(self, run_id: str, timeout: float | None = None) -> TaskRun:
        """Wait for a run to finish."""
        return self._call(self.manager.wait(run_id, timeout=timeout))

    def queue_and_wait(self, task: str, *, timeout: float | None = None, **params: Any) -> TaskRun:
        """Queue and wait."""
        return self._call(self.manager.queue_and_wait(task, timeout=timeout, **params))

    def get_run(self, run_id: str) -> TaskRun:
        """One run."""
        return self._call(self.manager.get_run(run_id))

    def cancel(self, run_id: str) -> TaskRun:
        """Cancel a run."""
        return self._call(self.manager.cancel(run_id))

    def retry(self, run_id: str) -> TaskRun:
        """Retry a finished run."""
        return self._call(self.manager.retry(run_id))

    def runs(self, **filters: Any) -> list[TaskRun]:
        """List runs."""
        return self._call(self.manager.runs(**filters))

    def queue_length(self, queue: str | None = None) -> dict[TaskPriority, int]:
        """Queued runs by priority."""
        return self._call(self.manager.queue_length(queue))

    def close(self) -> None:
        """Close the manager and stop the loop thread."""
        self._call(self.manager.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
