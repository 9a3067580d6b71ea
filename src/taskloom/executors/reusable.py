"""Warm processes kept for one task (`@task(reusable=True)` or a `ReusePolicy`).

A `ProcessExecutor` of the task's own: `replicas` spawned interpreters that import the task
once and serve run after run, so module-level state (a loaded model, a connection pool)
survives between runs. After `idle_ttl` seconds without a run the processes stop; the next
run starts them again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .process import ProcessExecutor

if TYPE_CHECKING:
    from ..run import TaskRun
    from ..task import Task
    from ..template import ReusePolicy


class ReusableExecutor(ProcessExecutor):
    """The warm processes of one reusable task (the manager makes one per such task)."""

    name = "process"

    def __init__(self, policy: ReusePolicy, **options: Any) -> None:
        super().__init__(size=policy.replicas, **options)
        self.idle_seconds = policy.idle_seconds
        self._busy = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_stop: asyncio.Task[None] | None = None
        self.idled = asyncio.Event()  # set when the processes stopped for lack of work

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, *rest: Any
    ) -> Any:
        """Run one attempt in one of the task's warm processes (started again if they idled out)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._busy += 1
        self.idled.clear()
        if self._idle_stop is not None:  # idled out: let that finish, then start afresh
            await self._idle_stop
            self._idle_stop = None
        try:
            return await super().execute(task, run, kwargs, timeout, *rest)
        finally:
            self._busy -= 1
            if self._busy == 0 and self.idle_seconds is not None:
                loop = asyncio.get_running_loop()
                self._idle_timer = loop.call_later(self.idle_seconds, self._idle_out)

    def _idle_out(self) -> None:
        self._idle_timer = None
        if self._busy == 0 and self._idle_stop is None:
            # not one of the pool's reapers: stop() waits for those, and would wait for itself
            self._idle_stop = asyncio.ensure_future(self._stop_idle())

    async def _stop_idle(self) -> None:
        await super().stop()
        self.idled.set()

    async def stop(self) -> None:
        """Stop the processes (and any pending idle timer)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._idle_stop is not None:
            await self._idle_stop
            self._idle_stop = None
        await super().stop()
