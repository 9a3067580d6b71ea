"""Runs async tasks in the worker's own event loop; a timeout cancels the coroutine."""

from __future__ import annotations

from typing import Any

from ..policies import bound_secrets
from ..run import TaskRun
from ..task import Task
from .base import RunEnv, contained, with_timeout


async def _call(task: Task, run: TaskRun, kwargs: dict[str, Any]) -> Any:
    with bound_secrets(task.secrets, run):
        return await task.invoke(run, kwargs)


class InlineExecutor:
    """The default for async tasks: no hop, no copy."""

    name = "inline"

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def execute(
        self, task: Task, run: TaskRun, kwargs: dict[str, Any], timeout: float | None, env: RunEnv
    ) -> Any:
        """Await the task's function here."""
        call = _call(task, run, kwargs) if task.secrets else task.invoke(run, kwargs)
        if timeout is None:  # one coroutine frame fewer per run (inline children)
            return await contained(call, run.id)
        return await with_timeout(contained(call, run.id), timeout, task.name)
