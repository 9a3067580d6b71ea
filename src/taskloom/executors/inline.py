"""Runs async tasks in the worker's own event loop; a timeout cancels the coroutine."""

from __future__ import annotations

from typing import Any

from ..run import TaskRun
from ..task import Task
from .base import with_timeout


class InlineExecutor:
    """The default for async tasks: no hop, no copy."""

    name = "inline"

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        """Await the task's function here."""
        return await with_timeout(task.invoke(run, kwargs), timeout, task.name)
