"""A small app for CLI tests: `--app tests.apps.cli_app:make` (store from TASKLOOM_STORE)."""

from __future__ import annotations

import os

from taskloom import TaskManager, TaskRun, task


@task
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


@task
async def fails(why: str = "boom") -> None:
    """Always fails."""
    raise ValueError(why)


@task
async def aborts(ctx: TaskRun) -> None:
    """Aborts itself."""
    ctx.abort("stop here")


def make() -> TaskManager:
    """Build the manager on the store named by TASKLOOM_STORE."""
    return TaskManager(os.environ["TASKLOOM_STORE"], tasks=[add, fails, aborts])
