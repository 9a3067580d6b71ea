"""Runs sync tasks in a bounded thread pool.

A thread cannot be killed: on timeout or cancel the run is failed at once and its slot freed,
and the thread is abandoned until the function returns (counted in `abandoned`). Tasks that
must be killable belong in the process executor (`cpu_bound=True`).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..policies import bound_secrets
from ..run import TaskRun
from ..task import Task
from .base import RunEnv, contained_sync, with_timeout


class ThreadExecutor:
    """The default for sync tasks."""

    name = "thread"

    def __init__(self, max_workers: int = 32) -> None:
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.abandoned = 0
        self._running = 0

    async def start(self) -> None:
        """Create the pool."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="taskloom")

    async def stop(self) -> None:
        """Shut the pool down without waiting for abandoned threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _call(self, task: Task, run: TaskRun, kwargs: dict[str, Any]) -> Any:
        with self._lock:
            self._running += 1
        try:
            with bound_secrets(task.secrets, run):
                return contained_sync(lambda: task.invoke_sync(run, kwargs), run.id)
        finally:
            with self._lock:
                self._running -= 1

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, env: RunEnv
    ) -> Any:
        """Run the function on a pool thread, with the run as its current run."""
        await self.start()
        assert self._pool is not None
        ctx = contextvars.copy_context()
        fut = asyncio.get_running_loop().run_in_executor(
            self._pool, ctx.run, self._call, task, run, kwargs
        )
        try:
            return await with_timeout(asyncio.shield(fut), timeout, task.name)
        except (TimeoutError, asyncio.CancelledError):
            if not fut.done():
                self.abandoned += 1
                fut.add_done_callback(self._reap)
            raise

    def _reap(self, fut: asyncio.Future[Any]) -> None:
        self.abandoned -= 1
        if not fut.cancelled():
            fut.exception()  # retrieve, so asyncio does not log "never retrieved"
