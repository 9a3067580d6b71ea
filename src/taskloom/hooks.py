"""RunHooks: the one extension seam above the store (metrics, tracing, logging, plug-ins)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import TaskFailedError
from .run import TaskRun


class RunHooks:
    """Async no-op hooks that the manager and consumer call; override what you need."""

    async def before_queue(self, run: TaskRun) -> None:
        """A run is about to be written to the queue; it may still be changed (trace context)."""

    async def on_queued(self, run: TaskRun) -> None:
        """A run was put on the queue."""

    async def before_run(self, run: TaskRun) -> None:
        """A run's attempt is about to start."""

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        """A run's attempt ended (its new state is on `run`)."""

    async def on_error(self, run: TaskRun, exc: BaseException) -> None:
        """A run's attempt raised."""


class HookSet(RunHooks):
    """Several hooks called in order; what the manager holds."""

    def __init__(self, hooks: Sequence[RunHooks] = ()) -> None:
        self.hooks = list(hooks)

    def add(self, hook: RunHooks) -> None:
        """Append a hook."""
        self.hooks.append(hook)

    def remove(self, hook: RunHooks) -> None:
        """Drop a hook added before (no error if it is gone already)."""
        if hook in self.hooks:
            self.hooks.remove(hook)

    async def before_queue(self, run: TaskRun) -> None:
        for h in self.hooks:
            await h.before_queue(run)

    async def on_queued(self, run: TaskRun) -> None:
        for h in self.hooks:
            await h.on_queued(run)

    async def before_run(self, run: TaskRun) -> None:
        for h in self.hooks:
            await h.before_run(run)

    async def after_run(self, run: TaskRun, error: TaskFailedError | None) -> None:
        for h in self.hooks:
            await h.after_run(run, error)

    async def on_error(self, run: TaskRun, exc: BaseException) -> None:
        for h in self.hooks:
            await h.on_error(run, exc)
